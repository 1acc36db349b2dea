//! Inspection shows a semaphore as one row (namespace, base, k of N held,
//! waiters), not as N unrelated locks: recognised from its waiters'
//! markers, or from a lone holder's last statement, or asked for by key.

mod support;

use std::time::{Duration, Instant};

use pglock::{
    Inspection, LockId, LockManager, ManagerOptions, Namespace, PermitIds, SemaphoreRow,
    SessionGuard, inspect,
};
use sqlx::{Connection, PgConnection, PgPool};
use support::*;

/// `count` session permits of `ns`'s semaphore of `permits` on `key`, each
/// on a connection of its own, as other processes would hold them.
async fn hold(ns: &Namespace, key: i64, permits: u32, count: u32) -> Vec<SessionGuard> {
    let url = pglock::testing::database_url().expect("a test database");
    let mut guards = Vec::new();
    for _ in 0..count {
        let conn = PgConnection::connect(&url).await.unwrap();
        guards.push(session_permit(ns, key, permits, conn).await);
    }
    guards
}

/// Inspects until `done` says the inspection shows what the test waits for
/// (waiters that began waiting); panics after 30 s.
async fn inspect_until(pool: &PgPool, done: impl Fn(&Inspection) -> bool) -> Inspection {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let inspection = inspect(pool).await.unwrap();
        if done(&inspection) {
            return inspection;
        }
        assert!(
            Instant::now() < deadline,
            "not seen within 30 s: {inspection:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The row of the semaphore whose permits are `ids`, as `seen` shows it.
fn row_of(seen: &Inspection, ids: PermitIds) -> Option<&SemaphoreRow> {
    seen.semaphores()
        .iter()
        .find(|row| row.base() == ids.base())
}

/// `row`'s holders as [`permits_held`] lists them: (index, pid).
fn shown_holders(row: &SemaphoreRow) -> Vec<(i32, i32)> {
    row.holders()
        .iter()
        .map(|(i, pid)| (*i as i32, *pid))
        .collect()
}

/// Inspects until the row of the semaphore whose permits are `ids` shows
/// `waiters` waiters.
async fn inspect_until_waiting(pool: &PgPool, ids: PermitIds, waiters: usize) -> Inspection {
    inspect_until(pool, |inspection| {
        inspection
            .semaphores()
            .iter()
            .any(|row| row.base() == ids.base() && row.waiters().len() == waiters)
    })
    .await
}

#[tokio::test]
async fn a_semaphore_with_waiters_is_one_row_of_k_of_n_held() {
    let pool = pool().await;
    let ns = namespace("isem:waiters");
    let ids = ns.permit_ids(&1_i64, 3).unwrap();
    let mut holders = hold(ns, 1, 3, 3).await;
    // The holders run other statements: their markers are gone.
    for guard in &mut holders {
        sqlx::query("SELECT 1")
            .execute(guard.connection())
            .await
            .unwrap();
    }
    // Two waiters: a transaction's and a manager's.
    // It keeps its permit until told, so that what inspection sees after a
    // holder leaves is settled: 3 held, 1 waiting.
    let (done, finish) = tokio::sync::oneshot::channel::<()>();
    let xact_waiter = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            let permit = ns.semaphore(&1_i64, 3).acquire(&mut tx).await.unwrap();
            let _ = finish.await;
            tx.commit().await.unwrap();
            permit
        })
    };
    let manager = LockManager::new(connect_options(), ManagerOptions::default());
    let managed = manager.semaphore(ns, &1_i64, 3).acquire();
    tokio::pin!(managed);
    let seen = tokio::select! {
        seen = inspect_until_waiting(&pool, ids, 2) => seen,
        guard = &mut managed => panic!("granted while every permit is held: {guard:?}"),
    };
    let row = row_of(&seen, ids).unwrap();
    assert_eq!(row.namespace(), Some(ns.label()));
    assert_eq!(row.permits(), Some(3));
    assert_eq!(row.held(), 3);
    let held = permits_held(&pool, ids).await;
    assert_eq!(shown_holders(row), held);
    assert_eq!(
        row.to_string(),
        format!(
            "{} (permits of {}): 3 of 3 held, 2 waiting",
            ns.label(),
            ids.base()
        )
    );
    // Not as locks of their own.
    assert!(
        seen.plain_locks()
            .all(|lock| ids.index_of(lock.id()).is_none())
    );
    assert_eq!(
        seen.locks()
            .iter()
            .filter(|lock| lock.semaphore() == Some(ids.base()))
            .count(),
        5
    );
    // The caller who knows the semaphore gets the same row.
    assert_eq!(&seen.semaphore(ns, &1_i64, 3).unwrap(), row);

    // A holder leaves: a waiter takes its permit.
    holders.pop().unwrap().release().await.unwrap();
    let seen = inspect_until(&pool, |inspection| {
        inspection
            .semaphores()
            .iter()
            .any(|row| row.base() == ids.base() && row.waiters().len() == 1 && row.held() == 3)
    })
    .await;
    assert_eq!(seen.semaphore(ns, &1_i64, 3).unwrap().waiters().len(), 1);
    drop(holders);
    drop(done);
    let managed = managed.await.unwrap();
    let taken = xact_waiter.await.unwrap();
    assert!(managed.permit().unwrap().index() < 3 && taken.index() < 3);
}

