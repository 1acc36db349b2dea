//! Hot standbys: a base backup of a server, started as a streaming replica
//! on a port of its own, and the waits a test needs.
//!
//! The base backup is `pg_basebackup -R` when a `pg_basebackup` of the
//! server's major version is installed (next to the server binaries, or in
//! `/usr/lib/postgresql/<major>/bin`); otherwise the kit makes it itself
//! through PostgreSQL's low-level backup API, so that server binaries
//! without the client programs (`initdb`, `pg_ctl` and `postgres` only) can
//! still have standbys.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::env::{Env, pg_command_in};
use super::files;
use super::pg::{self, Layout};
use super::private_server;
use super::programs::{self, describe, output_text};
use super::query::{self, Target};
use super::{TestServer, TestingError};

/// How long a new standby may take to stream from its primary.
pub(super) const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the waits ask the server again.
const POLL: Duration = Duration::from_millis(50);
/// The label of the kit's base backups.
const LABEL: &str = "pglock-testing standby";

/// How the kit makes a base backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BackupMethod {
    /// `pg_basebackup -R` of the server's major version, when installed.
    Auto,
    /// The low-level backup API and a copy of the data directory, even when
    /// a `pg_basebackup` is installed (so that every machine tests it).
    #[cfg(test)]
    LowLevel,
}

/// Starts a private hot standby of `primary`, from a base backup of it made
/// as `method` says, and waits until it streams.
pub(super) fn start(
    primary: &TestServer,
    method: BackupMethod,
) -> Result<TestServer, TestingError> {
    // A standby needs at least the primary's values of the settings that
    // size shared memory (`max_connections`, `max_locks_per_transaction`,
    // ...): it gets all of the primary's settings.
    let server = private_server::start_with(&primary.settings, |env, layout| {
        base_backup(env, primary, layout, method)
    })?;
    wait_until_streaming(&server, READY_TIMEOUT)?;
    Ok(server)
}

/// A base backup of `primary` into `<dir>/data.init`, renamed to
/// `layout.data` once complete, set up as a streaming standby of `primary`
/// (`standby.signal`, and a `primary_conninfo` naming the primary's unix
/// socket). The primary's `pg_hba.conf` from `initdb -A trust` trusts local
/// replication connections, and its defaults (`wal_level=replica`,
/// `max_wal_senders=10`) allow them.
pub(super) fn base_backup(
    env: &Env,
    primary: &TestServer,
    layout: &Layout,
    method: BackupMethod,
) -> Result<(), TestingError> {
    let staging = layout.dir.join("data.init");
    files::remove_tree(&staging)?;
    files::remove_tree(&layout.data)?;
    let pg_basebackup = match method {
        BackupMethod::Auto => find_pg_basebackup(primary),
        #[cfg(test)]
        BackupMethod::LowLevel => None,
    };
    match pg_basebackup {
        Some(program) => run_pg_basebackup(env, &program, primary, layout, &staging)?,
        None => low_level_backup(env, primary, &staging)?,
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

/// A `pg_basebackup` of the primary's major version: next to the server
/// binaries, else in Debian's directory for that version.
fn find_pg_basebackup(primary: &TestServer) -> Option<PathBuf> {
    let major = fs::read_to_string(primary.data_dir().join("PG_VERSION")).ok()?;
    let major = major.trim();
    [
        primary.bin_dir.join("pg_basebackup"),
        Path::new("/usr/lib/postgresql")
            .join(major)
            .join("bin/pg_basebackup"),
    ]
    .into_iter()
    .find(|program| programs::program_major(program).as_deref() == Some(major))
}

fn run_pg_basebackup(
    env: &Env,
    program: &Path,
    primary: &TestServer,
    layout: &Layout,
    staging: &Path,
) -> Result<(), TestingError> {
    let bin_dir = program.parent().unwrap_or(Path::new("/"));
    let name = program
        .file_name()
        .and_then(OsStr::to_str)
        .unwrap_or("pg_basebackup");
    let mut command = pg_command_in(bin_dir, env.run_as.as_ref(), name, &layout.dir);
    command
        .arg("-D")
        .arg(staging)
        .arg("-h")
        .arg(primary.socket_dir())
        .arg("-p")
        .arg(primary.port().to_string())
        .args(["-U", "postgres", "-w", "-R", "-X", "stream", "-c", "fast"])
        .arg("--no-sync");
    let out = programs::run(&mut command, "pg_basebackup")?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestingError::CommandFailed {
            command: describe(&command),
            status: out.status.to_string(),
            output: output_text(&out),
        })
    }
}

