//! Semaphores through the lock manager: permits held across transactions
//! on the manager's connections, never the same permit twice within one
//! manager (the server would grant it again to the backend that holds it),
//! never more than N holders across managers, each permit counted against
//! the budget, a lost connection reported, a freed permit found by a
//! waiter. Every claim is checked against what `pg_locks` shows.

mod support;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pglock::{
    CheckOptions, Error, LockBudget, LockManager, ManagedGuard, ManagerOptions, Namespace,
    SessionGuard, pg_locks,
};
use sqlx::postgres::PgPool;
use support::*;
use tokio::task::JoinHandle;

fn manager(options: ManagerOptions) -> Arc<LockManager> {
    Arc::new(LockManager::new(connect_options(), options))
}

/// Fast checks, so that a loss is seen within about a second.
fn quick_checks() -> ManagerOptions {
    ManagerOptions::default().checks(
        CheckOptions::default()
            .check_every(Duration::from_millis(200))
            .check_timeout(Duration::from_secs(1)),
    )
}

/// Another process's session holding `ns`'s semaphore's permits until the
/// guards are released: every permit of `permits`, each on a connection of
/// its own.
async fn hold_every_permit(
    pool: &PgPool,
    ns: &Namespace,
    key: i64,
    permits: u32,
) -> Vec<SessionGuard> {
    let mut guards = Vec::new();
    for _ in 0..permits {
        let conn = pool.acquire().await.unwrap();
        guards.push(session_permit(ns, key, permits, conn).await);
    }
    guards
}

/// `manager`'s request for a permit of `ns`'s semaphore of `permits` on
/// `key`, waiting at most 30 s, in a task of its own.
fn spawn_wait(
    manager: &Arc<LockManager>,
    ns: &'static Namespace,
    key: i64,
    permits: u32,
) -> JoinHandle<Result<ManagedGuard, Error>> {
    let manager = Arc::clone(manager);
    tokio::spawn(async move {
        manager
            .semaphore(ns, &key, permits)
            .timeout(Duration::from_secs(30))
            .acquire()
            .await
    })
}

/// Takes out of `outside` a guard of a permit other than `queued_for`, the
/// one a waiter queues for.
fn not_queued_for(outside: &mut Vec<SessionGuard>, queued_for: u32) -> SessionGuard {
    let other = outside
        .iter()
        .position(|guard| guard.permit().unwrap().index() != queued_for)
        .unwrap();
    outside.remove(other)
}