#[tokio::test]
async fn a_lone_holder_is_recognised_by_its_last_statement_until_it_runs_another() {
    let pool = pool().await;
    let ns = namespace("isem:holder");
    let ids = ns.permit_ids(&2_i64, 2).unwrap();
    let mut holders = hold(ns, 2, 2, 1).await;
    let seen = inspect(&pool).await.unwrap();
    let row = row_of(&seen, ids).expect("recognised by the holder's try");
    assert_eq!(row.namespace(), Some(ns.label()));
    assert_eq!(
        (row.held(), row.permits()),
        (1, None),
        "a try does not say N"
    );
    assert_eq!(
        row.to_string(),
        format!(
            "{} (permits of {}): 1 of ? held, 0 waiting",
            ns.label(),
            ids.base()
        )
    );

    sqlx::query("SELECT 1")
        .execute(holders[0].connection())
        .await
        .unwrap();
    let seen = inspect(&pool).await.unwrap();
    assert!(seen.semaphores().iter().all(|row| row.base() != ids.base()));
    let known = seen.semaphore(ns, &2_i64, 2).unwrap();
    assert_eq!((known.held(), known.permits()), (1, Some(2)));
    assert_eq!(known.holders()[0].1, permits_held(&pool, ids).await[0].1);
    assert!(known.waiters().is_empty());
}

/// A transaction that holds `count` plain locks of `ns`, keys `first..`:
/// neighbouring keys, whose ids share all but their low bits.
async fn hold_plain(
    pool: &PgPool,
    ns: &Namespace,
    keys: std::ops::Range<i64>,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.unwrap();
    for key in keys {
        assert!(ns.lock(&key).try_acquire(&mut tx).await.unwrap());
    }
    tx
}

/// Asserts that `seen` shows the plain locks of `ns` on `keys` as plain
/// locks, and no semaphore of their ids' high bits.
fn assert_plain(seen: &Inspection, ns: &Namespace, keys: std::ops::Range<i64>) {
    for key in keys {
        let id = ns.id(&key);
        let LockId::BigInt(bits) = id else {
            panic!("a bigint namespace")
        };
        assert!(
            seen.locks().iter().any(|lock| lock.id() == id),
            "key {key} is held: {seen:#?}"
        );
        assert!(
            seen.locks()
                .iter()
                .filter(|lock| lock.id() == id)
                .all(|lock| lock.semaphore().is_none()),
            "plain lock {key} shown as a permit: {seen:#?}"
        );
        assert!(seen.plain_locks().any(|lock| lock.id() == id));
        assert!(
            seen.semaphores()
                .iter()
                .all(|row| row.base() != LockId::BigInt(bits & -1024)),
            "a semaphore made of plain locks: {seen:#?}"
        );
    }
}

