//! The listing as a table that fits the terminal, with what needs a look
//! highlighted: colour on a terminal, a `!` everywhere, and a line under
//! the table for each backend idle in transaction too long.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use comfy_table::{
    Attribute, Cell, Color, ColumnConstraint, ContentArrangement, Table, Width, presets,
};

use crate::args::Marks;
use crate::duration;
use pglock_runtime::SemaphoreRow;

use crate::listing::{Listing, LockRow};

/// How the output may look.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Style {
    /// ANSI colours (stdout is a terminal, `NO_COLOR` is not set).
    pub(crate) color: bool,
    /// Box-drawing borders rather than ASCII ones.
    pub(crate) unicode: bool,
}

/// The table, then a summary line and a line for each backend that needs a
/// look.
pub(crate) fn render(listing: &Listing, marks: Marks, style: Style) -> String {
    let mut out = String::new();
    if listing.rows.is_empty() {
        out.push_str("no advisory locks are held or awaited\n");
        return out;
    }
    let locks: Vec<&LockRow> = listing.locks().collect();
    if !locks.is_empty() {
        render_table(&mut out, &locks, marks, style);
    }
    let held = locks.iter().filter(|row| row.granted).count();
    let _ = write!(
        out,
        "{} advisory lock(s): {held} held, {} awaited",
        locks.len(),
        locks.len() - held
    );
    match listing.semaphores.len() {
        0 => out.push('\n'),
        count => {
            let _ = writeln!(out, "; {count} semaphore(s):");
        }
    }
    for semaphore in &listing.semaphores {
        let _ = writeln!(out, "{}", semaphore_line(semaphore, listing, marks));
    }
    for line in attention(listing, marks) {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// A semaphore as one line: `semaphore <namespace> (permits of <base>): k
/// of N held, w waiting [held: permit i: pid p, ...; waiting: pid q for
/// <time>, ...]`; a wait longer than `--slow` is marked with `!`.
fn semaphore_line(semaphore: &SemaphoreRow, listing: &Listing, marks: Marks) -> String {
    let mut holders: Vec<(u32, String)> = semaphore
        .holders()
        .iter()
        .map(|(index, pid)| (*index, format!("permit {index}: pid {pid}")))
        .chain(
            semaphore
                .prepared()
                .iter()
                .map(|index| (*index, format!("permit {index}: prepared"))),
        )
        .collect();
    holders.sort();
    let holders = holders
        .into_iter()
        .map(|(_, holder)| holder)
        .collect::<Vec<_>>()
        .join(", ");
    let waiters = semaphore
        .waiters()
        .iter()
        .map(|pid| match listing.permit_wait(semaphore.base(), *pid) {
            Some(waited) if waited > marks.slow => {
                format!("pid {pid} for {} !", duration::format(waited))
            }
            Some(waited) => format!("pid {pid} for {}", duration::format(waited)),
            None => format!("pid {pid}"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut line = format!("semaphore {semaphore}");
    if !holders.is_empty() || !waiters.is_empty() {
        line.push_str(&format!(" [held: {holders}; waiting: {waiters}]"));
    }
    line
}

/// The table of the locks that are no permit.
fn render_table(out: &mut String, locks: &[&LockRow], marks: Marks, style: Style) {
    let mut table = Table::new();
    table
        .load_style(if style.unicode {
            presets::UTF8_FULL_CONDENSED
        } else {
            presets::ASCII_FULL_CONDENSED
        })
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header([
            "PID",
            "CLIENT",
            "LOCK ID",
            "NAMESPACE",
            "LOCK",
            "BLOCKED BY",
            "BACKEND STATE",
        ]);
    for row in locks {
        table.add_row(cells(row, marks, style));
    }
    // Numbers are copied into queries: never wrap them. Words are not cut
    // in the columns that say what is going on (widths count the padding).
    let constraints = [
        (0, ColumnConstraint::ContentWidth),
        (2, ColumnConstraint::ContentWidth),
        (4, ColumnConstraint::LowerBoundary(Width::Fixed(2 + 9))), // "exclusive"
        (6, ColumnConstraint::LowerBoundary(Width::Fixed(2 + 11))), // "transaction"
    ];
    for (index, constraint) in constraints {
        if let Some(column) = table.column_mut(index) {
            column.set_constraint(constraint);
        }
    }
    let _ = writeln!(out, "{table}");
}

fn cells(row: &LockRow, marks: Marks, style: Style) -> Vec<Cell> {
    let pid = row
        .pid
        .map_or_else(|| "prepared".to_owned(), |pid| pid.to_string());
    // `application (address)`; `local` is a unix socket.
    let address = match row.client_addr {
        Some(addr) => addr.to_string(),
        None if row.visible => "local".to_owned(),
        None => "?".to_owned(),
    };
    let client = match row.application_name.as_deref() {
        _ if row.pid.is_none() => String::new(),
        Some(name) if !name.is_empty() => format!("{name} ({address})"),
        _ => address,
    };
    let mode = row
        .mode
        .map_or_else(|| "?".to_owned(), |mode| mode.to_string());
    let blocked_by = row
        .blocked_by
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ");

    let slow = row.waited.filter(|waited| *waited > marks.slow);
    let status = match row.waited {
        _ if row.granted => format!("{mode} held"),
        Some(waited) => format!("{mode} waiting {}", duration::format(waited)),
        None => format!("{mode} waiting"),
    };
    let stuck = row
        .idle_in_transaction()
        .filter(|idle| *idle > marks.idle_in_transaction);
    let state = match (&row.state, row.time_in_state) {
        _ if row.pid.is_none() => "prepared transaction".to_owned(),
        _ if !row.visible => "<insufficient privilege>".to_owned(),
        (Some(state), Some(time)) => format!("{state} {}", duration::format(time)),
        (Some(state), None) => state.clone(),
        (None, _) => String::new(),
    };

    vec![
        Cell::new(pid),
        Cell::new(client),
        Cell::new(row.id),
        Cell::new(row.namespace_text()),
        flagged(status, slow.is_some(), Color::Yellow, style),
        Cell::new(blocked_by),
        flagged(state, stuck.is_some(), Color::Red, style),
    ]
}

/// A cell that stands out when `flag` is set: bold and coloured on a
/// terminal, marked with `!` everywhere.
fn flagged(text: String, flag: bool, color: Color, style: Style) -> Cell {
    if !flag {
        return Cell::new(text);
    }
    let cell = Cell::new(format!("{text} !"));
    if style.color {
        cell.fg(color).add_attribute(Attribute::Bold)
    } else {
        cell
    }
}

/// A line for each backend idle in transaction too long while holding
/// locks, and one for locks held by prepared transactions.
fn attention(listing: &Listing, marks: Marks) -> Vec<String> {
    // pid -> (application, idle for, locks held, backends waiting for it)
    let mut stuck: BTreeMap<i32, (String, Duration, usize, usize)> = BTreeMap::new();
    for row in listing.rows.iter().filter(|row| row.granted) {
        let (Some(pid), Some(idle)) = (row.pid, row.idle_in_transaction()) else {
            continue;
        };
        if idle <= marks.idle_in_transaction {
            continue;
        }
        let entry = stuck.entry(pid).or_insert_with(|| {
            let waiting = listing
                .rows
                .iter()
                .filter(|other| other.blocked_by.contains(&pid))
                .count();
            let application = row.application_name.clone().unwrap_or_default();
            (application, idle, 0, waiting)
        });
        entry.2 += 1;
    }
    let mut lines: Vec<String> = stuck
        .into_iter()
        .map(|(pid, (application, idle, held, waiting))| {
            let application = if application.is_empty() {
                String::new()
            } else {
                format!(" ({application})")
            };
            let waiting = match waiting {
                0 => String::new(),
                waiting => format!(", which {waiting} backend(s) wait for"),
            };
            format!(
                "! pid {pid}{application} has been idle in transaction for {}, holding {held} \
                 advisory lock(s){waiting}: they end only when it commits, rolls back or is \
                 terminated",
                duration::format(idle)
            )
        })
        .collect();
    let prepared = listing.rows.iter().filter(|row| row.pid.is_none()).count();
    if prepared > 0 {
        lines.push(format!(
            "! {prepared} lock(s) held by prepared transactions: they outlive sessions and \
             restarts until COMMIT PREPARED or ROLLBACK PREPARED (see pg_prepared_xacts)"
        ));
    }
    lines
}