/// One manager on one connection: every permit it takes is on the same
/// backend, which PostgreSQL would grant the same permit again; the
/// manager's table gives each guard its own.
#[tokio::test]
async fn one_connection_holds_each_permit_for_one_guard_only() {
    let pool = pool().await;
    let ns = namespace("msem:one");
    let permits = ns.permit_ids(&1_i64, 3).unwrap();
    let manager = manager(ManagerOptions::default().max_connections(1));
    let mut guards = Vec::new();
    for _ in 0..3 {
        guards.push(
            manager
                .semaphore(ns, &1_i64, 3)
                .no_wait()
                .acquire()
                .await
                .unwrap(),
        );
    }
    let mut indexes: Vec<u32> = guards.iter().map(|g| g.permit().unwrap().index()).collect();
    indexes.sort();
    assert_eq!(indexes, [0, 1, 2]);
    let held = permits_held(&pool, permits).await;
    assert_eq!(
        held.iter().map(|(index, _)| *index).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert!(
        held.iter().all(|(_, pid)| *pid == held[0].1),
        "one backend: {held:?}"
    );
    for guard in &guards {
        let permit = guard.permit().unwrap();
        assert_eq!(guard.lock().id(), permit.id());
        assert_eq!(permits.get(permit.index()), Some(permit.id()));
    }

    // Full: a try says so, and no-wait is Busy naming the semaphore.
    assert!(
        manager
            .semaphore(ns, &1_i64, 3)
            .try_acquire()
            .await
            .unwrap()
            .is_none()
    );
    match manager.semaphore(ns, &1_i64, 3).no_wait().acquire().await {
        Err(Error::Busy(lock)) => assert_eq!(lock.id(), permits.base()),
        other => panic!("expected Busy, got {other:?}"),
    }
    assert_eq!(permits_held(&pool, permits).await.len(), 3);

    // A wait while every permit is this manager's waits in-process (the
    // one connection is busy holding): it gets the permit given back.
    let waiter = spawn_wait(&manager, ns, 1, 3);
    let freed = guards.remove(1);
    let freed_index = freed.permit().unwrap().index();
    freed.release().await.unwrap();
    let taken = waiter.await.unwrap().unwrap();
    assert_eq!(taken.permit().unwrap().index(), freed_index);
    assert_eq!(manager.connections(), 1);
    assert_eq!(permits_held(&pool, permits).await.len(), 3);
    guards.push(taken);
    for guard in guards {
        guard.release().await.unwrap();
    }
    assert!(permits_held(&pool, permits).await.is_empty());
}

/// Three managers, eight tasks each, take and give back permits of one
/// semaphore of 3: a counter protected by nothing else never passes 3,
/// and reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn never_more_than_n_holders_across_managers() {
    let ns = namespace("msem:peak");
    const PERMITS: u32 = 3;
    let inside = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..3 {
        // A wait takes a connection of its own: room for all of them.
        let manager = manager(ManagerOptions::default().max_connections(9));
        for _ in 0..8 {
            let (manager, inside, peak) = (Arc::clone(&manager), inside.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..25 {
                    let guard = manager
                        .semaphore(ns, &7_i64, PERMITS)
                        .timeout(Duration::from_secs(60))
                        .acquire()
                        .await
                        .unwrap();
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    guard.release().await.unwrap();
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), PERMITS as usize);
}

/// A waiter queues on the server for one permit; another permit frees
/// first and the waiter's connection takes it. That permit is then the
/// waiter's claim: a try of the same manager, routed to the same
/// connection, must not be granted it again.
#[tokio::test]
async fn a_waiter_takes_a_freed_permit_and_claims_the_one_it_took() {
    let pool = pool().await;
    let ns = namespace("msem:reclaim");
    let permits = ns.permit_ids(&2_i64, 2).unwrap();
    let mut outside = hold_every_permit(&pool, ns, 2, 2).await;
    let manager = manager(ManagerOptions::default().max_connections(1));
    let waiter = spawn_wait(&manager, ns, 2, 2);
    let (pid, queued_for) = permit_waiter(&pool, permits).await;
    // Free the permit the waiter does not queue for: its loop's next try
    // finds it.
    let other = not_queued_for(&mut outside, queued_for);
    let other_index = other.permit().unwrap().index();
    other.release().await.unwrap();
    let taken = waiter.await.unwrap().unwrap();
    let permit = taken.permit().unwrap();
    assert_eq!(permit.index(), other_index);
    assert!(permit.was_contended());
    assert_eq!(taken.lock().id(), permit.id());
    assert!(
        permits_held(&pool, permits)
            .await
            .contains(&(other_index as i32, pid))
    );

    // The outside holder leaves: the one connection may take the other
    // permit, never the one it holds for the waiter's guard.
    outside.pop().unwrap().release().await.unwrap();
    let second = manager
        .semaphore(ns, &2_i64, 2)
        .no_wait()
        .acquire()
        .await
        .unwrap();
    assert_eq!(second.permit().unwrap().index(), queued_for);
    assert!(
        manager
            .semaphore(ns, &2_i64, 2)
            .try_acquire()
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        permits_held(&pool, permits).await,
        vec![(0, pid), (1, pid)],
        "both permits on the manager's one backend, one per guard"
    );
    taken.release().await.unwrap();
    second.release().await.unwrap();
    assert!(permits_held(&pool, permits).await.is_empty());
}

/// The ids the manager's guards hold are those of `docs/KEYS.md`,
/// section 4, as the server computes them.
#[tokio::test]
async fn pg_locks_shows_exactly_the_documented_permit_ids() {
    let pool = pool().await;
    static EXPORTS: Namespace = Namespace::named("exports:tenant");
    let manager = manager(ManagerOptions::default());
    let mut guards = Vec::new();
    for _ in 0..4 {
        guards.push(
            manager
                .semaphore(&EXPORTS, &"acme", 4)
                .acquire()
                .await
                .unwrap(),
        );
    }
    let key_id = EXPORTS.id(&"acme").bigint().unwrap();
    let expected: Vec<i64> = sqlx::query_scalar(
        "SELECT ((('x' || left(encode(sha256(int8send($1) || convert_to('pglock:permit', 'UTF8')), \
                 'hex'), 16))::bit(64)::int8) & -1024) | i \
         FROM generate_series(0, 3) AS i ORDER BY i",
    )
    .bind(key_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    let shown: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted \
           AND l.objsubid = 1 AND ({} & -1024) = $1 ORDER BY 1",
        pg_locks::ENCODED,
        pg_locks::ENCODED
    )))
    .bind(expected[0])
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(shown, expected);
    let mut ours: Vec<i64> = guards
        .iter()
        .map(|g| g.lock().id().bigint().unwrap())
        .collect();
    ours.sort();
    assert_eq!(ours, expected);
    assert_eq!(manager.close().await, 4);
}

