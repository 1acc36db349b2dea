//! Shared helpers of the integration tests: a pool on the test server, fresh
//! namespaces, observers of what the server shows, one polling wait, and
//! the parties of a contention (a holder, a waiter, the conflict expected).
#![allow(dead_code, unreachable_pub)]

pub mod capture;
pub mod netns;
pub mod proxy;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pglock::testing::LockHolder;
use pglock::{
    Acquired, Conflict, ConflictCause, Error, LockId, LockManager, ManagedGuard, Mode, Namespace,
    SessionGuard, SessionLock, XactLock, pg_locks,
};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres, Transaction};
use tokio::task::JoinHandle;

/// A pool on the test run's server (`DATABASE_URL`, or the throwaway one).
pub async fn pool() -> PgPool {
    pool_of(16).await
}

/// A pool of at most `connections` connections on the test run's server.
pub async fn pool_of(connections: u32) -> PgPool {
    let url = pglock::testing::database_url().expect("a test database");
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(60))
        .connect(&url)
        .await
        .expect("connect to the test database")
}

/// A namespace no other test uses, leaked so that it lives as long as a
/// `static` would.
pub fn namespace(test: &str) -> &'static Namespace {
    let name = format!("test:{test}:{}", uuid::Uuid::new_v4());
    Box::leak(Box::new(Namespace::try_named(name).expect("a valid name")))
}

/// A fresh namespace for `test`, and the id of its key `key`.
pub fn fresh_key(test: &str, key: i64) -> (&'static Namespace, LockId) {
    let ns = namespace(test);
    (ns, ns.id(&key))
}

/// Every advisory lock on `id` in this database: (pid, mode, granted).
pub async fn locks_on(pool: &PgPool, id: LockId) -> Vec<(i32, String, bool)> {
    let (encoded, objsubid) = pg_locks::encode(id);
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT l.pid, l.mode, l.granted FROM pg_locks l \
         WHERE {} AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         ORDER BY l.granted DESC, l.pid",
        pg_locks::MATCHES
    )))
    .bind(encoded)
    .bind(objsubid)
    .fetch_all(pool)
    .await
    .expect("read pg_locks")
}

/// The pids that hold `id` (granted).
pub async fn holders(pool: &PgPool, id: LockId) -> Vec<i32> {
    locks_on(pool, id)
        .await
        .into_iter()
        .filter(|(_, _, granted)| *granted)
        .map(|(pid, _, _)| pid)
        .collect()
}

/// Polls `pg_locks` until `count` backends wait for `id`, and returns
/// their pids; panics after 30 s.
pub async fn wait_for_waiters(pool: &PgPool, id: LockId, count: usize) -> Vec<i32> {
    let waiters = pglock::testing::wait_for_waiters(pool, id, count, Duration::from_secs(30))
        .await
        .expect("read pg_locks");
    assert!(
        waiters.len() >= count,
        "timed out waiting for {count} waiter(s) on {id}; saw {waiters:?}"
    );
    waiters
}