#[tokio::test]
async fn a_waiter_for_a_permit_keeps_its_own_plain_lock_a_plain_lock() {
    let pool = pool().await;
    let (plain, sem) = (namespace("isem:own-plain"), namespace("isem:own-sem"));
    let ids = sem.permit_ids(&3_i64, 1).unwrap();
    let _holder = hold(sem, 3, 1, 1).await;
    // Other backends hold neighbours of the waiter's plain lock.
    let _neighbours = hold_plain(&pool, plain, 40..42).await;
    // The waiter holds one plain lock, then waits for the busy permit.
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            assert!(plain.lock(&42_i64).try_acquire(&mut tx).await.unwrap());
            sem.semaphore(&3_i64, 1).acquire(&mut tx).await.unwrap();
            tx
        })
    };
    let seen = inspect_until_waiting(&pool, ids, 1).await;
    assert_plain(&seen, plain, 40..43);
    let row = seen.semaphore(sem, &3_i64, 1).unwrap();
    assert_eq!((row.held(), row.waiters().len()), (1, 1));
    waiter.abort();
}

#[tokio::test]
async fn a_failed_try_leaves_the_plain_lock_it_holds_a_plain_lock() {
    let pool = pool().await;
    let (plain, sem) = (namespace("isem:try-plain"), namespace("isem:try-sem"));
    let _holder = hold(sem, 4, 1, 1).await;
    let _neighbours = hold_plain(&pool, plain, 50..52).await;
    let mut tx = hold_plain(&pool, plain, 52..53).await;
    assert!(
        sem.semaphore(&4_i64, 1)
            .try_acquire(&mut tx)
            .await
            .unwrap()
            .is_none()
    );
    let seen = inspect(&pool).await.unwrap();
    assert_plain(&seen, plain, 50..53);
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn a_permit_waiter_has_waited_since_its_wait_began_not_since_its_last_slice() {
    let pool = pool().await;
    let ns = namespace("isem:waited");
    let ids = ns.permit_ids(&5_i64, 1).unwrap();
    let _holder = hold(ns, 5, 1, 1).await;
    let url = pglock::testing::database_url().unwrap();
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let waiter = tokio::spawn(async move {
        let _ = ns
            .session_semaphore(&5_i64, 1)
            .timeout(Duration::from_secs(60))
            .acquire(conn)
            .await;
    });
    // Waiting for over a second by the server's clock: ten slices at least.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let long: Option<bool> = sqlx::query_scalar(
            "SELECT clock_timestamp() - query_start > interval '1 s' \
               AND starts_with(query, '/* pglock ') \
             FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
        )
        .bind(pid)
        .fetch_optional(&pool)
        .await
        .unwrap();
        if long == Some(true) {
            break;
        }
        assert!(Instant::now() < deadline, "the waiter waits");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = inspect_until(&pool, |inspection| {
        inspection.waiting().any(|lock| lock.pid() == pid)
    })
    .await;
    let row = seen.waiting().find(|lock| lock.pid() == pid).unwrap();
    assert_eq!(ids.index_of(row.id()), Some(0));
    let waited = row.waited().expect("a waiter's wait");
    assert!(waited >= Duration::from_secs(1), "{waited:?}: {row:#?}");
    waiter.abort();
}

#[tokio::test]
async fn a_pair_space_semaphore_is_one_row_in_its_class() {
    static TENANTS: Namespace = Namespace::named_pair("test:isem:pair");
    let pool = pool().await;
    // A key of its own per run: the namespace is shared by every run.
    let key = i64::from(std::process::id()) * 1000 + 7;
    let ids = TENANTS.permit_ids(&key, 2).unwrap();
    let _holders = hold(&TENANTS, key, 2, 2).await;
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            let _ = TENANTS.semaphore(&key, 2).acquire(&mut tx).await;
            tx
        })
    };
    let seen = inspect_until_waiting(&pool, ids, 1).await;
    let row = row_of(&seen, ids).unwrap();
    let LockId::Pair(class, _) = ids.base() else {
        panic!("a pair")
    };
    assert!(matches!(TENANTS.id(&key), LockId::Pair(c, _) if c == class));
    assert_eq!((row.held(), row.permits()), (2, Some(2)));
    let held = permits_held(&pool, ids).await;
    assert_eq!(shown_holders(row), held);
    assert_eq!(
        row.to_string(),
        format!(
            "test:isem:pair (permits of {}): 2 of 2 held, 1 waiting",
            ids.base()
        )
    );
    assert!(row.to_string().contains(&format!("(permits of ({class}, ")));
    assert!(
        seen.plain_locks()
            .all(|lock| ids.index_of(lock.id()).is_none())
    );
    waiter.abort();
}