/// The statements that start and stop a non-exclusive low-level backup on
/// a server of `version_num` (`server_version_num`): renamed in PostgreSQL
/// 15, which also dropped the exclusive mode (and with it the `exclusive`
/// argument). Both must run on the same connection.
fn backup_statements(version_num: u32) -> (String, &'static str) {
    if version_num >= 150_000 {
        (
            format!(
                "SELECT pg_catalog.pg_backup_start(label => {}, fast => true)::text",
                query::literal(LABEL)
            ),
            "SELECT labelfile, spcmapfile FROM pg_catalog.pg_backup_stop(wait_for_archive => false)",
        )
    } else {
        (
            format!(
                "SELECT pg_catalog.pg_start_backup({}, true, false)::text",
                query::literal(LABEL)
            ),
            "SELECT labelfile, spcmapfile FROM pg_catalog.pg_stop_backup(false, false)",
        )
    }
}

/// A base backup through the low-level API: start the backup, copy the data
/// directory while the server runs, stop the backup on the same connection,
/// and write the `backup_label` (and `tablespace_map`) it returns into the
/// copy. No WAL is copied: the standby streams what it needs from the
/// primary, which keeps it since the backup's checkpoint.
fn low_level_backup(env: &Env, primary: &TestServer, staging: &Path) -> Result<(), TestingError> {
    let target = Target::socket(primary.socket_dir(), primary.port());
    let (label, tablespace_map) = query::block_on(|| async {
        let mut session = target.connect().await?;
        let version = session
            .text("SELECT pg_catalog.current_setting('server_version_num')")
            .await?;
        let version_num = version
            .parse::<u32>()
            .map_err(|_| TestingError::QueryFailed {
                server: primary.url(),
                query: "SELECT current_setting('server_version_num')".into(),
                message: format!("not a version number: {version:?}"),
            })?;
        let (start, stop) = backup_statements(version_num);
        session.text(&start).await?;
        // A failed copy leaves the backup to end with the session.
        copy_data_dir(env, primary.data_dir(), staging)?;
        let files = session.texts(stop).await?;
        session.close().await;
        match <[String; 2]>::try_from(files) {
            Ok([label, map]) => Ok((label, map)),
            Err(files) => Err(TestingError::QueryFailed {
                server: primary.url(),
                query: stop.into(),
                message: format!("expected two columns, got {}", files.len()),
            }),
        }
    })?;
    env.write_file(&staging.join("backup_label"), &label)?;
    if !tablespace_map.is_empty() {
        env.write_file(&staging.join("tablespace_map"), &tablespace_map)?;
    }
    env.write_file(&staging.join("standby.signal"), "")?;
    let auto_conf = staging.join("postgresql.auto.conf");
    let mut settings = fs::read_to_string(&auto_conf).unwrap_or_default();
    if !settings.is_empty() && !settings.ends_with('\n') {
        settings.push('\n');
    }
    settings.push_str(&primary_conninfo(primary));
    env.write_file(&auto_conf, &settings)
}

/// The `primary_conninfo` line of a standby of `primary`: its unix socket,
/// as the superuser.
fn primary_conninfo(primary: &TestServer) -> String {
    let conninfo_value =
        |value: &str| format!("'{}'", value.replace('\\', r"\\").replace('\'', r"\'"));
    let conninfo = format!(
        "host={} port={} user=postgres application_name={}",
        conninfo_value(&primary.socket_dir().to_string_lossy()),
        primary.port(),
        conninfo_value("pglock_testing_standby"),
    );
    format!("primary_conninfo = {}\n", query::literal(&conninfo))
}

/// What of a data directory a base backup leaves out: the server
/// recreates or empties it at start-up, or it belongs to the running server
/// (PostgreSQL's documentation, "Making a Base Backup Using the Low Level
/// API"). `pg_wal` keeps its subdirectories, without their files.
fn copy_rule(relative: &Path, is_dir: bool) -> CopyRule {
    const FILES: [&str; 9] = [
        "postmaster.pid",
        "postmaster.opts",
        "postgresql.auto.conf.tmp",
        "backup_label",
        "backup_label.old",
        "tablespace_map",
        "tablespace_map.old",
        "standby.signal",
        "recovery.signal",
    ];
    const EMPTIED: [&str; 7] = [
        "pg_dynshmem",
        "pg_notify",
        "pg_serial",
        "pg_snapshots",
        "pg_stat_tmp",
        "pg_subtrans",
        "pg_replslot",
    ];
    let name = relative.file_name().and_then(OsStr::to_str).unwrap_or("");
    if name.starts_with("pgsql_tmp") || (!is_dir && name == "pg_internal.init") {
        return CopyRule::Skip;
    }
    let mut parts = relative.components();
    let top = parts
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .unwrap_or("");
    let nested = parts.next().is_some();
    if !nested {
        if !is_dir && FILES.contains(&top) {
            return CopyRule::Skip;
        }
        if is_dir && (EMPTIED.contains(&top) || top == "pg_wal") {
            return CopyRule::Empty;
        }
        return CopyRule::Copy;
    }
    match top {
        "pg_wal" if is_dir => CopyRule::Empty,
        "pg_wal" => CopyRule::Skip,
        _ if EMPTIED.contains(&top) => CopyRule::Skip,
        _ => CopyRule::Copy,
    }
}