/// The backend pid of a connection, through the simple protocol (so that it
/// prepares nothing, as a connection through a transaction pooler needs).
pub async fn backend_pid(conn: &mut sqlx::PgConnection) -> i32 {
    let row = sqlx::raw_sql("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .expect("read pg_backend_pid");
    sqlx::Row::try_get(&row, 0).expect("an int4")
}

/// `current_setting('lock_timeout')` on a connection.
pub async fn lock_timeout(conn: &mut sqlx::PgConnection) -> String {
    sqlx::query_scalar("SELECT current_setting('lock_timeout')")
        .fetch_one(conn)
        .await
        .expect("read lock_timeout")
}

/// Holds `id` exclusively from its own backend until some other backend
/// waits for it, then releases it at once: the release is decided on the
/// server, so a waiter with a short `lock_timeout` still gets the lock.
/// Returns once that backend holds the lock. The hold ends after 60 s even
/// if nobody waits, so a test that goes wrong fails instead of hanging.
pub async fn hold_until_awaited(pool: &PgPool, id: LockId) -> tokio::task::JoinHandle<()> {
    let LockId::BigInt(big) = id else {
        panic!("hold_until_awaited takes bigint ids");
    };
    let (encoded, objsubid) = pg_locks::encode(id);
    let encoded_id = pg_locks::ENCODED;
    let mut conn = pool.acquire().await.expect("a connection for the holder");
    let holder_pid = backend_pid(&mut conn).await;
    let handle = tokio::spawn(async move {
        // The DO block is its own transaction: the lock ends with it.
        let sql = format!(
            "DO $$ BEGIN \
               PERFORM pg_advisory_xact_lock(({big})::int8); \
               LOOP \
                 EXIT WHEN EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' \
                   AND NOT l.granted AND l.objsubid = {objsubid} \
                   AND {encoded_id} = ({encoded})::int8) \
                   OR clock_timestamp() > statement_timestamp() + interval '60 s'; \
                 PERFORM pg_sleep(0.001); \
               END LOOP; \
             END $$"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .expect("hold the lock until it is awaited");
    });
    eventually(
        Duration::from_secs(30),
        "the holder takes the lock",
        || async { holders(pool, id).await.contains(&holder_pid) },
    )
    .await;
    handle
}

/// Lets this process find `key` busy once: its next acquisitions try and,
/// when the lock is busy, wait in one statement (the runtime remembers the
/// locks it found busy lately).
pub async fn find_busy_once(pool: &PgPool, ns: &'static Namespace, key: i64) {
    let holder = pglock::testing::hold_lock(pool, ns, &key, pglock::Mode::Exclusive)
        .await
        .expect("hold the lock");
    let mut tx = pool.begin().await.expect("a transaction");
    let busy = ns.lock(&key).no_wait().acquire(&mut tx).await;
    assert!(matches!(busy, Err(pglock::Error::Busy(_))), "{busy:?}");
    tx.rollback().await.expect("roll back");
    holder.release().await.expect("release the lock");
}

/// Holds `key` of `ns` exclusively, after this process found it busy once
/// (so that its next acquisitions try and wait in one statement).
pub async fn hold_found_busy(pool: &PgPool, ns: &'static Namespace, key: i64) -> LockHolder {
    find_busy_once(pool, ns, key).await;
    hold(pool, ns, key).await
}

/// Polls until `check` holds; panics with `what` after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls until no backend holds or waits for `id`; panics after 15 s.
pub async fn until_unlocked(pool: &PgPool, id: LockId) {
    eventually(Duration::from_secs(15), "the lock is left", || async {
        locks_on(pool, id).await.is_empty()
    })
    .await;
}

/// Polls until none of `pids` holds or waits for `id` (an abandoned wait
/// has left the server); panics with `what` after 15 s.
pub async fn until_gone(pool: &PgPool, id: LockId, pids: &[i32], what: &str) {
    eventually(Duration::from_secs(15), what, || async {
        !locks_on(pool, id)
            .await
            .iter()
            .any(|(pid, _, _)| pids.contains(pid))
    })
    .await;
}

/// Holds `key` of `ns` exclusively in a transaction of its own until the
/// holder is released or dropped.
pub async fn hold(pool: &PgPool, ns: &Namespace, key: i64) -> LockHolder {
    pglock::testing::hold_lock(pool, ns, &key, Mode::Exclusive)
        .await
        .expect("hold the lock")
}

/// A transaction on `pool` that holds `key` of `ns` exclusively until it
/// ends, for a test that goes on using the holder's session.
pub async fn holding_transaction(
    pool: &PgPool,
    ns: &Namespace,
    key: i64,
) -> Transaction<'static, Postgres> {
    let mut holder = pool.begin().await.expect("a transaction for the holder");
    ns.lock(&key)
        .acquire(&mut holder)
        .await
        .expect("hold the lock");
    holder
}

/// `SET LOCAL {setting} = '{value}'` in the transaction on `conn`.
pub async fn set_local(conn: &mut PgConnection, setting: &str, value: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET LOCAL {setting} = '{value}'"
    )))
    .execute(conn)
    .await
    .unwrap_or_else(|error| panic!("set {setting}: {error}"));
}

/// Acquires `request` in a transaction of its own on a spawned task, which
/// commits once it has the lock; the task ends with the acquisition's
/// outcome.
pub fn spawn_xact_acquire(
    pool: &PgPool,
    request: XactLock<'static>,
) -> JoinHandle<Result<Acquired, Error>> {
    let pool = pool.clone();
    tokio::spawn(async move {
        let mut tx = pool.begin().await?;
        let acquired = request.acquire(&mut tx).await?;
        tx.commit().await?;
        Ok(acquired)
    })
}

/// Acquires `key` of `ns` through `manager` on a spawned task, waiting at
/// most `timeout` when one is given.
pub fn spawn_managed_acquire(
    manager: &Arc<LockManager>,
    ns: &'static Namespace,
    key: i64,
    timeout: Option<Duration>,
) -> JoinHandle<Result<ManagedGuard, Error>> {
    let manager = Arc::clone(manager);
    tokio::spawn(async move {
        let request = manager.lock(ns, &key);
        match timeout {
            Some(timeout) => request.timeout(timeout).acquire().await,
            None => request.acquire().await,
        }
    })
}

