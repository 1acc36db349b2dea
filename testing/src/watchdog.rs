//! The lock files by which test processes share a server, and the watchdog
//! that reads them to stop the server once no process uses it any more.
//!
//! Every server directory holds three lock files (flock(2)):
//!
//! - `ctl.lock`: exclusive while checking, starting, stopping the server or
//!   registering as one of its users;
//! - `users.lock`: each process using the server holds a shared lock on it
//!   for as long as it uses the server (the whole process lifetime for the
//!   shared server); the kernel drops it when the process dies, however it
//!   dies;
//! - `watchdog.lock`: held by the server's watchdog for its whole life, so
//!   that there is at most one, and a process can tell whether one runs.
//!
//! The watchdog is a detached `sh` loop that, every second, takes
//! `ctl.lock` and tries `users.lock` exclusively: after two consecutive
//! successes (no users), it stops the PgBouncers started in front of the
//! server (their pid files are in `pgbouncer-*/` of the server directory),
//! then the server with `pg_ctl stop -m fast` (still holding `ctl.lock`),
//! and exits. It also exits when the server is gone or its directory was
//! removed or replaced.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::TestingError;
use super::env::{Env, clean_env};
use super::pg::Layout;

/// The watchdog: `$0` is a marker for `ps`, then the server directory, the
/// `pg_ctl` to stop it with, `runuser` and the user to run it as (empty when
/// not root), `keep` or `remove` (remove the directory, and the extra
/// directory that follows when not empty, after stopping), and `flock`.
const WATCHDOG: &str = r#"
dir=$1 pg_ctl=$2 runuser=$3 user=$4 mode=$5 extra=$6 flock=$7
trap '' HUP INT
exec 7>>"$dir/watchdog.lock" 8>>"$dir/ctl.lock" 9>>"$dir/users.lock" || exit 0
"$flock" -n -x 7 || exit 0
stop() {
    if [ -n "$user" ]; then
        "$runuser" -u "$user" -- "$pg_ctl" -D "$dir/data" -m "$1" -w -t 60 stop
    else
        "$pg_ctl" -D "$dir/data" -m "$1" -w -t 60 stop
    fi
}
stop_bouncers() {
    for pidfile in "$dir"/pgbouncer-*/pgbouncer.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = pgbouncer ] && kill -TERM "$pid"
    done
}
idle=0
while sleep 1; do
    "$flock" -x 8 || exit 0
    [ "$dir/users.lock" -ef "/proc/$$/fd/9" ] || exit 0
    [ -f "$dir/data/postmaster.pid" ] || exit 0
    if "$flock" -n -x 9; then
        idle=$((idle + 1))
        "$flock" -u 9
    else
        idle=0
    fi
    if [ "$idle" -ge 2 ]; then
        echo "$(date '+%F %T') pglock watchdog: no process uses $dir any more, stopping the server"
        stop_bouncers
        stop fast || stop immediate
        rm -f "$dir/state"
        if [ "$mode" = remove ]; then
            rm -rf "$dir"
            [ -z "$extra" ] || rm -rf "$extra"
        fi
        exit 0
    fi
    "$flock" -u 8
done
"#;

pub(super) fn open_lock(path: &Path) -> Result<File, TestingError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TestingError::io(format!("opening the lock file {}", path.display()), e))
}

/// Takes the exclusive `ctl.lock` of a server directory; released on drop.
pub(super) fn lock_ctl(dir: &Path) -> Result<File, TestingError> {
    let path = dir.join("ctl.lock");
    let file = open_lock(&path)?;
    file.lock()
        .map_err(|e| TestingError::io(format!("locking {}", path.display()), e))?;
    Ok(file)
}

/// Registers the calling process as a user of a server until the returned
/// file is dropped (or the process ends).
pub(super) fn register_user(dir: &Path) -> Result<File, TestingError> {
    let path = dir.join("users.lock");
    let file = open_lock(&path)?;
    file.lock_shared()
        .map_err(|e| TestingError::io(format!("locking {} (shared)", path.display()), e))?;
    Ok(file)
}

/// Starts a watchdog for the server of `layout` unless one runs already.
pub(super) fn ensure_watchdog(
    env: &Env,
    bin_dir: &Path,
    layout: &Layout,
    remove: bool,
) -> Result<(), TestingError> {
    let path = layout.dir.join("watchdog.lock");
    let probe = open_lock(&path)?;
    match probe.try_lock() {
        Ok(()) => drop(probe),
        Err(TryLockError::WouldBlock) => return Ok(()),
        Err(TryLockError::Error(e)) => {
            return Err(TestingError::io(format!("probing {}", path.display()), e));
        }
    }
    let empty = PathBuf::new();
    let (runuser, user) = match &env.run_as {
        Some(user) => (user.runuser.as_path(), user.name.as_str()),
        None => (empty.as_path(), ""),
    };
    let extra = if remove && layout.socket_dir != layout.dir {
        layout.socket_dir.as_path()
    } else {
        empty.as_path()
    };
    // The outer shell starts the watchdog in the background and exits at
    // once: the watchdog is orphaned (no zombie in the test process), in its
    // own session when `setsid` exists, and holds none of cargo's pipes.
    let mut command = Command::new("sh");
    clean_env(&mut command);
    command
        .arg("-c")
        .arg(r#"log=$1; shift; "$@" </dev/null >>"$log" 2>&1 &"#)
        .arg("sh")
        .arg(layout.dir.join("watchdog.log"));
    if let Some(setsid) = &env.setsid {
        command.arg(setsid);
    }
    command
        .arg("sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("pglock-watchdog")
        .arg(&layout.dir)
        .arg(bin_dir.join("pg_ctl"))
        .arg(runuser)
        .arg(user)
        .arg(if remove { "remove" } else { "keep" })
        .arg(extra)
        .arg(&env.flock)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let status = command
        .status()
        .map_err(|e| TestingError::io("starting the server's watchdog (sh)", e))?;
    if status.success() {
        Ok(())
    } else {
        Err(TestingError::CommandFailed {
            command: "sh -c <start the watchdog>".into(),
            status: status.to_string(),
            output: String::new(),
        })
    }
}
