//! Running the `pglock` binary as an operator would, against a database of
//! the test's own (so no other test's locks show up in its listings), and
//! staging the locks it should see.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pglock::{Mode, Namespace, SessionGuard};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Postgres, Transaction};
use tokio::task::JoinHandle;

pub static JOBS: Namespace = Namespace::named("cli:jobs");
pub static TENANTS: Namespace = Namespace::named_pair("cli:tenants");

/// A name no other test, run or process uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The test server's URL (`DATABASE_URL`, or the throwaway server's).
pub fn server_url() -> String {
    pglock::testing::database_url().expect("a test server")
}

/// `url` with another user, password or database. Keeps everything else
/// (the socket directory in the query, the port).
pub fn url_with(
    url: &str,
    user: Option<&str>,
    password: Option<&str>,
    database: Option<&str>,
) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(authority_end);
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (Some(userinfo), host),
        None => (None, authority),
    };
    let (old_user, old_password) = match userinfo {
        Some(info) => match info.split_once(':') {
            Some((user, password)) => (Some(user), Some(password)),
            None => (Some(info), None),
        },
        None => (None, None),
    };
    let user = user.or(old_user);
    let password = password.or(old_password);
    let userinfo = match (user, password) {
        (Some(user), Some(password)) => format!("{user}:{password}@"),
        (Some(user), None) => format!("{user}@"),
        (None, _) => String::new(),
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let path = match database {
        Some(database) => format!("/{database}"),
        None => path.to_owned(),
    };
    let query = query.map(|query| format!("?{query}")).unwrap_or_default();
    format!("{scheme}://{userinfo}{host}{path}{query}")
}

/// A database created for one test, dropped (with whoever is still
/// connected) by [`TestDatabase::drop_now`].
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        Self::create_on(&server_url()).await
    }

    pub async fn create_on(admin_url: &str) -> TestDatabase {
        let name = unique("pglock_cli");
        let mut admin = PgConnection::connect(admin_url).await.expect("connect");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        TestDatabase {
            url: url_with(admin_url, None, None, Some(&name)),
            name,
            admin_url: admin_url.to_owned(),
        }
    }

    /// A connection that names itself `application` in pg_stat_activity.
    pub async fn connect(&self, application: &str) -> PgConnection {
        self.options(application).connect().await.expect("connect")
    }

    /// A transaction on a connection of its own that names itself
    /// `application`, and its backend's pid.
    pub async fn begin(&self, application: &str) -> (Transaction<'static, Postgres>, i32) {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(self.options(application))
            .await
            .expect("connect");
        let mut tx = pool.begin().await.expect("begin");
        let pid = backend_pid(&mut tx).await;
        (tx, pid)
    }

    fn options(&self, application: &str) -> PgConnectOptions {
        let options: PgConnectOptions = self.url.parse().expect("a URL");
        options.application_name(application)
    }

    pub async fn drop_now(self) {
        let mut admin = PgConnection::connect(&self.admin_url)
            .await
            .expect("connect");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await
        .expect("drop the test database");
    }
}

/// What one run of `pglock` did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `pglock` with `args` and no database settings but `env`: no
/// `DATABASE_URL`, no `PG*` variable, no `NO_COLOR` from the test's own
/// environment. Backtraces are asked for, so a panic could not hide.
pub fn pglock(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pglock"));
    command.args(args);
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("PG") || text == "DATABASE_URL" || text == "NO_COLOR" {
            command.env_remove(&name);
        }
    }
    command.env("RUST_BACKTRACE", "1");
    command.envs(env.iter().copied());
    finish(command.output().expect("run pglock"))
}

pub fn finish(output: Output) -> Run {
    let run = Run {
        code: output.status.code().expect("an exit code, not a signal"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 output"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 errors"),
    };
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("backtrace"),
        "no panic: {run:?}"
    );
    run
}

/// Runs `pglock ARGS --database-url URL`.
pub fn pglock_on(url: &str, args: &[&str]) -> Run {
    let mut all = args.to_vec();
    all.extend(["--database-url", url]);
    pglock(&all, &[])
}

/// Asserts that `run` failed with `code` and said why in exactly one line
/// on stderr that contains `expected`.
pub fn assert_fails(run: &Run, code: i32, expected: &str) {
    assert_eq!(run.code, code, "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "one line: {run:?}");
    assert!(run.stderr.starts_with("pglock: "), "{run:?}");
    assert!(run.stderr.contains(expected), "`{expected}` in {run:?}");
}

/// The rows of an ASCII table as header -> cell maps.
pub fn table_rows(stdout: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = stdout
        .lines()
        .filter(|line| line.starts_with('|'))
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_owned())
                .collect::<Vec<_>>()
        });
    let header = lines.next().expect("a header row");
    lines
        .map(|cells| header.iter().cloned().zip(cells).collect())
        .collect()
}

/// The row of `pid` in a table.
pub fn row_of(rows: &[BTreeMap<String, String>], pid: i32) -> &BTreeMap<String, String> {
    rows.iter()
        .find(|row| row["PID"] == pid.to_string())
        .unwrap_or_else(|| panic!("a row for pid {pid} in {rows:#?}"))
}

