//! PgBouncer in front of a test server: configured, started and stopped by
//! the kit, for tests of what a connection pooler does to advisory locks.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::env::{Env, clean_env, env, find_program};
use super::files;
use super::programs::{
    self, PORT_ATTEMPTS, describe, free_port, log_len, output_text, release_numbers, version_line,
};
use super::query::{self, Target};
use super::{TestServer, TestingError};

/// How long a start may take before it counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stop may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The first PgBouncer release that tracks protocol-level named prepared
/// statements in transaction pooling mode (`max_prepared_statements`).
const PREPARED_STATEMENTS_SINCE: (u32, u32) = (1, 21);
/// Environment variable that turns a missing `pgbouncer` into a failure of
/// the tests that need it, instead of a skip ([`PgBouncer::installed_or_skip`]).
const REQUIRE_VAR: &str = "PGLOCK_REQUIRE_PGBOUNCER";
/// What to run to get PgBouncer, in every message that says it is missing.
const INSTALL_HINT: &str = "Debian/Ubuntu: `apt-get install pgbouncer`";

/// When PgBouncer gives a client's server connection back to its pool
/// (`pool_mode`).
///
/// ```
/// use pglock_testing::PoolMode;
///
/// assert_eq!(PoolMode::Transaction.to_string(), "transaction"); // as written in pgbouncer.ini
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolMode {
    /// When the client disconnects: a client keeps one backend throughout,
    /// which `server_reset_query` (`DISCARD ALL`) cleans afterwards.
    Session,
    /// At the end of each transaction: consecutive transactions (and
    /// statements outside a transaction) of one client may run on different
    /// backends.
    Transaction,
    /// After each statement; multi-statement transactions are refused.
    Statement,
}

impl PoolMode {
    fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

impl fmt::Display for PoolMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to configure a [`PgBouncer`].
///
/// ```
/// use pglock_testing::{PgBouncerOptions, PoolMode};
///
/// let options = PgBouncerOptions::new()
///     .pool_mode(PoolMode::Transaction)
///     .pool_size(4)
///     .setting("server_idle_timeout", "60");
/// ```
#[derive(Clone, Debug)]
pub struct PgBouncerOptions {
    pool_mode: PoolMode,
    pool_size: u32,
    reset_prepared_statements: Option<bool>,
    settings: Vec<(String, String)>,
}

impl Default for PgBouncerOptions {
    /// Transaction pooling, with at most 4 server connections per database
    /// and user: fewer than a test's clients, so that they share backends.
    ///
    /// ```no_run
    /// # fn run(server: &pglock_testing::TestServer) -> Result<(), pglock_testing::TestingError> {
    /// use pglock_testing::{PgBouncer, PgBouncerOptions, PoolMode};
    /// let bouncer = PgBouncer::start_with(server, PgBouncerOptions::default())?;
    /// assert_eq!(bouncer.pool_mode(), PoolMode::Transaction);
    /// # Ok(()) }
    /// ```
    fn default() -> Self {
        Self {
            pool_mode: PoolMode::Transaction,
            pool_size: 4,
            reset_prepared_statements: None,
            settings: Vec::new(),
        }
    }
}

impl PgBouncerOptions {
    /// The defaults: see [`PgBouncerOptions::default`].
    ///
    /// ```
    /// let options = pglock_testing::PgBouncerOptions::new();
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The pooling mode (`pool_mode`).
    ///
    /// ```
    /// use pglock_testing::{PgBouncerOptions, PoolMode};
    /// let options = PgBouncerOptions::new().pool_mode(PoolMode::Session);
    /// ```
    pub fn pool_mode(mut self, mode: PoolMode) -> Self {
        self.pool_mode = mode;
        self
    }

    /// The most server connections per database and user
    /// (`default_pool_size`; at least 1).
    ///
    /// ```
    /// let options = pglock_testing::PgBouncerOptions::new().pool_size(2);
    /// ```
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// Whether PgBouncer deallocates every prepared statement of a backend
    /// each time it takes the backend back from a client (`server_reset_query
    /// = DEALLOCATE ALL` with `server_reset_query_always = 1`). By default it
    /// does in transaction and statement pooling before PgBouncer 1.21: see
    /// [`PgBouncer`]'s section on prepared statements. Turning it off there
    /// brings back the collisions of sqlx's statement names between clients.
    ///
    /// ```
    /// let options = pglock_testing::PgBouncerOptions::new().reset_prepared_statements(false);
    /// ```
    pub fn reset_prepared_statements(mut self, reset: bool) -> Self {
        self.reset_prepared_statements = Some(reset);
        self
    }