/// Each permit is a lock of the budget.
#[tokio::test]
async fn each_permit_counts_against_the_budget() {
    let pool = pool().await;
    let ns = namespace("msem:budget");
    let permits = ns.permit_ids(&3_i64, 4).unwrap();
    let manager = manager(
        ManagerOptions::default().lock_budget(LockBudget::locks(NonZeroUsize::new(2).unwrap())),
    );
    let first = manager.semaphore(ns, &3_i64, 4).acquire().await.unwrap();
    let second = manager.semaphore(ns, &3_i64, 4).acquire().await.unwrap();
    let refused = manager.semaphore(ns, &3_i64, 4).acquire().await;
    assert!(
        matches!(refused, Err(Error::LockBudget { budget: 2, .. })),
        "{refused:?}"
    );
    assert_eq!(permits_held(&pool, permits).await.len(), 2);
    first.release().await.unwrap();
    let third = manager.semaphore(ns, &3_i64, 4).acquire().await.unwrap();
    assert_eq!(permits_held(&pool, permits).await.len(), 2);
    drop((second, third));
}

/// A wait that times out is a conflict naming the semaphore, leaves no
/// permit behind, and the connection serves the next request.
#[tokio::test]
async fn a_timeout_is_a_conflict_and_leaves_nothing_behind() {
    let pool = pool().await;
    let ns = namespace("msem:timeout");
    let permits = ns.permit_ids(&4_i64, 2).unwrap();
    let outside = hold_every_permit(&pool, ns, 4, 2).await;
    let manager = manager(ManagerOptions::default().max_connections(1));
    let timed_out = manager
        .semaphore(ns, &4_i64, 2)
        .timeout(Duration::from_millis(150))
        .acquire()
        .await;
    match timed_out {
        Err(Error::Conflict(conflict)) => assert_eq!(conflict.lock().id(), permits.base()),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let held = permits_held(&pool, permits).await;
    let outside_pids: Vec<i32> = held.iter().map(|(_, pid)| *pid).collect();
    assert_eq!(held.len(), 2, "only the outside holders: {held:?}");
    for guard in outside {
        guard.release().await.unwrap();
    }
    let guard = manager.semaphore(ns, &4_i64, 2).acquire().await.unwrap();
    let held = permits_held(&pool, permits).await;
    assert_eq!(held.len(), 1);
    assert!(!outside_pids.contains(&held[0].1));
    guard.release().await.unwrap();
}

/// A waiter whose semaphore another holder uses with more permits is told
/// so instead of waiting.
#[tokio::test]
async fn a_larger_size_in_use_is_reported_to_a_waiter() {
    let pool = pool().await;
    let ns = namespace("msem:mismatch");
    let outside = hold_every_permit(&pool, ns, 5, 3).await;
    let manager = manager(ManagerOptions::default());
    let refused = manager
        .semaphore(ns, &5_i64, 2)
        .timeout(Duration::from_secs(30))
        .acquire()
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::PermitsMismatch {
                permits: 2,
                seen: 3,
                ..
            })
        ),
        "{refused:?}"
    );
    drop(outside);
}

