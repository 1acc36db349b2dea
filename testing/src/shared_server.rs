//! The shared server of a test run: found running (started by another test
//! process of the run, from the same binaries) or started here, and
//! registered as used by this process until it exits. Its watchdog stops it
//! once the run is over (see `watchdog`).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::env::{Env, env};
use super::pg::{self, Layout};
use super::watchdog::{ensure_watchdog, lock_ctl, register_user};
use super::{TestServer, TestingError};

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
pub(super) fn get() -> Result<&'static TestServer, TestingError> {
    static SHARED: Mutex<Slot> = Mutex::new(Slot::Empty);
    let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    match &*slot {
        Slot::Ready(server) => Ok(server),
        Slot::Failed(message) => Err(TestingError::SharedUnavailable {
            message: message.clone(),
        }),
        Slot::Empty => match open() {
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

fn open() -> Result<TestServer, TestingError> {
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
    let (ctl, running) = find_running(env, &layout, &state_path)?;
    let (state, started) = match running {
        Some(state) => (state, false),
        None => {
            let _ = fs::remove_file(&state_path);
            let port = start(env, &layout)?;
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
fn find_running(
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
fn start(env: &Env, layout: &Layout) -> Result<u16, TestingError> {
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
