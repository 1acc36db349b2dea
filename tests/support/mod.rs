//! Shared helpers of the integration tests: a pool on the test server, fresh
//! namespaces, and observers of what the server shows.
#![allow(dead_code, unreachable_pub)]

pub mod capture;

use std::time::{Duration, Instant};

use pglock::{LockId, Namespace, pg_locks};
use sqlx::postgres::{PgPool, PgPoolOptions};

/// A pool on the test run's server (`DATABASE_URL`, or the throwaway one).
pub async fn pool() -> PgPool {
    let url = pglock::testing::database_url().expect("a test database");
    PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(30))
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

/// Polls `pg_locks` until `count` backends wait for `id`; panics after 30 s.
pub async fn wait_for_waiters(pool: &PgPool, id: LockId, count: usize) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiters: Vec<i32> = locks_on(pool, id)
            .await
            .into_iter()
            .filter(|(_, _, granted)| !granted)
            .map(|(pid, _, _)| pid)
            .collect();
        if waiters.len() >= count {
            return waiters;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {count} waiter(s) on {id}; saw {waiters:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The backend pid of a connection.
pub async fn backend_pid(conn: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .expect("read pg_backend_pid")
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
    let deadline = Instant::now() + Duration::from_secs(30);
    while !holders(pool, id).await.contains(&holder_pid) {
        assert!(Instant::now() < deadline, "the holder never took {id}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
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
