//! Coordination between test processes: the shared server, the private
//! servers' bookkeeping, and the watchdog that stops a server once no
//! process uses it any more.
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
//! and exits. It also exits when the server is
//! gone or its directory was removed or replaced.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::env::{Env, clean_env, env};
use super::pg::{self, Layout};
use super::{ServerOptions, TestServer, TestingError, standby};

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
fn register_user(dir: &Path) -> Result<File, TestingError> {
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

/// How long a process waits for the shared server of other binaries to be
/// stopped once its test run is over (its watchdog needs 2–3 seconds).
const OTHER_BINARIES_TIMEOUT: Duration = Duration::from_secs(120);

/// What the process that started the shared server wrote down for the
/// others.
struct State {
    port: u16,
    socket_dir: PathBuf,
    bin_dir: PathBuf,
}

fn read_state(path: &Path) -> Option<State> {
    let text = fs::read_to_string(path).ok()?;
    let mut port = None;
    let mut socket_dir = None;
    let mut bin_dir = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("port", value)) => port = value.parse().ok(),
            Some(("socket_dir", value)) => socket_dir = Some(PathBuf::from(value)),
            Some(("bin_dir", value)) => bin_dir = Some(PathBuf::from(value)),
            _ => {}
        }
    }
    Some(State {
        port: port?,
        socket_dir: socket_dir?,
        bin_dir: bin_dir?,
    })
}

fn write_state(path: &Path, state: &State) -> Result<(), TestingError> {
    let staging = path.with_extension("tmp");
    let text = format!(
        "port={}\nsocket_dir={}\nbin_dir={}\n",
        state.port,
        state.socket_dir.display(),
        state.bin_dir.display()
    );
    fs::File::create(&staging)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .and_then(|()| fs::rename(&staging, path))
        .map_err(|e| TestingError::io(format!("writing {}", path.display()), e))
}

enum Slot {
    Empty,
    Ready(&'static TestServer),
    Failed(String),
}

/// This process's handle on the shared server.
pub(super) fn shared() -> Result<&'static TestServer, TestingError> {
    static SHARED: Mutex<Slot> = Mutex::new(Slot::Empty);
    let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    match &*slot {
        Slot::Ready(server) => Ok(server),
        Slot::Failed(message) => Err(TestingError::SharedUnavailable {
            message: message.clone(),
        }),
        Slot::Empty => match open_shared() {
            Ok(server) => {
                let server: &'static TestServer = Box::leak(Box::new(server));
                *slot = Slot::Ready(server);
                Ok(server)
            }
            Err(e) => {
                *slot = Slot::Failed(e.to_string());
                Err(e)
            }
        },
    }
}

fn open_shared() -> Result<TestServer, TestingError> {
    /// The registration as a user of the shared server: lives until the
    /// process exits.
    static USER: OnceLock<File> = OnceLock::new();

    let env = env()?;
    let mut layout = Layout::new(&env.base.join("shared"));
    env.make_dir(&layout.dir)?;
    if layout.socket_dir != layout.dir {
        env.make_dir(&layout.socket_dir)?;
    }
    let state_path = layout.dir.join("state");
    let (ctl, running) = running_shared(env, &layout, &state_path)?;
    let (state, started) = match running {
        Some(state) => (state, false),
        None => {
            let _ = fs::remove_file(&state_path);
            let port = start_shared(env, &layout)?;
            let state = State {
                port,
                socket_dir: layout.socket_dir.clone(),
                bin_dir: env.bin_dir.clone(),
            };
            (state, true)
        }
    };
    let registered = (|| -> Result<File, TestingError> {
        if started {
            write_state(&state_path, &state)?;
        }
        ensure_watchdog(env, &state.bin_dir, &layout, false)?;
        register_user(&layout.dir)
    })();
    let user = match registered {
        Ok(user) => user,
        Err(e) => {
            if started {
                // Nobody would stop it.
                let _ = pg::pg_ctl_stop(env, &state.bin_dir, &layout, "fast");
                let _ = fs::remove_file(&state_path);
            }
            return Err(e);
        }
    };
    let _ = USER.set(user);
    drop(ctl);
    layout.socket_dir = state.socket_dir;
    Ok(TestServer::new(
        env,
        layout,
        state.bin_dir,
        state.port,
        None,
    ))
}

