//! `pglock check`: exit 1, saying why, when a lock is held by a backend idle
//! in transaction too long or awaited too long; exit 0, silently, when not.
//! For cron (which mails any output) and for probes.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use crate::args;
use crate::attribution::Names;
use crate::database::Session;
use crate::duration;
use crate::failure::{Failure, Status};
use crate::listing::{Listing, LockRow};
use crate::output;

pub(crate) async fn run(
    database: &args::Database,
    names: &args::Names,
    idle_limit: Duration,
    wait_limit: Duration,
) -> Result<ExitCode, Failure> {
    let mut names = Names::new(&names.names)?;
    let mut session = Session::connect(database).await?;
    let inspection = session.inspect().await?;
    let listing = Listing::new(&inspection, &mut names);

    let problems = problems(&listing, idle_limit, wait_limit);
    if !problems.is_empty() {
        output::print(&problems.concat())?;
        if let Some(note) = listing.hidden_note(session.user()) {
            output::complain(&note);
        }
        return Ok(ExitCode::FAILURE);
    }
    // Waits are visible to every role; whether a holder is idle in
    // transaction is not. A check that could not look must not pass.
    let hidden_holders = listing
        .rows
        .iter()
        .filter(|row| row.granted && !row.visible)
        .count();
    if hidden_holders > 0 {
        return Err(Failure::new(
            Status::Permission,
            format!(
                "cannot check {hidden_holders} lock(s) held by backends of other roles: their \
                 state is hidden from role {user}; GRANT pg_read_all_stats TO {user}",
                user = session.user()
            ),
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// One line (with its newline) per backend idle in transaction too long
/// while holding locks, then one per wait too long.
fn problems(listing: &Listing, idle_limit: Duration, wait_limit: Duration) -> Vec<String> {
    let mut stuck: BTreeMap<i32, Vec<&LockRow>> = BTreeMap::new();
    for row in listing.rows.iter().filter(|row| row.granted) {
        if let (Some(pid), Some(idle)) = (row.pid, row.idle_in_transaction())
            && idle > idle_limit
        {
            stuck.entry(pid).or_default().push(row);
        }
    }
    let mut lines: Vec<String> = stuck
        .into_iter()
        .map(|(pid, held)| {
            let idle = held[0].idle_in_transaction().unwrap_or_default();
            let locks: Vec<String> = held.iter().map(|row| describe_lock(row)).collect();
            format!(
                "pid {pid}{} has been idle in transaction for {} (limit {}), holding {}\n",
                application(held[0]),
                duration::format(idle),
                duration::format(idle_limit),
                locks.join(", ")
            )
        })
        .collect();
    for row in &listing.rows {
        let (Some(pid), Some(waited)) = (row.pid, row.waited) else {
            continue;
        };
        if row.granted || waited <= wait_limit {
            continue;
        }
        let blockers: Vec<String> = row.blocked_by.iter().map(i32::to_string).collect();
        lines.push(format!(
            "pid {pid}{} has waited {} (limit {}) for {}, blocked by pid {}\n",
            application(row),
            duration::format(waited),
            duration::format(wait_limit),
            describe_lock(row),
            if blockers.is_empty() {
                "?".to_owned()
            } else {
                blockers.join(", ")
            },
        ));
    }
    lines
}

fn application(row: &LockRow) -> String {
    match row.application_name.as_deref() {
        Some(name) if !name.is_empty() => format!(" ({name})"),
        _ => String::new(),
    }
}

/// `exclusive lock 555 of billing:invoice key=7`.
fn describe_lock(row: &LockRow) -> String {
    let mode = row
        .mode
        .map_or_else(|| "?".to_owned(), |mode| mode.to_string());
    match row.attribution.namespace {
        Some(_) => format!("{mode} lock {} of {}", row.id, row.namespace_text()),
        None => format!("{mode} lock {} (namespace unknown)", row.id),
    }
}