/// What a base backup does with an entry of the data directory.
#[derive(Debug, PartialEq, Eq)]
enum CopyRule {
    Copy,
    /// The directory itself, without its files.
    Empty,
    Skip,
}

/// Copies the data directory of a running server, minus what a base
/// backup leaves out, keeping modes and giving everything to the server's
/// user. Files that vanish meanwhile are skipped: the WAL replayed from the
/// backup's start makes the copy consistent.
fn copy_data_dir(env: &Env, from: &Path, to: &Path) -> Result<(), TestingError> {
    copy_tree(env, from, to, Path::new(""))
}

fn copy_tree(env: &Env, root: &Path, to_root: &Path, relative: &Path) -> Result<(), TestingError> {
    let from = root.join(relative);
    let to = to_root.join(relative);
    let io = |what: &str, path: &Path, e: std::io::Error| {
        TestingError::io(format!("{what} {} (base backup)", path.display()), e)
    };
    let mode = fs::metadata(&from)
        .map_err(|e| io("reading", &from, e))?
        .mode();
    fs::DirBuilder::new()
        .mode(mode & 0o7777)
        .create(&to)
        .map_err(|e| io("creating", &to, e))?;
    env.give(&to)?;
    let entries = match fs::read_dir(&from) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("listing", &from, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io("listing", &from, e))?;
        let path = relative.join(entry.file_name());
        let Ok(kind) = entry.file_type() else {
            continue; // gone
        };
        let source = root.join(&path);
        let dest = to_root.join(&path);
        match copy_rule(&path, kind.is_dir()) {
            CopyRule::Skip => continue,
            CopyRule::Empty if kind.is_dir() => {
                copy_skeleton(env, &source, &dest, keeps_subdirectories(&path))?
            }
            _ if kind.is_dir() => copy_tree(env, root, to_root, &path)?,
            _ if kind.is_symlink() => {
                // Tablespaces (`pg_tblspc/<oid>`): the link, as it is.
                let link = match fs::read_link(&source) {
                    Ok(link) => link,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io("reading", &source, e)),
                };
                std::os::unix::fs::symlink(&link, &dest).map_err(|e| io("creating", &dest, e))?;
                if let Some(user) = &env.run_as {
                    std::os::unix::fs::lchown(&dest, Some(user.uid), Some(user.gid))
                        .map_err(|e| io("giving away", &dest, e))?;
                }
            }
            _ if kind.is_file() => match fs::copy(&source, &dest) {
                Ok(_) => env.give(&dest)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let _ = fs::remove_file(&dest);
                }
                Err(e) => return Err(io("copying", &source, e)),
            },
            _ => {} // sockets, pipes: nothing a backup needs
        }
    }
    Ok(())
}

/// Whether the subdirectories of an emptied directory are kept (`pg_wal`'s
/// `archive_status` and `summaries`).
fn keeps_subdirectories(relative: &Path) -> bool {
    relative.starts_with("pg_wal")
}

/// Creates `to` with the mode of `from`, and, when `keep_subdirs`, the same
/// for its subdirectories, without any file.
fn copy_skeleton(
    env: &Env,
    from: &Path,
    to: &Path,
    keep_subdirs: bool,
) -> Result<(), TestingError> {
    let mode = match fs::metadata(from) {
        Ok(meta) => meta.mode(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(TestingError::io(format!("reading {}", from.display()), e)),
    };
    fs::DirBuilder::new()
        .mode(mode & 0o7777)
        .create(to)
        .map_err(|e| TestingError::io(format!("creating {}", to.display()), e))?;
    env.give(to)?;
    if keep_subdirs && let Ok(entries) = fs::read_dir(from) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                copy_skeleton(env, &entry.path(), &to.join(entry.file_name()), true)?;
            }
        }
    }
    Ok(())
}

