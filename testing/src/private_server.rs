//! Private servers: each with its own directory, data and port, registered
//! as used by the process that started it, stopped and removed when dropped
//! (or by its watchdog, when that process died); and the removal of what
//! dead processes left behind.

use std::fs::{self, File};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::env::{Env, env};
use super::files;
use super::pg::{self, Layout};
use super::watchdog::{ensure_watchdog, open_lock, register_user};
use super::{ServerOptions, TestServer, TestingError};

/// Starts a private server.
pub(super) fn start(options: &ServerOptions) -> Result<TestServer, TestingError> {
    start_with(&options.settings, pg::initdb)
}

/// Starts a private server whose data directory `init` makes.
pub(super) fn start_with(
    settings: &[(String, String)],
    init: impl FnOnce(&Env, &Layout) -> Result<(), TestingError>,
) -> Result<TestServer, TestingError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let env = env()?;
    collect_leftovers(env);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let layout = Layout::new(&env.base.join(format!("private-{}-{n}", std::process::id())));
    // Left by an earlier process that had the same pid.
    files::remove_tree(&layout.dir)?;
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
fn collect_leftovers(env: &Env) {
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
        let _ = files::remove_tree(&layout.dir);
        if layout.socket_dir != layout.dir {
            let _ = files::remove_tree(&layout.socket_dir);
        }
    }
}