/// A permit's connection terminated: its guard reports the loss, naming
/// the permit, and the permit is free for others at once.
#[tokio::test]
async fn a_lost_connection_reports_the_loss_of_its_permit() {
    let pool = pool().await;
    let ns = namespace("msem:loss");
    let permits = ns.permit_ids(&6_i64, 2).unwrap();
    let options = quick_checks();
    let manager = manager(options);
    let mut guard = manager.semaphore(ns, &6_i64, 2).acquire().await.unwrap();
    let held = permits_held(&pool, permits).await;
    assert_eq!(held.len(), 1);
    terminate_backend(&pool, held[0].1).await;
    let bound = options.detection_bound() + Duration::from_secs(2);
    let lost = tokio::time::timeout(bound, guard.lost())
        .await
        .expect("the loss reported within the detection bound");
    assert_eq!(lost.lock().id(), guard.permit().unwrap().id());
    assert!(!guard.is_held());
    assert!(matches!(guard.release().await, Err(Error::LockLost(_))));
    // Both permits are free: the manager takes them again on a new
    // connection.
    let a = manager
        .semaphore(ns, &6_i64, 2)
        .no_wait()
        .acquire()
        .await
        .unwrap();
    let b = manager
        .semaphore(ns, &6_i64, 2)
        .no_wait()
        .acquire()
        .await
        .unwrap();
    assert_eq!(permits_held(&pool, permits).await.len(), 2);
    drop((a, b));
}

