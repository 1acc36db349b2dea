//! An acquisition abandoned while it waits (its future dropped) leaves no
//! waiter, no lock and no stuck pooled connection behind.

mod support;

use std::time::Duration;

use pglock::{ConflictCause, Mode, Namespace, advisory_lock, testing};
use sqlx::{Connection, Postgres, Transaction};
use support::*;

#[tokio::test]
async fn a_transaction_wait_whose_future_is_dropped_is_cancelled_and_its_connection_recovers() {
    let observer = cancelling_pool().await;
    // One connection only: if the abandoned wait kept it, nothing else could run.
    let single = pool_of(1).await;
    let (ns, id) = fresh_key("abandoned_xact_wait", 1);
    let holder = hold(&observer, ns, 1).await;

    for attempt in 0..3 {
        // No timeout: only a cancel can end this wait.
        let waiter = spawn_xact_acquire(&single, ns.lock(&1_i64));
        let waiters = wait_for_waiters(&observer, id, 1).await;
        waiter.abort();
        assert!(waiter.await.unwrap_err().is_cancelled());

        let what = format!("attempt {attempt}: the wait is cancelled");
        until_gone(&observer, id, &waiters, &what).await;
        // The pool's only connection serves new work.
        let mut tx = tokio::time::timeout(Duration::from_secs(15), single.begin())
            .await
            .expect("the pooled connection came back")
            .unwrap();
        assert!(
            !ns.lock(&1_i64).try_acquire(&mut tx).await.unwrap(),
            "still held by the holder"
        );
        tx.rollback().await.unwrap();
    }

    assert_eq!(holders(&observer, id).await, vec![holder.pid()]);
    holder.release().await.unwrap();
    assert!(locks_on(&observer, id).await.is_empty());
}

#[tokio::test]
async fn a_lock_set_wait_whose_future_is_dropped_is_cancelled_too() {
    let observer = cancelling_pool().await;
    let ns = namespace("abandoned_set_wait");
    let busy = ns.id(&2_i64);
    let holder = testing::hold_lock(&observer, ns, &2_i64, Mode::Shared)
        .await
        .unwrap();

    let waiter_pool = observer.clone();
    let waiter = tokio::spawn(async move {
        let mut tx = waiter_pool.begin().await.unwrap();
        ns.lock_many([1_i64, 2, 3]).acquire(&mut tx).await
    });
    let waiters = wait_for_waiters(&observer, busy, 1).await;
    waiter.abort();
    let _ = waiter.await;

    for key in [1_i64, 2, 3] {
        let what = format!("key {key} is left behind by the cancelled wait");
        until_gone(&observer, ns.id(&key), &waiters, &what).await;
    }
    holder.release().await.unwrap();
}

#[tokio::test]
async fn a_wait_in_one_statement_whose_future_is_dropped_is_found_by_its_ticket_and_cancelled() {
    let observer = cancelling_pool().await;
    let (ns, id) = fresh_key("abandoned_one_statement_wait", 1);
    // A lock found busy before is tried and waited for in one statement: no
    // earlier statement told the backend's pid.
    let holder = hold_found_busy(&observer, ns, 1).await;
    // A second waiter on the same lock, which must not be cancelled.
    let bystander = spawn_xact_acquire(&observer, ns.lock(&1_i64));
    let bystander_pid = wait_for_waiters(&observer, id, 1).await[0];

    let waiter = spawn_xact_acquire(&observer, ns.lock(&1_i64));
    let waiters = wait_for_waiters(&observer, id, 2).await;
    let abandoned: Vec<i32> = waiters
        .into_iter()
        .filter(|pid| *pid != bystander_pid)
        .collect();
    let statement = current_query(&observer, abandoned[0]).await;
    assert!(
        statement.contains("pg_try_advisory_xact_lock("),
        "{statement}"
    );
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());

    until_gone(&observer, id, &abandoned, "the wait is cancelled").await;
    assert_eq!(
        locks_on(&observer, id).await,
        vec![
            (holder.pid(), "ExclusiveLock".to_owned(), true),
            (bystander_pid, "ExclusiveLock".to_owned(), false)
        ],
        "the other waiter still waits"
    );
    holder.release().await.unwrap();
    bystander.await.unwrap().unwrap();
}