/// Polls until `server` accepts connections, is in recovery and its WAL
/// receiver streams from the primary.
pub(super) fn wait_until_streaming(
    server: &TestServer,
    timeout: Duration,
) -> Result<(), TestingError> {
    const CHECK: &str = "SELECT pg_catalog.pg_is_in_recovery()::text || ' ' || \
         coalesce((SELECT status FROM pg_catalog.pg_stat_wal_receiver), 'no-wal-receiver')";
    let target = Target::socket(server.socket_dir(), server.port());
    query::block_on(|| {
        poll(server, timeout, "a streaming hot standby", async || {
            target
                .text(CHECK)
                .await
                .map(|seen| (seen == "true streaming", seen))
        })
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
    const INSERTED: &str = "SELECT pg_catalog.pg_current_wal_insert_lsn()::text";
    let primary_target = Target::socket(primary.socket_dir(), primary.port());
    let standby_target = Target::socket(standby.socket_dir(), standby.port());
    query::block_on(|| async {
        let target = primary_target.text(INSERTED).await?;
        if !target.contains('/') {
            return Err(TestingError::QueryFailed {
                server: primary.url(),
                query: INSERTED.into(),
                message: format!("not an LSN: {target:?}"),
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
            async || {
                standby_target
                    .text(&check)
                    .await
                    .map(|seen| (seen.starts_with("true "), seen))
            },
        )
        .await
    })
}

/// Calls `check` until it says yes, the server's postmaster dies, or
/// `timeout` passes; errors of `check` count as "not yet".
async fn poll(
    server: &TestServer,
    timeout: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Result<(bool, String), TestingError>,
) -> Result<(), TestingError> {
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        last = match check().await {
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
                log_tail: programs::log_tail(server.log_file(), 0),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_backup_leaves_out_what_the_server_recreates() {
        let decide = |path: &str, is_dir: bool| copy_rule(Path::new(path), is_dir);
        assert_eq!(decide("postmaster.pid", false), CopyRule::Skip);
        assert_eq!(decide("postmaster.opts", false), CopyRule::Skip);
        assert_eq!(decide("base", true), CopyRule::Copy);
        assert_eq!(decide("base/5/1259", false), CopyRule::Copy);
        assert_eq!(decide("base/5/pg_internal.init", false), CopyRule::Skip);
        assert_eq!(decide("base/pgsql_tmp", true), CopyRule::Skip);
        assert_eq!(decide("global/pg_control", false), CopyRule::Copy);
        assert_eq!(decide("pg_wal", true), CopyRule::Empty);
        assert_eq!(decide("pg_wal/archive_status", true), CopyRule::Empty);
        assert_eq!(
            decide("pg_wal/000000010000000000000001", false),
            CopyRule::Skip
        );
        assert_eq!(decide("pg_replslot", true), CopyRule::Empty);
        assert_eq!(decide("pg_replslot/slot", true), CopyRule::Skip);
        assert_eq!(decide("pg_stat_tmp/global.stat", false), CopyRule::Skip);
        assert_eq!(decide("postgresql.auto.conf", false), CopyRule::Copy);
        assert_eq!(decide("pg_stat", true), CopyRule::Copy);
    }

    #[test]
    fn a_low_level_backup_makes_a_standby_that_streams_and_replays() {
        use crate::ServerOptions;

        let primary = TestServer::start(ServerOptions::new()).expect("a private primary");
        let on_primary = Target::socket(primary.socket_dir(), primary.port());
        let execute = |sql: &'static str| {
            query::block_on(|| async {
                let mut session = on_primary.connect().await?;
                session.execute(sql).await?;
                session.close().await;
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
        };
        execute("CREATE TABLE in_the_copy AS SELECT 'copied'::text AS word");

        let standby =
            start(&primary, BackupMethod::LowLevel).expect("a standby from a low-level backup");
        assert!(standby.data_dir().join("standby.signal").is_file());
        execute("CREATE TABLE in_the_stream AS SELECT 'streamed'::text AS word");
        primary
            .wait_for_replay(&standby, READY_TIMEOUT)
            .expect("replayed");

        let on_standby = Target::socket(standby.socket_dir(), standby.port());
        let seen = query::block_on(|| {
            on_standby.text(
                "SELECT (SELECT word FROM in_the_copy) || ' ' || (SELECT word FROM in_the_stream) \
                 || ' ' || pg_catalog.pg_is_in_recovery()::text",
            )
        })
        .expect("a query on the standby");
        assert_eq!(seen, "copied streamed true");
    }

    #[test]
    fn backups_use_the_functions_of_the_servers_version() {
        let (start, stop) = backup_statements(140_023);
        assert!(start.contains("pg_start_backup('pglock-testing standby', true, false)"));
        assert!(stop.contains("pg_stop_backup(false, false)"));
        for version in [150_000, 160_014, 180_004] {
            let (start, stop) = backup_statements(version);
            assert!(start.contains("pg_backup_start(label =>"), "{start}");
            assert!(start.contains("fast => true"), "{start}");
            assert!(stop.contains("pg_backup_stop(wait_for_archive => false)"));
        }
    }
}