/// A permit's wait ended by an error (here a cancel from outside) gives
/// back whatever its connection took, with one statement that frees every
/// advisory lock of that session: the locks and permits the manager's other
/// guards hold, on their own connection, are untouched, and the manager
/// serves the next request.
#[tokio::test]
async fn a_failed_permit_wait_gives_back_nothing_of_another_guard() {
    let pool = pool().await;
    let ns = namespace("msem:failed-wait");
    let permits = ns.permit_ids(&8_i64, 2).unwrap();
    let manager = manager(quick_checks());
    // A lock and a permit held by the manager's guards, on one connection.
    let lock = manager.lock(ns, &-8_i64).acquire().await.unwrap();
    let permit = manager.semaphore(ns, &8_i64, 2).acquire().await.unwrap();
    let holder_pid = holders(&pool, ns.id(&-8_i64)).await[0];
    assert_eq!(
        permits_held(&pool, permits).await,
        vec![(permit.permit().unwrap().index() as i32, holder_pid)]
    );
    // The other permit is another process's: the manager's next request
    // waits on the server.
    let outside = {
        let conn = pool.acquire().await.unwrap();
        ns.session_semaphore(&8_i64, 2)
            .no_wait()
            .acquire(conn)
            .await
            .expect("the other permit")
    };
    let waiter = spawn_wait(&manager, ns, 8, 2);
    let (wait_pid, _) = permit_waiter(&pool, permits).await;
    assert_ne!(
        wait_pid, holder_pid,
        "a wait runs on a connection of its own"
    );
    // Cancel it until it ends: a cancel that lands as one of its slices
    // times out is taken for that timeout.
    while !waiter.is_finished() {
        sqlx::query("SELECT pg_cancel_backend($1)")
            .bind(wait_pid)
            .execute(&pool)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failed = waiter.await.unwrap();
    assert!(failed.is_err(), "{failed:?}");
    // The guards' lock and permit are still held, by their backend; the
    // wait's backend holds nothing.
    assert_eq!(holders(&pool, ns.id(&-8_i64)).await, vec![holder_pid]);
    let held = permits_held(&pool, permits).await;
    assert!(
        held.contains(&(permit.permit().unwrap().index() as i32, holder_pid)),
        "{held:?}"
    );
    assert!(held.iter().all(|(_, pid)| *pid != wait_pid), "{held:?}");
    assert!(lock.is_held() && permit.is_held());
    // The other process leaves: the manager takes the permit it held.
    outside.release().await.unwrap();
    let again = manager
        .semaphore(ns, &8_i64, 2)
        .no_wait()
        .acquire()
        .await
        .unwrap();
    assert_ne!(
        again.permit().unwrap().index(),
        permit.permit().unwrap().index()
    );
    for guard in [lock, permit, again] {
        guard.release().await.unwrap();
    }
    assert!(permits_held(&pool, permits).await.is_empty());
}

/// A permit a wait took (not the one it queued for), its guard dropped
/// without release: the connection unlocks that very permit, stays in
/// service, and the manager takes the permit again.
#[tokio::test]
async fn a_dropped_guard_of_a_waited_permit_frees_the_permit_it_took() {
    let pool = pool().await;
    let ns = namespace("msem:dropped");
    let permits = ns.permit_ids(&9_i64, 2).unwrap();
    let mut outside = hold_every_permit(&pool, ns, 9, 2).await;
    let manager = manager(ManagerOptions::default());
    let waiter = spawn_wait(&manager, ns, 9, 2);
    let (pid, queued_for) = permit_waiter(&pool, permits).await;
    let other_index = not_queued_for(&mut outside, queued_for)
        .permit()
        .unwrap()
        .index();
    let taken = waiter.await.unwrap().unwrap();
    assert_eq!(taken.permit().unwrap().index(), other_index);
    assert_eq!(permits_held(&pool, permits).await.len(), 2);
    let connections = manager.connections();
    drop(taken);
    eventually(Duration::from_secs(10), "the dropped permit freed", || {
        let pool = pool.clone();
        async move {
            !permits_held(&pool, permits)
                .await
                .iter()
                .any(|(_, p)| *p == pid)
        }
    })
    .await;
    assert_eq!(manager.connections(), connections, "the connection stays");
    let again = manager
        .semaphore(ns, &9_i64, 2)
        .no_wait()
        .acquire()
        .await
        .unwrap();
    assert_eq!(again.permit().unwrap().index(), other_index);
    again.release().await.unwrap();
    drop(outside);
}

/// `close()` with every permit held by the manager's guards and one more
/// request waiting in-process for them: the permits are given back on the
/// server, counted in what `close()` returns, the waiter ends with
/// `ManagerClosed` at once, and a later release succeeds.
#[tokio::test]
async fn close_gives_back_the_permits_and_ends_an_in_process_wait() {
    let pool = pool().await;
    let ns = namespace("msem:close");
    let permits = ns.permit_ids(&10_i64, 2).unwrap();
    let manager = manager(ManagerOptions::default());
    let first = manager.semaphore(ns, &10_i64, 2).acquire().await.unwrap();
    let second = manager.semaphore(ns, &10_i64, 2).acquire().await.unwrap();
    assert_eq!(permits_held(&pool, permits).await.len(), 2);
    // Every permit is this manager's: the waiter takes no connection and
    // sends nothing. It has begun its wait once it says so.
    let (events, _capture) = support::capture::capture();
    let waiter = manager
        .semaphore(ns, &10_i64, 2)
        .timeout(Duration::from_secs(60))
        .acquire();
    tokio::pin!(waiter);
    events.until_it_waits(&mut waiter, "close").await;
    let (released, ended) = tokio::join!(
        manager.close(),
        tokio::time::timeout(Duration::from_secs(10), &mut waiter)
    );
    assert_eq!(released, 2);
    let ended = ended.expect("the in-process wait ends with the close");
    assert!(matches!(ended, Err(Error::ManagerClosed)), "{ended:?}");
    assert!(permits_held(&pool, permits).await.is_empty());
    assert!(!first.is_held());
    first.release().await.unwrap();
    second.release().await.unwrap();
}