/// The JSON objects of `pglock locks --json`.
pub fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The JSON object of `pid`'s lock.
pub fn json_of(objects: &[serde_json::Value], pid: i32) -> &serde_json::Value {
    objects
        .iter()
        .find(|object| object["pid"] == pid)
        .unwrap_or_else(|| panic!("an object for pid {pid} in {objects:#?}"))
}

pub async fn backend_pid(conn: &mut PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Polls `condition` (a boolean SQL expression, `$1` bound to `pid`) on
/// `conn` until it holds: the state a test waits for, observed on the
/// server. Fails after 30 s.
pub async fn wait_until(conn: &mut PgConnection, pid: i32, condition: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let sql = format!("SELECT {condition}");
    loop {
        let holds: Option<bool> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
            .bind(pid)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        if holds == Some(true) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{condition} for pid {pid} within 30s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `pid` waits for an advisory lock, as pg_locks shows it.
pub async fn wait_until_waiting(conn: &mut PgConnection, pid: i32) {
    wait_until(
        conn,
        pid,
        "EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = $1 AND NOT granted)",
    )
    .await;
}

/// The locks of the specification's scenario, in a database of their own:
///
/// - `holder` holds `cli:jobs` key 7 exclusively as a session lock, idle
///   outside a transaction;
/// - `first_waiter` waits for it, and `second_waiter` waits behind the
///   first;
/// - `stuck` holds `cli:jobs` key 8 and stays idle in transaction;
/// - `readers` share `cli:tenants` key 42 (the pair key space), idle in
///   transaction too.
pub struct Scenario {
    pub holder: i32,
    pub first_waiter: i32,
    pub second_waiter: i32,
    pub stuck: i32,
    pub readers: [i32; 2],
    /// The client address of each of those connections, as the server sees
    /// it (`None` over a unix socket).
    pub client_addr: Option<String>,
    observer: PgConnection,
    _holder: SessionGuard,
    _stuck: Transaction<'static, Postgres>,
    _readers: Vec<Transaction<'static, Postgres>>,
    waiters: Vec<JoinHandle<()>>,
}

impl Scenario {
    pub async fn stage(database: &TestDatabase) -> Scenario {
        let mut observer = database.connect("cli-observer").await;
        let client_addr: Option<String> = sqlx::query_scalar("SELECT host(inet_client_addr())")
            .fetch_one(&mut observer)
            .await
            .unwrap();

        let mut conn = database.connect("cli-holder").await;
        let holder = backend_pid(&mut conn).await;
        let holder_guard = JOBS.session_lock(&7_i64).acquire(conn).await.unwrap();

        let mut waiters = Vec::new();
        let mut waiter_pids = Vec::new();
        for application in ["cli-waiter-1", "cli-waiter-2"] {
            let mut conn = database.connect(application).await;
            let pid = backend_pid(&mut conn).await;
            waiters.push(tokio::spawn(async move {
                let mut tx = conn.begin().await.unwrap();
                // Ends when the test drops the task (and with it the
                // connection), or after a minute.
                let _ = JOBS
                    .lock(&7_i64)
                    .timeout(Duration::from_secs(60))
                    .acquire(&mut tx)
                    .await;
            }));
            // One at a time, so the second queues behind the first.
            wait_until_waiting(&mut observer, pid).await;
            waiter_pids.push(pid);
        }

        let (mut stuck_tx, stuck) = database.begin("cli-stuck").await;
        JOBS.lock(&8_i64).acquire(&mut stuck_tx).await.unwrap();

        let mut readers = Vec::new();
        let mut reader_pids = Vec::new();
        for application in ["cli-reader-1", "cli-reader-2"] {
            let (mut tx, pid) = database.begin(application).await;
            reader_pids.push(pid);
            TENANTS
                .lock(&42_i64)
                .with_mode(Mode::Shared)
                .acquire(&mut tx)
                .await
                .unwrap();
            readers.push(tx);
        }
        // Every holder has gone idle once its lock statement has returned.
        for pid in [stuck, reader_pids[0], reader_pids[1]] {
            wait_until(
                &mut observer,
                pid,
                "(SELECT state = 'idle in transaction' FROM pg_stat_activity WHERE pid = $1)",
            )
            .await;
        }

        Scenario {
            holder,
            first_waiter: waiter_pids[0],
            second_waiter: waiter_pids[1],
            stuck,
            readers: [reader_pids[0], reader_pids[1]],
            client_addr,
            observer,
            _holder: holder_guard,
            _stuck: stuck_tx,
            _readers: readers,
            waiters,
        }
    }

    /// Waits until `pid` has been idle in transaction, or waiting, for
    /// longer than `at_least`, as the server sees it.
    pub async fn wait_until_older_than(&mut self, pid: i32, at_least: Duration) {
        let condition = format!(
            "(SELECT clock_timestamp() - coalesce(l.waitstart, a.state_change) \
                     > interval '{} milliseconds' \
              FROM pg_stat_activity a \
              LEFT JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'advisory' AND NOT l.granted \
              WHERE a.pid = $1)",
            at_least.as_millis()
        );
        wait_until(&mut self.observer, pid, &condition).await;
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        for waiter in &self.waiters {
            waiter.abort();
        }
    }
}