/// Takes `ctl.lock` and returns the running shared server of this process's
/// binaries, if any. A server of other binaries (a run against another
/// PostgreSQL version) is never reused: its watchdog stops it once its run
/// is over, which this waits for (`ctl.lock` released meanwhile), up to
/// [`OTHER_BINARIES_TIMEOUT`].
fn running_shared(
    env: &Env,
    layout: &Layout,
    state_path: &Path,
) -> Result<(File, Option<State>), TestingError> {
    let started = Instant::now();
    let mut said = false;
    loop {
        let ctl = lock_ctl(&layout.dir)?;
        let running = read_state(state_path)
            .filter(|state| pg::is_ready(layout, &state.socket_dir, state.port));
        let Some(state) = running else {
            return Ok((ctl, None));
        };
        if same_dir(&state.bin_dir, &env.bin_dir) {
            return Ok((ctl, Some(state)));
        }
        // Make sure someone stops it once its users are gone.
        ensure_watchdog(env, &state.bin_dir, layout, false)?;
        drop(ctl);
        let waited = started.elapsed();
        if waited >= OTHER_BINARIES_TIMEOUT {
            return Err(TestingError::SharedServerOfOtherBinaries {
                running: state.bin_dir,
                wanted: env.bin_dir.clone(),
                waited,
            });
        }
        if !said {
            eprintln!(
                "pglock testing: the shared server runs from {}, not from {}: waiting for \
                 its test run to end and its watchdog to stop it",
                state.bin_dir.display(),
                env.bin_dir.display()
            );
            said = true;
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// Whether two paths name the same directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Starts the shared server from its data directory, initialising it first
/// when it is missing or unusable, and once more from scratch when an
/// existing data directory does not start.
fn start_shared(env: &Env, layout: &Layout) -> Result<u16, TestingError> {
    let fresh = !pg::data_dir_usable(env, layout);
    if fresh {
        pg::initdb(env, layout)?;
    }
    match pg::start(env, layout, &[]) {
        Err(e @ TestingError::StartFailed { .. }) if !fresh => {
            eprintln!(
                "pglock testing: the shared server's data directory did not start, \
                 initialising it again: {e}"
            );
            pg::initdb(env, layout)?;
            pg::start(env, layout, &[])
        }
        other => other,
    }
}

/// Starts a private server.
pub(super) fn start_private(options: &ServerOptions) -> Result<TestServer, TestingError> {
    start_private_with(&options.settings, pg::initdb)
}

/// Starts a private hot standby of `primary`, from a base backup of it made
/// as `method` says.
pub(super) fn start_standby(
    primary: &TestServer,
    method: standby::BackupMethod,
) -> Result<TestServer, TestingError> {
    // A standby needs at least the primary's values of the settings that
    // size shared memory (`max_connections`, `max_locks_per_transaction`,
    // ...): it gets all of the primary's settings.
    let server = start_private_with(&primary.settings, |env, layout| {
        standby::base_backup(env, primary, layout, method)
    })?;
    standby::wait_until_streaming(&server, standby::READY_TIMEOUT)?;
    Ok(server)
}

/// Starts a private server whose data directory `init` makes.
fn start_private_with(
    settings: &[(String, String)],
    init: impl FnOnce(&Env, &Layout) -> Result<(), TestingError>,
) -> Result<TestServer, TestingError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let env = env()?;
    collect_private_leftovers(env);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let layout = Layout::new(&env.base.join(format!("private-{}-{n}", std::process::id())));
    // Left by an earlier process that had the same pid.
    pg::remove_tree(&layout.dir)?;
    env.make_dir(&layout.dir)?;
    let started = (|| -> Result<(File, u16), TestingError> {
        if layout.socket_dir != layout.dir {
            env.make_dir(&layout.socket_dir)?;
        }
        let user = register_user(&layout.dir)?;
        init(env, &layout)?;
        let port = pg::start(env, &layout, settings)?;
        ensure_watchdog(env, &env.bin_dir, &layout, true)?;
        Ok((user, port))
    })();
    match started {
        Ok((user, port)) => {
            let bin_dir = env.bin_dir.clone();
            let mut server = TestServer::new(env, layout, bin_dir, port, Some(user));
            server.settings = settings.to_vec();
            Ok(server)
        }
        Err(e) => {
            // The directory stays for a look at its log; a later process
            // removes it once this one has exited.
            let _ = pg::pg_ctl_stop(env, &env.bin_dir, &layout, "immediate");
            Err(e)
        }
    }
}

/// Removes the private server directories of processes that died without
/// cleaning up and whose watchdog is gone too (it normally cleans up).
fn collect_private_leftovers(env: &Env) {
    if !Path::new("/proc/self").exists() {
        return; // cannot tell live processes from dead ones
    }
    let Ok(entries) = fs::read_dir(&env.base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix("private-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let layout = Layout::new(&entry.path());
        let Ok(watchdog) = open_lock(&layout.dir.join("watchdog.lock")) else {
            continue;
        };
        if watchdog.try_lock().is_err() {
            continue; // the watchdog takes care of it
        }
        if pg::pg_ctl_stop(env, &env.bin_dir, &layout, "immediate").is_err() {
            continue;
        }
        let _ = pg::remove_tree(&layout.dir);
        if layout.socket_dir != layout.dir {
            let _ = pg::remove_tree(&layout.socket_dir);
        }
    }
}