    /// Adds a line `name = value` to the `[pgbouncer]` section, after the
    /// kit's own (leave `listen_*`, `unix_socket_dir`, `auth_*`, `logfile`
    /// and `pidfile` to the kit).
    ///
    /// ```
    /// let options = pglock_testing::PgBouncerOptions::new().setting("verbose", "1");
    /// ```
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// A PgBouncer in front of a [`TestServer`], listening on a free port of
/// 127.0.0.1, started by [`PgBouncer::start`] and stopped when dropped.
///
/// It runs as the server's user (PgBouncer refuses root as PostgreSQL
/// does), with `auth_type = trust` for the user `postgres`, no unix socket,
/// and every database of the server (`* = ...`). Its files (`pgbouncer.ini`,
/// `userlist.txt`, `pgbouncer.log`, `pgbouncer.pid`) are in a `pgbouncer-<n>`
/// directory of the server's directory; if the test process dies without
/// dropping it, the server's watchdog stops it with the server.
///
/// The machine needs PgBouncer (Debian/Ubuntu: `apt-get install pgbouncer`);
/// without it, starting fails with [`TestingError::ToolNotFound`]. A test
/// that needs it starts with [`PgBouncer::installed_or_skip`], which skips
/// it on a machine without PgBouncer unless `PGLOCK_REQUIRE_PGBOUNCER` is set.
///
/// # Prepared statements
///
/// sqlx runs every query with parameters as a *named* prepared statement
/// (`sqlx_s_1`, `sqlx_s_2`, ... counted per client connection), parsed in one
/// round trip and run in the next. Before PgBouncer 1.21, a named statement
/// stays on the backend that parsed it, and in transaction pooling that
/// backend serves other clients next: their own `sqlx_s_1` then fails with
/// "prepared statement already exists", and a client whose next
/// transaction lands on another backend finds its cached statement missing,
/// or finds another client's statement under that name. sqlx 0.9's
/// `statement-cache-capacity=0` does not help alone: it still names each
/// statement, only never reuses (nor closes) it.
///
/// So in transaction and statement pooling before 1.21, the kit makes
/// statements live exactly as long as a transaction: [`url`](Self::url)
/// turns sqlx's statement cache off, and PgBouncer deallocates every
/// statement of a backend when a client gives it back (`server_reset_query
/// = DEALLOCATE ALL`, `server_reset_query_always = 1`). Everything inside a
/// transaction then works (a transaction keeps its backend), which is how
/// pglock's transaction-scoped locks run. A statement with parameters
/// *outside* a transaction fails loudly ("prepared statement ... does not
/// exist"): its parse and its execution are two round trips, and the backend
/// is given back in between. From 1.21 on, the kit sets
/// `max_prepared_statements` instead and PgBouncer tracks sqlx's named
/// statements itself; [`supports_prepared_statements`](Self::supports_prepared_statements)
/// says which of the two a given PgBouncer does.
///
/// ```no_run
/// use pglock_testing::{PgBouncer, ServerOptions, TestServer};
///
/// let server = TestServer::start(ServerOptions::new())?;
/// let bouncer = PgBouncer::start(&server)?;
/// println!("PgBouncer {} at {}", bouncer.version(), bouncer.url());
/// # Ok::<(), pglock_testing::TestingError>(())
/// ```
#[derive(Debug)]
pub struct PgBouncer {
    dir: PathBuf,
    port: u16,
    pid: u32,
    version: String,
    prepared_statements: bool,
    reset_prepared_statements: bool,
    pool_mode: PoolMode,
}

impl PgBouncer {
    /// Whether a test that needs PgBouncer can run: `true` when the
    /// `pgbouncer` program is installed. When it is not, the test is skipped:
    /// this prints one line saying so and how to install it, and returns
    /// `false`, so that the test returns at once and passes. With
    /// `PGLOCK_REQUIRE_PGBOUNCER` set (to anything but empty or `0`), a
    /// missing PgBouncer fails the test instead: CI sets it, so that its
    /// PgBouncer tests never pass by being skipped.
    ///
    /// The line goes straight to the process's stderr, past the test
    /// harness's output capture, so that `cargo test` shows it although the
    /// test passes:
    ///
    /// ```text
    /// pglock testing: SKIPPED <test>: PgBouncer is not installed (Debian/Ubuntu: `apt-get install pgbouncer`; PGLOCK_REQUIRE_PGBOUNCER=1 makes this a failure)
    /// ```
    ///
    /// # Panics
    ///
    /// When PgBouncer is missing and `PGLOCK_REQUIRE_PGBOUNCER` is set.
    ///
    /// ```no_run
    /// use pglock_testing::{PgBouncer, ServerOptions, TestServer};
    ///
    /// #[test]
    /// fn through_pgbouncer() {
    ///     if !PgBouncer::installed_or_skip() {
    ///         return;
    ///     }
    ///     let server = TestServer::start(ServerOptions::new()).expect("a private server");
    ///     let bouncer = PgBouncer::start(&server).expect("PgBouncer");
    ///     // ...
    /// }
    /// # fn main() {}
    /// ```
    #[track_caller]
    pub fn installed_or_skip() -> bool {
        if find_program("pgbouncer").is_some() {
            return true;
        }
        let required = std::env::var_os(REQUIRE_VAR).is_some_and(|v| !v.is_empty() && v != "0");
        if required {
            panic!(
                "PgBouncer is not installed, and {REQUIRE_VAR} is set, so the tests that need \
                 it must run: install it ({INSTALL_HINT})"
            );
        }
        // libtest names each test's thread after the test.
        let thread = thread::current();
        let test = thread
            .name()
            .filter(|name| *name != "main")
            .unwrap_or("a test");
        // Past the harness's capture (which takes only `print!` and
        // `eprint!`): a skip must be seen, not only a pass.
        let _ = writeln!(
            std::io::stderr().lock(),
            "pglock testing: SKIPPED {test}: PgBouncer is not installed ({INSTALL_HINT}; \
             {REQUIRE_VAR}=1 makes this a failure)"
        );
        false
    }

