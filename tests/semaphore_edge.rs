//! A semaphore's wait at its timeouts' edge: the wait loops over slices,
//! each ended by a lock timeout that the loop catches, so an error that
//! the server reports as a slice's lock timeout must not hide another.
//! Arranged deterministically by stopping the waiting backend (SIGSTOP)
//! until both timers are due; on a private server of the kit's, so that
//! its backends are processes of this machine the test may signal.

mod support;

use std::time::Duration;

use pglock::testing::{ServerOptions, TestServer};
use pglock::{ConflictCause, Error};
use sqlx::postgres::PgPoolOptions;
use support::*;

fn signal(name: &str, pid: i32) {
    let status = std::process::Command::new("kill")
        .args([name, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {name} {pid}");
}

/// The waiter is stopped in a slice that ends before its statement_timeout
/// and resumed after both: PostgreSQL reports the earlier one, the slice's
/// lock timeout, and forgets the other. The wait must still end at its
/// statement_timeout, as an error that aborts the transaction.
#[tokio::test]
async fn a_statement_timeout_due_with_a_slices_lock_timeout_still_ends_the_wait() {
    let server = TestServer::start(ServerOptions::new()).expect("a private server");
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&server.url())
        .await
        .expect("connect to the private server");
    let ns = namespace("sem_edge_statement_timeout");
    let permits = ns.permit_ids(&1_i64, 1).unwrap();
    let (_, holder, _) = take_permit(&pool, ns, 1, 1).await;

    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            set_local(&mut tx, "statement_timeout", "2s").await;
            // No timeout of pglock's, and lock_timeout 0: only the
            // statement_timeout ends this wait.
            ns.semaphore(&1_i64, 1).acquire(&mut tx).await
        }
    });
    let (waiter, _) = permit_waiter(&pool, permits).await;
    signal("-STOP", waiter);
    // Stopped in a slice (100 ms at most) that ends well before the
    // statement's deadline.
    let early: bool = sqlx::query_scalar(
        "SELECT clock_timestamp() < query_start + interval '1500 ms' \
         FROM pg_stat_activity WHERE pid = $1",
    )
    .bind(waiter)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(early, "the waiter was stopped in an early slice");
    eventually(
        Duration::from_secs(10),
        "the statement's deadline passes",
        || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, bool>(
                    "SELECT clock_timestamp() > query_start + interval '2100 ms' \
                     FROM pg_stat_activity WHERE pid = $1",
                )
                .bind(waiter)
                .fetch_one(&pool)
                .await
                .unwrap()
            }
        },
    )
    .await;
    signal("-CONT", waiter);

    // Resumed, the wait ends within a slice; a lost statement timeout would
    // leave it waiting for ever.
    let outcome = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the wait ends after its statement_timeout")
        .unwrap();
    match outcome {
        Err(Error::Conflict(conflict)) => {
            assert_eq!(conflict.cause(), ConflictCause::StatementTimeoutOrCancel)
        }
        other => panic!("expected a statement timeout, got {other:?}"),
    }
    assert_eq!(
        permits_held(&pool, permits).await.len(),
        1,
        "the holder's permit only"
    );
    holder.rollback().await.unwrap();
}