/// The conflict `result` failed with; panics unless it is one, of `cause`.
#[track_caller]
pub fn expect_conflict<T: std::fmt::Debug>(
    result: Result<T, Error>,
    cause: ConflictCause,
) -> Conflict {
    match result {
        Err(Error::Conflict(conflict)) => {
            assert_eq!(conflict.cause(), cause, "{conflict}");
            conflict
        }
        other => panic!("expected a conflict ({cause:?}), got {other:?}"),
    }
}

/// The statement backend `pid` runs (or ran last), per `pg_stat_activity`.
pub async fn current_query(pool: &PgPool, pid: i32) -> String {
    sqlx::query_scalar("SELECT query FROM pg_stat_activity WHERE pid = $1")
        .bind(pid)
        .fetch_one(pool)
        .await
        .expect("read pg_stat_activity")
}

/// Holds `key` of `ns` from a transaction of its own, then waits for it on
/// `conn` (in a transaction) for 50 ms: the wait ends in a lock-timeout
/// conflict, returned with the holder.
pub async fn time_out_behind_a_holder(
    pool: &PgPool,
    ns: &'static Namespace,
    key: i64,
    conn: &mut PgConnection,
) -> (LockHolder, Conflict) {
    let holder = hold(pool, ns, key).await;
    let request = ns.lock(&key).timeout(Duration::from_millis(50));
    let outcome = request.acquire(conn).await;
    (holder, expect_conflict(outcome, ConflictCause::LockTimeout))
}

/// Takes the session lock `request` on a connection of `pool`, which the
/// guard then owns.
pub async fn take_session_lock(pool: &PgPool, request: SessionLock<'_>) -> SessionGuard {
    let conn = pool
        .acquire()
        .await
        .expect("a connection for the session lock");
    request.acquire(conn).await.expect("take the session lock")
}

/// Terminates backend `pid`, which must exist.
pub async fn terminate_backend(pool: &PgPool, pid: i32) {
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(pool)
        .await
        .expect("call pg_terminate_backend");
    assert!(terminated, "backend {pid} was there to terminate");
}

/// Creates a table no other test uses, named `{prefix}_{uuid}`, with
/// `columns` (`"v text"`), and returns its name.
pub async fn fresh_table(pool: &PgPool, prefix: &str, columns: &str) -> String {
    let table = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} ({columns})"
    )))
    .execute(pool)
    .await
    .expect("create the table");
    table
}

/// A private server with `settings`, for a test that restarts, reconfigures
/// or fills its server; stopped and removed when dropped.
pub fn private_server(settings: &[(&str, &str)]) -> pglock::testing::TestServer {
    let options = settings.iter().fold(
        pglock::testing::ServerOptions::new(),
        |options, (name, value)| options.setting(name, value),
    );
    pglock::testing::TestServer::start(options).expect("a private server")
}

/// A pool of at most `connections` connections to `server`.
pub async fn pool_on(server: &pglock::testing::TestServer, connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&server.url())
        .await
        .expect("connect to the private server")
}

/// A pool on the test server registered with
/// [`pglock::cancel_abandoned_waits`], so that a wait whose future is
/// dropped is cancelled on the server.
pub async fn cancelling_pool() -> PgPool {
    let pool = pool().await;
    pglock::cancel_abandoned_waits(&pool);
    pool
}

/// A private primary and a streaming standby of it, for a failover: crash
/// the primary ([`TestServer::crash`](pglock::testing::TestServer::crash)),
/// then promote the standby. Keep the standby before the primary in drop
/// order: bind it after.
pub fn primary_and_standby() -> (pglock::testing::TestServer, pglock::testing::TestServer) {
    let primary = private_server(&[]);
    let standby = primary.start_standby().expect("a streaming standby");
    (primary, standby)
}

/// The connect options of the test run's server.
pub fn connect_options() -> sqlx::postgres::PgConnectOptions {
    pglock::testing::database_url()
        .expect("a test database")
        .parse()
        .expect("a valid URL")
}

/// The connect options of `server`, over its unix socket.
pub fn connect_options_of(
    server: &pglock::testing::TestServer,
) -> sqlx::postgres::PgConnectOptions {
    server.url().parse().expect("the server's URL")
}

/// Takes a free key through `manager` with one try.
pub async fn take_free(
    manager: &pglock::LockManager,
    ns: &Namespace,
    key: i64,
) -> pglock::ManagedGuard {
    manager
        .lock(ns, &key)
        .try_acquire()
        .await
        .expect("a try")
        .expect("a free key")
}

