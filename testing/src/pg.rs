//! Driving the PostgreSQL programs (`initdb`, `pg_ctl`), the major version
//! they say they are, and a server directory's layout.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::TestingError;
use super::env::{Env, fnv1a, pg_command_in};
use super::files::remove_tree;
use super::programs::{
    PORT_ATTEMPTS, describe, free_port, log_len, log_tail, output_text, program_major, run,
};
use super::query::{self, Target};

/// `pg_ctl -t`: seconds to wait for a start or a stop.
const PG_CTL_TIMEOUT: &str = "60";
/// Socket paths must stay below this length (the kernel allows 107 bytes).
const MAX_SOCKET_PATH: usize = 100;

/// Where one server keeps its things.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    /// The server's directory: lock files, state, log.
    pub(super) dir: PathBuf,
    pub(super) data: PathBuf,
    pub(super) log: PathBuf,
    pub(super) socket_dir: PathBuf,
}

impl Layout {
    pub(super) fn new(dir: &Path) -> Layout {
        Layout {
            dir: dir.to_path_buf(),
            data: dir.join("data"),
            log: dir.join("server.log"),
            socket_dir: socket_dir_for(dir),
        }
    }
}

/// The unix socket directory of a server whose directory is `dir`: `dir`
/// itself when `<dir>/.s.PGSQL.<port>` stays under 100 bytes and needs no
/// quoting in `unix_socket_directories`, else `/tmp/pglock-<hash of dir>`.
pub(super) fn socket_dir_for(dir: &Path) -> PathBuf {
    let bytes = dir.as_os_str().as_bytes();
    let too_long = bytes.len() + "/.s.PGSQL.65535".len() >= MAX_SOCKET_PATH;
    let needs_quoting = !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(b));
    if too_long || needs_quoting {
        PathBuf::from(format!("/tmp/pglock-{:016x}", fnv1a(bytes)))
    } else {
        dir.to_path_buf()
    }
}

