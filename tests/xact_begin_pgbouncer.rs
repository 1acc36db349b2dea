//! A transaction begun already holding its lock, through PgBouncer in
//! transaction pooling mode: the message that takes the lock and `BEGIN`s
//! keeps its backend until the transaction ends, a failed one leaves no
//! transaction on the backend that the pooler hands on, and an abandoned
//! wait is cancelled on the server behind the pooler.
//!
//! Without PgBouncer installed the test is skipped and says so (with
//! `PGLOCK_REQUIRE_PGBOUNCER=1`, as `.ci/run` sets it, it fails instead).

mod support;

use std::time::Duration;

use pglock::Error;
use pglock::testing::{PgBouncer, PgBouncerOptions, PoolMode, ServerOptions, TestServer};
use sqlx::postgres::{PgPool, PgPoolOptions};
use support::*;

async fn pool_at(url: &str, size: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(size)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(60))
        .connect(url)
        .await
        .expect("connect")
}

/// What the server shows left behind: advisory locks, and client backends
/// in a transaction (other than the one asking).
async fn left_behind(direct: &PgPool) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'), \
                (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
                     AND pid <> pg_backend_pid() AND xact_start IS NOT NULL)",
    )
    .fetch_one(direct)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_begun_transaction_keeps_its_backend_through_a_transaction_pooler() {
    if !PgBouncer::installed_or_skip() {
        return;
    }
    let server = TestServer::start(ServerOptions::new()).expect("a private server");
    // Three backends: the holder's, the waiter's, and one for the cancel.
    let bouncer = PgBouncer::start_with(
        &server,
        PgBouncerOptions::new()
            .pool_mode(PoolMode::Transaction)
            .pool_size(3),
    )
    .unwrap_or_else(|error| panic!("PgBouncer did not start: {error}"));
    let direct = pool_at(&server.url(), 2).await;
    let pool = pool_at(&bouncer.url(), 4).await;
    pglock::cancel_abandoned_waits(&pool);
    let (ns, id) = fresh_key("begin_pgbouncer", 1);

    let mut holder = ns.lock(&1_i64).begin(&pool).await.unwrap();
    let holder_pid = backend_pid(&mut holder).await;
    assert_eq!(holders(&direct, id).await, vec![holder_pid]);
    match ns.lock(&1_i64).no_wait().begin(&pool).await {
        Err(Error::Busy(lock)) => assert_eq!(lock.id(), id),
        other => panic!("expected Error::Busy, got {other:?}"),
    }

    // A wait through the pooler, granted at the holder's commit.
    let request = ns.lock(&1_i64).timeout(Duration::from_secs(30));
    let waiter_pool = pool.clone();
    let waiter = tokio::spawn(async move { request.begin(&waiter_pool).await });
    let waiters = wait_for_waiters(&direct, id, 1).await;
    waits_in_the_begin_message(&direct, waiters[0]).await;
    holder.commit().await.unwrap();
    let mut tx = waiter.await.unwrap().unwrap();
    assert_eq!(backend_pid(&mut tx).await, waiters[0], "the same backend");
    assert_eq!(holders(&direct, id).await, waiters);

    // An abandoned wait through the pooler is cancelled on the server.
    let request = ns.lock(&1_i64);
    let waiter_pool = pool.clone();
    let waiter = tokio::spawn(async move { request.begin(&waiter_pool).await.map(drop) });
    let abandoned = wait_for_waiters(&direct, id, 1).await;
    waits_in_the_begin_message(&direct, abandoned[0]).await;
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    until_gone(&direct, id, &abandoned, "the abandoned wait is cancelled").await;
    tx.commit().await.unwrap();

    eventually(Duration::from_secs(15), "nothing left behind", || async {
        left_behind(&direct).await == (0, 0)
    })
    .await;
    pool.close().await;
    direct.close().await;
}
