//! Session-level semaphores: a permit held by a guard that owns its
//! connection, or by a lease; a session's wait, in the int4 pair key
//! space; an abandoned session wait that leaves no permit behind.

mod support;

use std::time::Duration;

use pglock::{ConflictCause, LockId, Namespace, SessionTry};
use support::capture::capture;
use support::*;

#[tokio::test]
async fn a_session_permit_is_a_guard_and_a_lease_that_reports_its_loss() {
    let (capture, _guard) = capture();
    let pool = pool().await;
    let ns = namespace("sem_session");
    let permits = ns.permit_ids(&1_i64, 2).unwrap();
    let conn = pool.acquire().await.unwrap();
    let mut guard = ns.session_semaphore(&1_i64, 2).acquire(conn).await.unwrap();
    let index = guard.permit().unwrap().index();
    let pid = backend_pid(guard.connection()).await;
    // The permit outlives transactions on its connection.
    sqlx::raw_sql("BEGIN; COMMIT")
        .execute(guard.connection())
        .await
        .unwrap();
    assert_eq!(
        permits_held(&pool, permits).await,
        vec![(index as i32, pid)]
    );

    let mut lease = ns
        .session_semaphore(&1_i64, 2)
        .acquire_lease(
            pool.acquire().await.unwrap(),
            pglock::CheckOptions::default().check_every(Duration::from_millis(100)),
        )
        .await
        .unwrap();
    let leased = lease.permit().unwrap();
    assert_ne!(leased.index(), index);
    let conn = pool.acquire().await.unwrap();
    let busy = ns
        .session_semaphore(&1_i64, 2)
        .try_acquire(conn)
        .await
        .unwrap();
    assert!(matches!(busy, SessionTry::Busy(_)));

    // Released: the connection holds nothing, and the permit is free.
    let mut conn = guard.release().await.unwrap();
    let held: i64 = sqlx::query_scalar(pglock::pg_locks::COUNT_HELD_BY_THIS_SESSION)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(held, 0);
    let held = permits_held(&pool, permits).await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].0, leased.index() as i32);
    let lease_pid = held[0].1;
    terminate_backend(&pool, lease_pid).await;
    let lost = tokio::time::timeout(Duration::from_secs(30), lease.lost())
        .await
        .expect("the loss is reported");
    assert_eq!(lost.lock().id(), leased.id());
    assert!(
        capture
            .events()
            .iter()
            .any(|event| event.fields.get("key") == Some(&leased.id().to_string()))
    );
}

/// A session's wait, in the int4 pair key space: it waits, times out as a
/// conflict, and takes the permit once it is freed.
#[tokio::test]
async fn a_session_waits_for_a_permit_in_the_pair_key_space() {
    static PAIRS: Namespace = Namespace::named_pair("test:semaphores:pairs");
    let pool = pool().await;
    let key = uuid::Uuid::new_v4();
    let permits = PAIRS.permit_ids(&key, 1).unwrap();
    assert!(matches!(permits.base(), LockId::Pair(..)));
    let mut holder = pool.begin().await.unwrap();
    PAIRS.semaphore(&key, 1).acquire(&mut holder).await.unwrap();

    let conn = pool.acquire().await.unwrap();
    let timed_out = PAIRS
        .session_semaphore(&key, 1)
        .timeout(Duration::from_millis(50))
        .acquire(conn)
        .await;
    expect_conflict(timed_out, ConflictCause::LockTimeout);

    let waiter = {
        let conn = pool.acquire().await.unwrap();
        tokio::spawn(async move {
            PAIRS
                .session_semaphore(&key, 1)
                .timeout(Duration::from_secs(20))
                .acquire(conn)
                .await
        })
    };
    let (waiter_pid, target) = permit_waiter(&pool, permits).await;
    assert_eq!(target, 0);
    holder.commit().await.unwrap();
    let guard = waiter.await.unwrap().unwrap();
    let permit = guard.permit().unwrap();
    assert_eq!((permit.index(), permit.id()), (0, permits.base()));
    assert!(permit.was_contended());
    assert_eq!(permits_held(&pool, permits).await, vec![(0, waiter_pid)]);
    // Held once: one release frees it.
    guard.release().await.unwrap();
    assert!(permits_held(&pool, permits).await.is_empty());
}

/// A session's wait whose future is dropped closes its connection; the
/// server ends the wait, and no permit is left held for no one.
#[tokio::test]
async fn an_abandoned_session_wait_leaves_no_permit_behind() {
    let pool = pool().await;
    let ns = namespace("sem_session_abandoned");
    let permits = ns.permit_ids(&1_i64, 1).unwrap();
    let (_, holder, _) = take_permit(&pool, ns, 1, 1).await;
    let waiter = {
        let conn = pool.acquire().await.unwrap();
        tokio::spawn(async move { ns.session_semaphore(&1_i64, 1).acquire(conn).await })
    };
    let (pid, _) = permit_waiter(&pool, permits).await;
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    // The server notices the closed connection and ends the session.
    eventually(
        Duration::from_secs(30),
        "the abandoned session ends",
        || async {
            let alive: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
                    .bind(pid)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            !alive
        },
    )
    .await;
    holder.commit().await.unwrap();
    assert!(permits_held(&pool, permits).await.is_empty());
}