/// The rows of `table`.
pub async fn count_rows(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(pool)
        .await
        .expect("count the rows")
}

/// Waits until every connection of `pool` is back and idle, so that the
/// next `begin` finds one (and no connection's check on its return runs
/// in the middle of a count).
pub async fn settled(pool: &PgPool) {
    eventually(
        Duration::from_secs(15),
        "the pool's connections idle",
        || async { pool.num_idle() as u32 == pool.size() },
    )
    .await;
}

/// A pool of `connections` on the test server, all open and idle.
pub async fn warm_pool(connections: u32) -> PgPool {
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .min_connections(connections)
        .connect(&pglock::testing::database_url().unwrap())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(15),
        "the pool's connections open",
        || async { pool.size() == connections },
    )
    .await;
    settled(&pool).await;
    pool
}

/// That backend `pid` waits in the one message that takes the lock and
/// begins: the path under test.
pub async fn waits_in_the_begin_message(observer: &PgPool, pid: i32) {
    let statement = current_query(observer, pid).await;
    assert!(statement.ends_with("; BEGIN"), "{statement}");
}

/// Holds `id` from a transaction of its own with the bare call: no event of
/// pglock's.
pub async fn hold_bare(pool: &PgPool, id: LockId) -> Transaction<'static, Postgres> {
    let LockId::BigInt(id) = id else {
        panic!("a bigint id")
    };
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(pglock::bare_sql::XACT_LOCK)
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// The held permits of the semaphore `permits`, as `pg_locks` shows them:
/// (index, pid), by index.
pub async fn permits_held(pool: &PgPool, permits: pglock::PermitIds) -> Vec<(i32, i32)> {
    let (encoded, objsubid) = pg_locks::encode(permits.base());
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {}, l.pid FROM pg_locks l WHERE {} AND l.granted \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         ORDER BY 1, 2",
        pg_locks::PERMIT_INDEX,
        pg_locks::PERMITS_OF
    )))
    .bind(encoded)
    .bind(objsubid)
    .fetch_all(pool)
    .await
    .expect("read pg_locks")
}

/// Polls `pg_locks` until a backend waits for a permit of `permits`, and
/// returns its pid and the index of the permit it queues for; panics
/// after 30 s.
pub async fn permit_waiter(pool: &PgPool, permits: pglock::PermitIds) -> (i32, u32) {
    let (encoded, objsubid) = pg_locks::encode(permits.base());
    let sql = format!(
        "SELECT l.pid, {} FROM pg_locks l WHERE {} AND NOT l.granted ORDER BY l.waitstart LIMIT 1",
        pg_locks::PERMIT_INDEX,
        pg_locks::PERMITS_OF
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiter: Option<(i32, i32)> = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(encoded)
            .bind(objsubid)
            .fetch_optional(pool)
            .await
            .expect("read pg_locks");
        if let Some((pid, index)) = waiter {
            return (pid, index as u32);
        }
        assert!(Instant::now() < deadline, "no one waits for a permit");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A session's permit of `ns`'s semaphore of `permits` on `key`, taken
/// without waiting on `conn` and held by the guard until it is released.
pub async fn session_permit(
    ns: &Namespace,
    key: i64,
    permits: u32,
    conn: impl pglock::IntoOwnedConnection,
) -> pglock::SessionGuard {
    ns.session_semaphore(&key, permits)
        .no_wait()
        .acquire(conn)
        .await
        .expect("a free permit")
}

/// Begins a transaction on `pool` and takes a permit of `ns`'s semaphore on
/// `key` in it; returns the permit, the transaction and its backend's pid.
pub async fn take_permit(
    pool: &sqlx::PgPool,
    ns: &Namespace,
    key: i64,
    permits: u32,
) -> (
    pglock::Permit,
    sqlx::Transaction<'static, sqlx::Postgres>,
    i32,
) {
    let mut tx = pool.begin().await.unwrap();
    let permit = ns
        .semaphore(&key, permits)
        .no_wait()
        .acquire(&mut tx)
        .await
        .expect("a free permit");
    let pid = backend_pid(&mut tx).await;
    (permit, tx, pid)
}

/// Every permit of `ns`'s semaphore of `permits` on `key`, each taken by
/// [`take_permit`] in a transaction of its own.
pub async fn take_every_permit(
    pool: &sqlx::PgPool,
    ns: &Namespace,
    key: i64,
    permits: u32,
) -> Vec<(
    pglock::Permit,
    sqlx::Transaction<'static, sqlx::Postgres>,
    i32,
)> {
    let mut held = Vec::new();
    for _ in 0..permits {
        held.push(take_permit(pool, ns, key, permits).await);
    }
    held
}