/// The server settings for a start, as one `pg_ctl -o` string (which
/// `pg_ctl` hands to `sh -c`, hence the quoting).
fn server_options(port: u16, socket_dir: &Path, settings: &[(String, String)]) -> String {
    let port = port.to_string();
    let socket_dir = socket_dir.to_string_lossy();
    let fixed = [
        ("fsync", "off"),
        ("synchronous_commit", "off"),
        ("full_page_writes", "off"),
        ("listen_addresses", "127.0.0.1"),
        ("port", &port),
        ("unix_socket_directories", &socket_dir),
        ("max_connections", "300"),
        // A lock table of 76,800 entries: a lock manager's default budget
        // (a quarter of it) holds the 10,000 locks some tests take.
        ("max_locks_per_transaction", "256"),
        ("shared_buffers", "32MB"),
    ];
    let all = fixed
        .iter()
        .map(|(name, value)| (*name, *value))
        .chain(settings.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    all.map(|(name, value)| format!("-c {}", shell_quote(&format!("{name}={value}"))))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes `text` as one word for `sh`.
pub(super) fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Whether `layout.data` holds a complete cluster that these binaries and
/// this user can start.
pub(super) fn data_dir_usable(env: &Env, layout: &Layout) -> bool {
    let Ok(version) = fs::read_to_string(layout.data.join("PG_VERSION")) else {
        return false;
    };
    if !layout.data.join("global/pg_control").is_file() {
        return false;
    }
    if let Some(major) = program_major(&env.bin_dir.join("postgres"))
        && version.trim() != major
    {
        return false;
    }
    if let Some(user) = &env.run_as
        && fs::metadata(&layout.data).map(|m| m.uid()).ok() != Some(user.uid)
    {
        return false;
    }
    true
}

/// `initdb` into `<dir>/data.init`, renamed to `layout.data` once complete,
/// so that an interrupted `initdb` never leaves a half cluster behind.
pub(super) fn initdb(env: &Env, layout: &Layout) -> Result<(), TestingError> {
    let staging = layout.dir.join("data.init");
    remove_tree(&staging)?;
    remove_tree(&layout.data)?;
    let mut command = env.pg_command("initdb", &layout.dir);
    command
        .arg("-D")
        .arg(&staging)
        .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
        .arg("--no-sync");
    let out = run(&mut command, "initdb")?;
    if !out.status.success() {
        return Err(TestingError::InitdbFailed {
            data_dir: layout.data.clone(),
            status: out.status.to_string(),
            output: output_text(&out),
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

fn port_taken(log_tail: &str) -> bool {
    log_tail.contains("Address already in use")
        || log_tail.contains("could not create any TCP/IP sockets")
        || (log_tail.contains("lock file") && log_tail.contains(".s.PGSQL."))
}

/// The pid in the data directory's `postmaster.pid`, when that process is
/// (as far as can be told) a postmaster of this very data directory.
pub(super) fn live_postmaster(data: &Path) -> Option<u32> {
    let pid_file = fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid: u32 = pid_file.lines().next()?.trim().parse().ok()?;
    if !Path::new("/proc/self").exists() {
        return Some(pid); // cannot tell: assume it runs
    }
    let process = PathBuf::from(format!("/proc/{pid}"));
    if !process.exists() {
        return None;
    }
    match fs::read_link(process.join("cwd")) {
        // The postmaster works in its data directory.
        Ok(cwd) => (Some(cwd) == fs::canonicalize(data).ok()).then_some(pid),
        Err(_) => fs::read_to_string(process.join("comm"))
            .is_ok_and(|comm| comm.trim() == "postgres")
            .then_some(pid),
    }
}

/// Makes sure nothing stands in the way of a start: stops a postmaster of
/// this data directory that is still around (hung, half started), and
/// removes a `postmaster.pid` left by a server that died (its pid may now
/// belong to another process, which would make `postgres` refuse to start).
fn clear_leftovers(env: &Env, bin_dir: &Path, layout: &Layout) {
    if !layout.data.join("postmaster.pid").exists() {
        return;
    }
    if live_postmaster(&layout.data).is_some() {
        let _ = pg_ctl_stop(env, bin_dir, layout, "immediate");
    }
    if live_postmaster(&layout.data).is_none() {
        let _ = fs::remove_file(layout.data.join("postmaster.pid"));
    }
}

fn start_error(layout: &Layout, reason: String, log_tail: String) -> TestingError {
    TestingError::StartFailed {
        data_dir: layout.data.clone(),
        log_file: layout.log.clone(),
        reason,
        log_tail,
    }
}

/// Starts the server of `layout` on a fresh port (retried when the port is
/// taken in the meantime) and returns the port.
pub(super) fn start(
    env: &Env,
    layout: &Layout,
    settings: &[(String, String)],
) -> Result<u16, TestingError> {
    clear_leftovers(env, &env.bin_dir, layout);
    for attempt in 1..=PORT_ATTEMPTS {
        let port = free_port()?;
        let offset = log_len(&layout.log);
        let mut command = env.pg_command("pg_ctl", &layout.dir);
        command
            .arg("-D")
            .arg(&layout.data)
            .arg("-l")
            .arg(&layout.log)
            .args(["-w", "-t", PG_CTL_TIMEOUT, "-o"])
            .arg(server_options(port, &layout.socket_dir, settings))
            .arg("start");
        let out = run(&mut command, "pg_ctl start")?;
        if out.status.success() {
            return Ok(port);
        }
        let tail = log_tail(&layout.log, offset);
        // A timed-out start may have left a postmaster behind.
        clear_leftovers(env, &env.bin_dir, layout);
        if attempt < PORT_ATTEMPTS && port_taken(&tail) {
            continue;
        }
        return Err(start_error(layout, output_text(&out), tail));
    }
    unreachable!("the last attempt returns")
}

/// `pg_ctl restart -m fast -w` with the same port and settings; also starts
/// a stopped server.
pub(super) fn restart(
    env: &Env,
    bin_dir: &Path,
    layout: &Layout,
    port: u16,
    settings: &[(String, String)],
) -> Result<(), TestingError> {
    if live_postmaster(&layout.data).is_none() {
        clear_leftovers(env, bin_dir, layout);
    }
    let offset = log_len(&layout.log);
    let mut command = pg_command_in(bin_dir, env.run_as.as_ref(), "pg_ctl", &layout.dir);
    command
        .arg("-D")
        .arg(&layout.data)
        .arg("-l")
        .arg(&layout.log)
        .args(["-m", "fast", "-w", "-t", PG_CTL_TIMEOUT, "-o"])
        .arg(server_options(port, &layout.socket_dir, settings))
        .arg("restart");
    let out = run(&mut command, "pg_ctl restart")?;
    if out.status.success() {
        Ok(())
    } else {
        Err(start_error(
            layout,
            output_text(&out),
            log_tail(&layout.log, offset),
        ))
    }
}

/// `pg_ctl stop -m <mode> -w`; nothing to do when no server runs.
pub(super) fn pg_ctl_stop(
    env: &Env,
    bin_dir: &Path,
    layout: &Layout,
    mode: &str,
) -> Result<(), TestingError> {
    if !layout.data.join("postmaster.pid").exists() {
        return Ok(());
    }
    let mut command = pg_command_in(bin_dir, env.run_as.as_ref(), "pg_ctl", &layout.dir);
    command
        .arg("-D")
        .arg(&layout.data)
        .args(["-m", mode, "-w", "-t", PG_CTL_TIMEOUT, "stop"]);
    let out = run(&mut command, "pg_ctl stop")?;
    if out.status.success() || live_postmaster(&layout.data).is_none() {
        return Ok(());
    }
    Err(TestingError::CommandFailed {
        command: describe(&command),
        status: out.status.to_string(),
        output: output_text(&out),
    })
}

/// `pg_ctl promote -w`: a standby leaves recovery and accepts writes; returns
/// once it does.
pub(super) fn pg_ctl_promote(
    env: &Env,
    bin_dir: &Path,
    layout: &Layout,
) -> Result<(), TestingError> {
    let mut command = pg_command_in(bin_dir, env.run_as.as_ref(), "pg_ctl", &layout.dir);
    command
        .arg("-D")
        .arg(&layout.data)
        .args(["-w", "-t", PG_CTL_TIMEOUT, "promote"]);
    let out = run(&mut command, "pg_ctl promote")?;
    if out.status.success() {
        return Ok(());
    }
    Err(TestingError::CommandFailed {
        command: describe(&command),
        status: out.status.to_string(),
        output: output_text(&out),
    })
}

/// Whether the server of `layout` runs and answers a query on `port`
/// through `socket_dir`.
pub(super) fn is_ready(layout: &Layout, socket_dir: &Path, port: u16) -> bool {
    if live_postmaster(&layout.data).is_none() {
        return false;
    }
    let target = Target::socket(socket_dir, port);
    query::block_on(|| target.text("SELECT 'ready'")).is_ok_and(|answer| answer == "ready")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        let options = server_options(
            5433,
            Path::new("/x/y"),
            &[("search_path".into(), "'$user', public".into())],
        );
        assert!(options.starts_with("-c 'fsync=off' "), "{options}");
        assert!(options.contains("-c 'port=5433'"), "{options}");
        assert!(
            options.contains("-c 'unix_socket_directories=/x/y'"),
            "{options}"
        );
        assert!(
            options.ends_with(r"-c 'search_path='\''$user'\'', public'"),
            "{options}"
        );
    }

    #[test]
    fn long_or_odd_socket_directories_move_to_tmp() {
        let short = Path::new("/work/main/target/pglock-pg/shared");
        assert_eq!(socket_dir_for(short), short);

        let long = PathBuf::from(format!("/{}/pglock-pg/shared", "d".repeat(90)));
        let moved = socket_dir_for(&long);
        assert!(moved.starts_with("/tmp"), "{moved:?}");
        assert_eq!(moved, socket_dir_for(&long), "stable");
        assert!(moved.join(".s.PGSQL.65535").as_os_str().len() < MAX_SOCKET_PATH);

        let spaced = Path::new("/home/me/my project/target/pglock-pg/shared");
        assert!(socket_dir_for(spaced).starts_with("/tmp"));
    }

    #[test]
    fn taken_ports_are_recognised() {
        assert!(port_taken(
            "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use"
        ));
        assert!(!port_taken("FATAL:  data directory has wrong ownership"));
    }
}