    /// Starts a PgBouncer in transaction pooling mode in front of `server`,
    /// with the [default options](PgBouncerOptions::default). Blocks until a
    /// query through it has succeeded.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use pglock_testing::{PgBouncer, TestServer};
    ///
    /// let bouncer = PgBouncer::start(TestServer::shared()?)?;
    /// // Clients of this pool share PgBouncer's 4 backends, transaction by transaction.
    /// let pool = sqlx::PgPool::connect(&bouncer.url()).await?;
    /// # Ok(()) }
    /// ```
    pub fn start(server: &TestServer) -> Result<PgBouncer, TestingError> {
        Self::start_with(server, PgBouncerOptions::new())
    }

    /// Starts a PgBouncer in front of `server`, configured by `options`.
    ///
    /// ```no_run
    /// use pglock_testing::{PgBouncer, PgBouncerOptions, PoolMode, ServerOptions, TestServer};
    ///
    /// let server = TestServer::start(ServerOptions::new())?;
    /// let bouncer = PgBouncer::start_with(
    ///     &server,
    ///     PgBouncerOptions::new().pool_mode(PoolMode::Session).pool_size(2),
    /// )?;
    /// # Ok::<(), pglock_testing::TestingError>(())
    /// ```
    pub fn start_with(
        server: &TestServer,
        options: PgBouncerOptions,
    ) -> Result<PgBouncer, TestingError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let env = env()?;
        let program = find_program("pgbouncer").ok_or(TestingError::ToolNotFound {
            tool: "pgbouncer",
            purpose: "tests of advisory locks behind a connection pooler start one (Debian/Ubuntu: \
                      `apt-get install pgbouncer`; the project's .ci/run installs it)",
        })?;
        let version = version_of(&program)?;
        let prepared_statements = parse_version(&version)
            .is_some_and(|(major, minor)| (major, minor) >= PREPARED_STATEMENTS_SINCE);
        let reset_prepared_statements = options
            .reset_prepared_statements
            .unwrap_or(options.pool_mode != PoolMode::Session && !prepared_statements);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = server
            .layout
            .dir
            .join(format!("pgbouncer-{}-{n}", std::process::id()));
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            // A failed attempt's directory went with its `PgBouncer`.
            files::remove_tree(&dir)?;
            env.make_dir(&dir)?;
            env.write_file(&dir.join("userlist.txt"), "\"postgres\" \"\"\n")?;
            let port = free_port()?;
            let config = config_text(
                server,
                &dir,
                port,
                &options,
                prepared_statements.then_some(200),
                reset_prepared_statements,
            );
            env.write_file(&dir.join("pgbouncer.ini"), &config)?;
            let mut bouncer = PgBouncer {
                dir: dir.clone(),
                port,
                pid: 0,
                version: version.clone(),
                prepared_statements,
                reset_prepared_statements,
                pool_mode: options.pool_mode,
            };
            match bouncer.launch(env, &program) {
                Ok(pid) => {
                    bouncer.pid = pid;
                    return Ok(bouncer);
                }
                Err((error, port_taken)) if port_taken => last_error = Some(error),
                Err((error, _)) => return Err(error),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    /// Starts the daemon and waits until a query through it succeeds;
    /// on failure (having stopped what it started), says whether the port
    /// was taken.
    fn launch(&self, env: &Env, program: &Path) -> Result<u32, (TestingError, bool)> {
        let log_offset = log_len(&self.log_file());
        let _ = fs::remove_file(self.pid_file());
        let mut command = match &env.run_as {
            Some(user) => {
                let mut command = Command::new(&user.runuser);
                command.arg("-u").arg(&user.name).arg("--").arg(program);
                command
            }
            None => Command::new(program),
        };
        clean_env(&mut command);
        command
            .args(["-d", "-q"])
            .arg(self.config_file())
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        let failed = |reason: String| {
            let tail = programs::log_tail(&self.log_file(), log_offset);
            let port_taken = tail.contains("Address already in use");
            (
                TestingError::PgBouncerFailed {
                    config_file: self.config_file(),
                    log_file: self.log_file(),
                    reason,
                    log_tail: tail,
                },
                port_taken,
            )
        };
        let out = programs::run(&mut command, "pgbouncer").map_err(|e| (e, false))?;
        if !out.status.success() {
            return Err(failed(format!(
                "`{}` failed ({}): {}",
                describe(&command),
                out.status,
                output_text(&out).trim_end()
            )));
        }
        // The daemon writes its pid file, binds its port and may still fail
        // after the command returned: wait for a query through it.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let pid = self.live_pid().filter(|pid| is_pgbouncer(*pid));
            let probe = match pid {
                Some(_) => self.probe(),
                None => Err(TestingError::io(
                    "finding the daemon",
                    std::io::Error::other("no running pgbouncer with the pid in its pid file"),
                )),
            };
            match (pid, probe) {
                (Some(pid), Ok(())) => return Ok(pid),
                (pid, Err(e)) if Instant::now() >= deadline || self.log_has_fatal(log_offset) => {
                    if let Some(pid) = pid {
                        stop_pid(pid);
                    }
                    return Err(failed(format!(
                        "no query through it succeeded (waited up to {START_TIMEOUT:?}): {e}"
                    )));
                }
                _ => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Whether PgBouncer logged a fatal error since `offset`.
    fn log_has_fatal(&self, offset: u64) -> bool {
        let tail = programs::log_tail(&self.log_file(), offset);
        tail.contains(" FATAL ") || tail.contains("Address already in use")
    }

    /// One query through PgBouncer (simple protocol: any pooling mode
    /// takes it).
    fn probe(&self) -> Result<(), TestingError> {
        let target = Target::tcp(self.port, "PgBouncer");
        let answer = query::block_on(|| target.text("SELECT 'pgbouncer ok'"))?;
        if answer == "pgbouncer ok" {
            Ok(())
        } else {
            Err(TestingError::QueryFailed {
                server: format!("PgBouncer at 127.0.0.1:{}", self.port),
                query: "SELECT 'pgbouncer ok'".into(),
                message: format!("unexpected answer {answer:?}"),
            })
        }
    }

    /// The URL to connect sqlx through PgBouncer:
    /// `postgres://postgres@127.0.0.1:<port>/postgres?sslmode=disable`, plus
    /// `&statement-cache-capacity=0` in transaction and statement pooling
    /// when this PgBouncer can't track named prepared statements (before
    /// 1.21; see the type's docs).
    pub fn url(&self) -> String {
        let mut url = format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        );
        if self.pool_mode != PoolMode::Session && !self.prepared_statements {
            url.push_str("&statement-cache-capacity=0");
        }
        url
    }

    /// The port PgBouncer listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// PgBouncer's version, such as `1.18.0`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether this PgBouncer tracks named prepared statements in
    /// transaction pooling (1.21 and later, with `max_prepared_statements`
    /// set by the kit).
    pub fn supports_prepared_statements(&self) -> bool {
        self.prepared_statements
    }

    /// Whether PgBouncer deallocates a backend's prepared statements each
    /// time a client gives it back; see
    /// [`PgBouncerOptions::reset_prepared_statements`].
    pub fn resets_prepared_statements(&self) -> bool {
        self.reset_prepared_statements
    }

    /// The pooling mode it runs in.
    pub fn pool_mode(&self) -> PoolMode {
        self.pool_mode
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its configuration file.
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("pgbouncer.ini")
    }

    /// Its log file.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("pgbouncer.log")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("pgbouncer.pid")
    }

    fn live_pid(&self) -> Option<u32> {
        fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Stops PgBouncer at once (SIGTERM: open client and server connections
    /// are closed, and the server ends their sessions) and waits until it
    /// has exited. Dropping it does the same.
    ///
    /// ```no_run
    /// # fn run(bouncer: pglock_testing::PgBouncer) {
    /// bouncer.stop();
    /// # }
    /// ```
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if self.pid != 0 && is_pgbouncer(self.pid) {
            stop_pid(self.pid);
        }
        if let Err(e) = files::remove_tree(&self.dir) {
            eprintln!("pglock testing: {e}");
        }
    }
}

/// Sends SIGTERM to a PgBouncer daemon and waits until it is gone.
fn stop_pid(pid: u32) {
    let sent = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !sent {
        return;
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while is_pgbouncer(pid) {
        if Instant::now() >= deadline {
            eprintln!("pglock testing: PgBouncer (pid {pid}) did not stop within {STOP_TIMEOUT:?}");
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `pid` is a running PgBouncer (not a zombie, not a recycled pid).
fn is_pgbouncer(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state ...`
    let Some((comm, rest)) = stat
        .split_once(" (")
        .and_then(|(_, rest)| rest.rsplit_once(") "))
    else {
        return false;
    };
    comm == "pgbouncer" && !rest.starts_with('Z')
}

/// `PgBouncer 1.18.0` → `1.18.0`.
fn version_of(program: &Path) -> Result<String, TestingError> {
    let line = version_line(program)?;
    match line.strip_prefix("PgBouncer ") {
        Some(version) => Ok(version.trim().to_owned()),
        None => Err(TestingError::CommandFailed {
            command: format!("{} --version", program.display()),
            status: "exit status: 0".into(),
            output: format!("{line}\n(expected `PgBouncer <version>`)"),
        }),
    }
}

/// `1.18.0` → `(1, 18)`.
fn parse_version(version: &str) -> Option<(u32, u32)> {
    match release_numbers(version)?.as_slice() {
        [major, minor, ..] => Some((*major, *minor)),
        _ => None,
    }
}

fn config_text(
    server: &TestServer,
    dir: &Path,
    port: u16,
    options: &PgBouncerOptions,
    max_prepared_statements: Option<u32>,
    reset_prepared_statements: bool,
) -> String {
    let mut lines = vec![
        "[databases]".to_owned(),
        format!(
            "* = host={} port={}",
            server.socket_dir().display(),
            server.port()
        ),
        String::new(),
        "[pgbouncer]".to_owned(),
        "listen_addr = 127.0.0.1".to_owned(),
        format!("listen_port = {port}"),
        "unix_socket_dir =".to_owned(),
        "auth_type = trust".to_owned(),
        format!("auth_file = {}", dir.join("userlist.txt").display()),
        "admin_users = postgres".to_owned(),
        format!("pool_mode = {}", options.pool_mode),
        format!("default_pool_size = {}", options.pool_size),
        "min_pool_size = 0".to_owned(),
        "reserve_pool_size = 0".to_owned(),
        "max_client_conn = 200".to_owned(),
        // sqlx sends it at start-up; PgBouncer refuses unknown parameters.
        "ignore_startup_parameters = extra_float_digits".to_owned(),
        format!("logfile = {}", dir.join("pgbouncer.log").display()),
        format!("pidfile = {}", dir.join("pgbouncer.pid").display()),
    ];
    if let Some(max) = max_prepared_statements {
        lines.push(format!("max_prepared_statements = {max}"));
    }
    if reset_prepared_statements {
        lines.push("server_reset_query = DEALLOCATE ALL".to_owned());
        lines.push("server_reset_query_always = 1".to_owned());
    }
    lines.extend(
        options
            .settings
            .iter()
            .map(|(name, value)| format!("{name} = {value}")),
    );
    lines.push(String::new());
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_parsed() {
        assert_eq!(parse_version("1.18.0"), Some((1, 18)));
        assert_eq!(parse_version("1.21.0"), Some((1, 21)));
        assert_eq!(parse_version("1.24rc1"), Some((1, 24)));
        assert_eq!(parse_version("garbage"), None);
        assert!((1, 18) < PREPARED_STATEMENTS_SINCE);
        assert!((1, 21) >= PREPARED_STATEMENTS_SINCE);
        assert!((2, 0) >= PREPARED_STATEMENTS_SINCE);
    }
}