static ORDERS: Namespace = Namespace::named("test:cancellation:orders");

/// Waits for `order`'s lock with no timeout: only a cancel ends the wait
/// before the holder lets go.
#[advisory_lock(ns = ORDERS, key = order)]
async fn settle_order(tx: &mut Transaction<'_, Postgres>, order: i64) -> Result<(), pglock::Error> {
    Ok(())
}

#[tokio::test]
async fn an_annotated_function_aborted_while_it_waits_gives_its_connection_back_at_once() {
    let observer = pool().await;
    // One connection, registered as the README's setup does: the aborted
    // wait holds the only one.
    let single = pool_of(1).await;
    pglock::cancel_abandoned_waits(&single);
    let order = uuid::Uuid::new_v4().as_u64_pair().0 as i64;
    let id = ORDERS.id(&order);
    let holder = testing::hold_lock(&observer, &ORDERS, &order, Mode::Exclusive)
        .await
        .unwrap();

    let waiter_pool = single.clone();
    let waiter = tokio::spawn(async move {
        let mut tx = waiter_pool.begin().await.unwrap();
        settle_order(&mut tx, order).await
    });
    wait_for_waiters(&observer, id, 1).await;
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());

    // Without the cancel, this would wait until the holder lets go.
    let mut conn = tokio::time::timeout(Duration::from_secs(5), single.acquire())
        .await
        .expect("the pool's only connection came back within 5 s")
        .unwrap();
    // It serves (the pool may have replaced the connection whose
    // transaction the cancel aborted).
    backend_pid(&mut conn).await;
    assert_eq!(
        locks_on(&observer, id).await,
        vec![(holder.pid(), "ExclusiveLock".to_owned(), true)],
        "the holder still holds the lock, and nobody waits for it"
    );
    drop(conn);
    holder.release().await.unwrap();
}

#[tokio::test]
async fn the_cancel_of_an_abandoned_permit_wait_spares_the_next_wait_on_its_connection() {
    let observer = cancelling_pool().await;
    // One connection: the next wait runs on the abandoned wait's backend.
    let single = pool_of(1).await;
    let ns = namespace("abandoned_permit_wait_then_another");
    let permits = ns.permit_ids(&1_i64, 1).unwrap();
    let (_, holder, holder_pid) = take_permit(&observer, ns, 1, 1).await;

    let mut conn = single.acquire().await.unwrap();
    for round in 0..5 {
        // No timeout: only a cancel can end this wait, abandoned once it waits.
        let abandoned = {
            let mut tx = conn.begin().await.unwrap();
            tokio::select! {
                outcome = ns.semaphore(&1_i64, 1).acquire(&mut tx) => {
                    panic!("round {round}: the wait ended by {outcome:?}")
                }
                (pid, _) = permit_waiter(&observer, permits) => pid,
            }
        };

        // sqlx reports how the abandoned statement ended (its cancel) at
        // the connection's next use.
        let drained = sqlx::query("SELECT 1").execute(&mut *conn).await;
        assert!(
            drained.as_ref().is_err_and(|error| error
                .as_database_error()
                .is_some_and(|error| error.code().as_deref() == Some("57014"))),
            "round {round}: {drained:?}"
        );
        // At once, the same backend waits for the same permit, with a
        // timeout: that timeout, not the abandoned wait's cancel, ends it.
        let mut tx = conn.begin().await.unwrap();
        let outcome = ns
            .semaphore(&1_i64, 1)
            .timeout(Duration::from_millis(300))
            .acquire(&mut tx)
            .await;
        let what = format!("round {round}: the next wait on backend {abandoned}");
        match outcome {
            Err(pglock::Error::Conflict(conflict)) => {
                assert_eq!(conflict.cause(), ConflictCause::LockTimeout, "{what}")
            }
            other => panic!("{what} ended by {other:?}"),
        }
        assert_eq!(backend_pid(&mut tx).await, abandoned, "{what}");
        tx.rollback().await.unwrap();
    }
    drop(conn);
    assert_eq!(
        permits_held(&observer, permits).await,
        vec![(0, holder_pid)]
    );
    holder.rollback().await.unwrap();
}
