//! Hot standbys: a base backup of a server (`pg_basebackup -R`), started as a
//! streaming replica on a port of its own, and the waits a test needs.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use super::env::{Env, pg_command_in};
use super::pg::{self, Layout};
use super::{TestServer, TestingError};

/// How long a new standby may take to stream from its primary.
pub(super) const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the waits ask the server again.
const POLL: Duration = Duration::from_millis(50);

/// `pg_basebackup -R` of `primary` into `<dir>/data.init`, renamed to
/// `layout.data` once complete. `-R` writes `standby.signal` and the
/// `primary_conninfo` (the primary's unix socket) that make the copy a
/// streaming standby. The primary's `pg_hba.conf` from `initdb -A trust`
/// trusts local replication connections, and its defaults
/// (`wal_level=replica`, `max_wal_senders=10`) allow them.
pub(super) fn base_backup(
    env: &Env,
    primary: &TestServer,
    layout: &Layout,
) -> Result<(), TestingError> {
    let staging = layout.dir.join("data.init");
    pg::remove_tree(&staging)?;
    pg::remove_tree(&layout.data)?;
    let mut command = pg_command_in(
        &primary.bin_dir,
        env.run_as.as_ref(),
        "pg_basebackup",
        &layout.dir,
    );
    command
        .arg("-D")
        .arg(&staging)
        .arg("-h")
        .arg(primary.socket_dir())
        .arg("-p")
        .arg(primary.port().to_string())
        .args(["-U", "postgres", "-w", "-R", "-X", "stream", "-c", "fast"])
        .arg("--no-sync");
    let out = pg::run(&mut command, "pg_basebackup")?;
    if !out.status.success() {
        return Err(TestingError::CommandFailed {
            command: pg::describe(&command),
            status: out.status.to_string(),
            output: pg::output_text(&out),
        });
    }
    fs::rename(&staging, &layout.data).map_err(|e| {
        TestingError::io(
            format!(
                "renaming {} to {}",
                staging.display(),
                layout.data.display()
            ),
            e,
        )
    })
}

/// Runs one query with `psql` over the server's unix socket and returns its
/// unaligned, tuples-only output, trimmed.
pub(super) fn psql(server: &TestServer, sql: &str) -> Result<String, TestingError> {
    let mut command = pg_command_in(&server.bin_dir, None, "psql", Path::new("/"));
    command
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-w"])
        .arg("-h")
        .arg(server.socket_dir())
        .arg("-p")
        .arg(server.port().to_string())
        .args(["-U", "postgres", "-d", "postgres", "-c", sql])
        .stdin(Stdio::null());
    let out = pg::run(&mut command, "psql")?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(TestingError::CommandFailed {
            command: pg::describe(&command),
            status: out.status.to_string(),
            output: pg::output_text(&out),
        })
    }
}

/// Polls until `server` accepts connections, is in recovery and its WAL
/// receiver streams from the primary.
pub(super) fn wait_until_streaming(
    server: &TestServer,
    timeout: Duration,
) -> Result<(), TestingError> {
    const CHECK: &str = "SELECT pg_catalog.pg_is_in_recovery()::text || ' ' || \
         coalesce((SELECT status FROM pg_catalog.pg_stat_wal_receiver), 'no-wal-receiver')";
    poll(server, timeout, "a streaming hot standby", || {
        psql(server, CHECK).map(|seen| (seen == "true streaming", seen))
    })
}

/// Polls until `standby` has replayed the WAL that `primary` had inserted
/// when this was called.
pub(super) fn wait_for_replay(
    primary: &TestServer,
    standby: &TestServer,
    timeout: Duration,
) -> Result<(), TestingError> {
    // The insert position, not `pg_current_wal_lsn()` (the write position):
    // the kit's servers commit asynchronously (`synchronous_commit=off`), so
    // a commit that has returned may not be written yet.
    let target = psql(primary, "SELECT pg_catalog.pg_current_wal_insert_lsn()")?;
    if !target.contains('/') {
        return Err(TestingError::CommandFailed {
            command: "SELECT pg_current_wal_insert_lsn()".into(),
            status: "unexpected output".into(),
            output: target,
        });
    }
    let check = format!(
        "SELECT coalesce(pg_catalog.pg_last_wal_replay_lsn() >= '{target}'::pg_lsn, false)::text \
         || ' ' || coalesce(pg_catalog.pg_last_wal_replay_lsn()::text, 'none')"
    );
    poll(
        standby,
        timeout,
        &format!("the replay of the primary's WAL up to {target}"),
        || psql(standby, &check).map(|seen| (seen.starts_with("true "), seen)),
    )
}

/// Calls `check` until it says yes, the server's postmaster dies, or
/// `timeout` passes; errors of `check` count as "not yet".
fn poll(
    server: &TestServer,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<(bool, String), TestingError>,
) -> Result<(), TestingError> {
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        last = match check() {
            Ok((true, _)) => return Ok(()),
            Ok((false, seen)) => format!("the server says: {seen}"),
            Err(e) => e.to_string(),
        };
        let alive = pg::live_postmaster(server.data_dir()).is_some();
        if !alive || Instant::now() >= deadline {
            return Err(TestingError::StartFailed {
                data_dir: server.data_dir().to_path_buf(),
                log_file: server.log_file().to_path_buf(),
                reason: format!(
                    "{} while waiting for {what} ({}); last check: {last}",
                    if alive {
                        format!("timed out after {timeout:?}")
                    } else {
                        "the server exited".to_owned()
                    },
                    server.url()
                ),
                log_tail: pg::log_tail(&server.layout, 0),
            });
        }
        thread::sleep(POLL);
    }
}
