//! A request of a lock manager at its lock budget that waits in-process for
//! a lock (or a permit) one of the manager's own guards holds: the guard's
//! release frees the lock on the server and in the budget alike, and the
//! waiter takes it, never failing with `LockBudget` on the way. The waiter
//! is told once the lock is unlocked on the server, not as the guard lets
//! go of its claim.

mod support;

use std::num::NonZeroUsize;
use std::time::Duration;

use pglock::{LockBudget, LockManager, ManagerOptions};
use support::*;

fn manager(budget: usize) -> LockManager {
    LockManager::new(
        connect_options(),
        ManagerOptions::default()
            .lock_budget(LockBudget::locks(NonZeroUsize::new(budget).unwrap())),
    )
}

#[tokio::test]
async fn a_permit_waiter_at_the_budget_takes_the_permit_a_release_frees() {
    let pool = pool().await;
    let ns = namespace("budget-wait:permit");
    let permits = ns.permit_ids(&1_i64, 2).unwrap();
    let manager = manager(2);
    let first = manager.semaphore(ns, &1_i64, 2).acquire().await.unwrap();
    let second = manager.semaphore(ns, &1_i64, 2).acquire().await.unwrap();
    let freed_index = first.permit().unwrap().index();
    let (events, _capture) = capture::capture();
    let waiter = manager
        .semaphore(ns, &1_i64, 2)
        .timeout(Duration::from_secs(30))
        .acquire();
    tokio::pin!(waiter);
    events.until_it_waits(&mut waiter, "a release").await;
    let (released, taken) = tokio::join!(first.release(), &mut waiter);
    released.unwrap();
    let taken = taken.expect("the freed permit, within the budget");
    assert_eq!(taken.permit().unwrap().index(), freed_index);
    assert_eq!(permits_held(&pool, permits).await.len(), 2);
    taken.release().await.unwrap();
    second.release().await.unwrap();
    assert!(permits_held(&pool, permits).await.is_empty());
}

#[tokio::test]
async fn a_lock_waiter_at_the_budget_takes_the_lock_a_dropped_guard_frees() {
    let pool = pool().await;
    let ns = namespace("budget-wait:lock");
    let manager = manager(1);
    let holder = manager.lock(ns, &1_i64).acquire().await.unwrap();
    let pid = holders(&pool, ns.id(&1_i64)).await[0];
    let (events, _capture) = capture::capture();
    let waiter = manager
        .lock(ns, &1_i64)
        .timeout(Duration::from_secs(30))
        .acquire();
    tokio::pin!(waiter);
    events.until_it_waits(&mut waiter, "a release").await;
    drop(holder);
    let taken = waiter.await.expect("the freed lock, within the budget");
    assert_eq!(holders(&pool, ns.id(&1_i64)).await, vec![pid]);
    taken.release().await.unwrap();
    assert!(holders(&pool, ns.id(&1_i64)).await.is_empty());
}
