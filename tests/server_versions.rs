//! Behaviour that differs between the PostgreSQL versions pglock supports
//! (14 to 18; `.ci/pg-versions` runs every test file against each). A test
//! that cannot run on the server at hand says so on stderr, in a line
//! starting with `skipped`, which the version matrix counts and lists.

mod support;

use std::io::Write as _;
use std::time::Duration;

use pglock::{ConflictCause, Error, LockId};
use sqlx::{PgPool, Postgres, Transaction};
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
/// libtest's capture of `eprintln!`) that the running test (libtest names
/// its thread after it) is skipped, and why.
async fn requires(pool: &PgPool, major: u32, why: &str) -> bool {
    let (num, text) = server_version(pool).await;
    if num >= major * 10_000 {
        return true;
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let _ = writeln!(
        std::io::stderr().lock(),
        "skipped {test} on PostgreSQL {text}: {why} (PostgreSQL {major} and later)"
    );
    false
}

/// A pool on the test server when it is at least `major`; else `None`,
/// after [`requires`] said why the test is skipped.
async fn pool_at_least(major: u32, why: &str) -> Option<PgPool> {
    let pool = pool().await;
    requires(&pool, major, why).await.then_some(pool)
}

/// Waits (up to 30 s, in a savepoint when `in_savepoint`) for key 1 of `ns`,
/// held by another transaction, in a transaction whose
/// `transaction_timeout` is 300 ms. Returns the outcome, the waiter's
/// transaction and the holder's.
async fn wait_past_a_transaction_timeout(
    pool: &PgPool,
    ns: &'static pglock::Namespace,
    in_savepoint: bool,
) -> (
    Result<(), Error>,
    Transaction<'static, Postgres>,
    Transaction<'static, Postgres>,
) {
    let holder = holding_transaction(pool, ns, 1).await;
    let mut waiter = pool.begin().await.unwrap();
    set_local(&mut waiter, "transaction_timeout", "300ms").await;
    let request = ns.lock(&1_i64).timeout(Duration::from_secs(30));
    let outcome = match in_savepoint {
        true => request.in_savepoint().acquire(&mut waiter).await,
        false => request.acquire(&mut waiter).await,
    };
    (outcome.map(drop), waiter, holder)
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
    let Some(pool) = pool_at_least(17, "transaction_timeout").await else {
        return;
    };
    let ns = namespace("transaction_timeout");
    let (outcome, _waiter, mut holder) = wait_past_a_transaction_timeout(&pool, ns, false).await;
    assert!(
        outcome.as_ref().is_err_and(Error::is_retryable),
        "another transaction may get the lock"
    );
    let error = outcome.as_ref().unwrap_err().to_string();
    assert!(error.contains("transaction_timeout"), "{error}");
    let conflict = expect_conflict(outcome, ConflictCause::TransactionTimeout);
    assert_eq!(conflict.sqlstate(), "25P04");
    assert!(conflict.waited() < Duration::from_secs(30), "{conflict}");
    assert_only_holder(&pool, ns.id(&1_i64), &mut holder).await;
}

#[tokio::test]
async fn a_transaction_timeout_during_a_savepoint_wait_is_reported_as_such() {
    let Some(pool) = pool_at_least(17, "transaction_timeout").await else {
        return;
    };
    let ns = namespace("transaction_timeout_savepoint");
    let (outcome, mut waiter, mut holder) = wait_past_a_transaction_timeout(&pool, ns, true).await;
    // The session is gone: no savepoint can make the transaction usable, and
    // the error is the timeout, not the failed rollback on a closed
    // connection.
    assert!(!matches!(outcome, Err(Error::Database(_))), "{outcome:?}");
    expect_conflict(outcome, ConflictCause::TransactionTimeout);
    assert!(
        sqlx::query("SELECT 1").execute(&mut *waiter).await.is_err(),
        "the server closed the connection"
    );
    assert_only_holder(&pool, ns.id(&1_i64), &mut holder).await;
}
