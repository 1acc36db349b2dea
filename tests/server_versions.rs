//! Behaviour that differs between the PostgreSQL versions pglock supports
//! (14 to 18; `.ci/pg-versions` runs every test file against each). A test
//! that cannot run on the server at hand says so on stderr, in a line
//! starting with `skipped`, which the version matrix counts and lists.

mod support;

use std::io::Write as _;
use std::time::Duration;

use pglock::{ConflictCause, Error, LockId};
use sqlx::PgPool;
use support::*;

/// The server's version: (`server_version_num`, `server_version`).
async fn server_version(pool: &PgPool) -> (u32, String) {
    let (num, text): (String, String) = sqlx::query_as(
        "SELECT current_setting('server_version_num'), current_setting('server_version')",
    )
    .fetch_one(pool)
    .await
    .expect("read the server's version");
    (num.parse().expect("a version number"), text)
}

/// Whether the server is at least `major`; when not, says on stderr (past
/// libtest's capture of `eprintln!`) that `test` is skipped, and why.
async fn requires(pool: &PgPool, major: u32, test: &str, why: &str) -> bool {
    let (num, text) = server_version(pool).await;
    if num >= major * 10_000 {
        return true;
    }
    let _ = writeln!(
        std::io::stderr().lock(),
        "skipped {test} on PostgreSQL {text}: {why} (PostgreSQL {major} and later)"
    );
    false
}

/// Takes key 1 of `ns` in a transaction that holds it until it ends.
async fn hold(pool: &PgPool, ns: &pglock::Namespace) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut holder = pool.begin().await.unwrap();
    ns.lock(&1_i64).acquire(&mut holder).await.unwrap();
    holder
}

async fn assert_only_holder(pool: &PgPool, id: LockId, holder: &mut sqlx::PgConnection) {
    let holder_pid = backend_pid(holder).await;
    assert_eq!(holders(pool, id).await, vec![holder_pid]);
}

#[tokio::test]
async fn the_test_server_is_a_supported_version() {
    let pool = pool().await;
    let (num, text) = server_version(&pool).await;
    assert!(
        num >= 140_000,
        "PostgreSQL {text}: pglock needs 14 or later (pg_locks.waitstart, \
         client_connection_check_interval)"
    );
}

#[tokio::test]
async fn a_transaction_timeout_during_a_wait_is_a_conflict_with_its_own_cause() {
    let pool = pool().await;
    if !requires(
        &pool,
        17,
        "a_transaction_timeout_during_a_wait_is_a_conflict_with_its_own_cause",
        "transaction_timeout",
    )
    .await
    {
        return;
    }
    let ns = namespace("transaction_timeout");
    let mut holder = hold(&pool, ns).await;

    let mut waiter = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL transaction_timeout = '300ms'")
        .execute(&mut *waiter)
        .await
        .unwrap();
    let error = ns
        .lock(&1_i64)
        .timeout(Duration::from_secs(30))
        .acquire(&mut waiter)
        .await
        .unwrap_err();
    let conflict = error
        .as_conflict()
        .unwrap_or_else(|| panic!("a conflict: {error:?}"));
    assert_eq!(conflict.cause(), ConflictCause::TransactionTimeout);
    assert_eq!(conflict.sqlstate(), "25P04");
    assert!(conflict.waited() < Duration::from_secs(30), "{conflict}");
    assert!(error.is_retryable(), "another transaction may get the lock");
    assert!(error.to_string().contains("transaction_timeout"), "{error}");
    assert_only_holder(&pool, ns.id(&1_i64), &mut holder).await;
}

#[tokio::test]
async fn a_transaction_timeout_during_a_savepoint_wait_is_reported_as_such() {
    let pool = pool().await;
    if !requires(
        &pool,
        17,
        "a_transaction_timeout_during_a_savepoint_wait_is_reported_as_such",
        "transaction_timeout",
    )
    .await
    {
        return;
    }
    let ns = namespace("transaction_timeout_savepoint");
    let mut holder = hold(&pool, ns).await;

    let mut waiter = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL transaction_timeout = '300ms'")
        .execute(&mut *waiter)
        .await
        .unwrap();
    let error = ns
        .lock(&1_i64)
        .timeout(Duration::from_secs(30))
        .in_savepoint()
        .acquire(&mut waiter)
        .await
        .unwrap_err();
    // The session is gone: no savepoint can make the transaction usable, and
    // the error is the timeout, not the failed rollback on a closed
    // connection.
    assert!(
        matches!(
            error.as_conflict().map(|c| c.cause()),
            Some(ConflictCause::TransactionTimeout)
        ),
        "{error:?}"
    );
    assert!(
        sqlx::query("SELECT 1").execute(&mut *waiter).await.is_err(),
        "the server closed the connection"
    );
    assert_only_holder(&pool, ns.id(&1_i64), &mut holder).await;
    assert!(!matches!(error, Error::Database(_)));
}
