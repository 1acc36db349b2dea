//! Transaction-scoped semaphores against a real server: a killed holder's
//! permit free at once; a waiter that finds a permit it does not queue
//! for; two sizes for one key reported; the permits in `pg_locks` exactly
//! the documented ids; timeouts, tries, cancellation, events and the
//! attribute as for locks. (Across processes: `semaphore_processes.rs`;
//! session-level: `semaphore_sessions.rs`.)

mod support;

use std::time::{Duration, Instant};

use pglock::{ConflictCause, Error, LockId, Namespace};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use support::capture::capture;
use support::*;

/// A waiter, in a transaction of its own, for a permit of `ns`'s semaphore
/// on `key`; answers the permit and the backend's pid, and keeps the
/// transaction open until `release` is sent.
fn spawn_permit_waiter(
    pool: &sqlx::PgPool,
    ns: &'static Namespace,
    key: i64,
    permits: u32,
) -> tokio::task::JoinHandle<Result<(pglock::Permit, i32, Instant), Error>> {
    let pool = pool.clone();
    tokio::spawn(async move {
        let mut tx = pool.begin().await?;
        let permit = ns
            .semaphore(&key, permits)
            .timeout(Duration::from_secs(30))
            .acquire(&mut tx)
            .await?;
        let granted = Instant::now();
        let pid = backend_pid(&mut tx).await;
        tx.commit().await?;
        Ok((permit, pid, granted))
    })
}

#[tokio::test]
async fn permits_are_taken_one_by_one_and_then_the_semaphore_is_busy() {
    let pool = pool().await;
    let ns = namespace("sem_fill");
    let permits = ns.permit_ids(&1_i64, 3).unwrap();
    let mut held = take_every_permit(&pool, ns, 1, 3).await;
    let mut indexes: Vec<u32> = held.iter().map(|(permit, ..)| permit.index()).collect();
    indexes.sort();
    assert_eq!(indexes, [0, 1, 2]);
    for (permit, _, pid) in &held {
        assert_eq!(permits.get(permit.index()), Some(permit.id()));
        assert_eq!(permit.permits(), 3);
        assert!(!permit.was_contended());
        assert_eq!(holders(&pool, permit.id()).await, vec![*pid]);
    }
    // The key's own lock is another lock.
    assert!(locks_on(&pool, ns.id(&1_i64)).await.is_empty());

    let mut tx = pool.begin().await.unwrap();
    assert_eq!(
        ns.semaphore(&1_i64, 3).try_acquire(&mut tx).await.unwrap(),
        None
    );
    let busy = ns.semaphore(&1_i64, 3).no_wait().acquire(&mut tx).await;
    match busy {
        Err(Error::Busy(lock)) => {
            assert_eq!(lock.id(), permits.base());
            assert_eq!(lock.namespace(), ns.label());
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    // A plain lock on the key is free.
    assert!(ns.lock(&1_i64).try_acquire(&mut tx).await.unwrap());
    tx.rollback().await.unwrap();

    // The permit a holder gives back is the one free.
    let (freed, tx, _) = held.pop().unwrap();
    tx.rollback().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let again = ns.semaphore(&1_i64, 3).try_acquire(&mut tx).await.unwrap();
    assert_eq!(again.map(|permit| permit.index()), Some(freed.index()));
    assert_eq!(permits_held(&pool, permits).await.len(), 3);
}

#[tokio::test]
async fn bad_sizes_and_no_transaction_are_refused_before_anything_is_sent() {
    let pool = pool().await;
    let ns = namespace("sem_refused");
    let mut tx = pool.begin().await.unwrap();
    for permits in [0, 1025] {
        let refused = ns.semaphore(&1_i64, permits).acquire(&mut tx).await;
        assert!(
            matches!(refused, Err(Error::InvalidPermits { permits: p }) if p == permits),
            "{refused:?}"
        );
        let conn = pool.acquire().await.unwrap();
        let refused = ns.session_semaphore(&1_i64, permits).acquire(conn).await;
        assert!(matches!(refused, Err(Error::InvalidPermits { .. })));
    }
    let mut conn = pool.acquire().await.unwrap();
    let refused = ns.semaphore(&1_i64, 2).acquire(&mut conn).await;
    assert!(
        matches!(refused, Err(Error::NotInTransaction)),
        "{refused:?}"
    );
    let all = ns.permit_ids(&1_i64, 1024).unwrap();
    assert!(permits_held(&pool, all).await.is_empty());
}

/// The ids in `pg_locks` are those of `docs/KEYS.md`, section 4.
#[tokio::test]
async fn the_permits_in_pg_locks_are_exactly_the_documented_ids() {
    let pool = pool().await;
    static BILLING: Namespace = Namespace::named("billing:invoice");
    static TENANTS: Namespace = Namespace::named_pair("tenant:migrate");
    let mut held = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..4 {
        let mut tx = pool.begin().await.unwrap();
        BILLING
            .semaphore(&0_i64, 4)
            .no_wait()
            .acquire(&mut tx)
            .await
            .unwrap();
        TENANTS
            .semaphore(&7_i64, 4)
            .no_wait()
            .acquire(&mut tx)
            .await
            .unwrap();
        pids.push(backend_pid(&mut tx).await);
        held.push(tx);
    }
    let mut rows: Vec<(i64, i16)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {}, l.objsubid FROM pg_locks l \
         WHERE l.locktype = 'advisory' AND l.granted AND l.pid = ANY($1)",
        pglock::pg_locks::ENCODED
    )))
    .bind(&pids)
    .fetch_all(&pool)
    .await
    .unwrap();
    rows.sort();
    let documented: Vec<LockId> = [
        -8_123_215_699_107_237_888_i64,
        -8_123_215_699_107_237_887,
        -8_123_215_699_107_237_886,
        -8_123_215_699_107_237_885,
    ]
    .map(LockId::BigInt)
    .into_iter()
    .chain(
        [1_368_715_264, 1_368_715_265, 1_368_715_266, 1_368_715_267]
            .map(|id| LockId::Pair(1_052_899_235, id)),
    )
    .collect();
    let mut expected: Vec<(i64, i16)> = documented
        .into_iter()
        .map(pglock::pg_locks::encode)
        .collect();
    expected.sort();
    assert_eq!(rows, expected);
}

#[tokio::test]
async fn a_killed_holders_permit_is_free_at_once() {
    let pool = pool().await;
    let ns = namespace("sem_killed");
    let permits = ns.permit_ids(&1_i64, 2).unwrap();
    let mut guards = Vec::new();
    for _ in 0..2 {
        let conn = pool.acquire().await.unwrap();
        let mut guard = ns.session_semaphore(&1_i64, 2).acquire(conn).await.unwrap();
        let pid = backend_pid(guard.connection()).await;
        guards.push((guard, pid));
    }
    // A waiter queues for one of the two permits; its holder is killed.
    let waiter = spawn_permit_waiter(&pool, ns, 1, 2);
    let (waiter_pid, target) = permit_waiter(&pool, permits).await;
    let (guard, victim) = guards
        .iter()
        .find(|(guard, _)| guard.permit().unwrap().index() == target)
        .unwrap();
    assert_eq!(guard.lock().id(), permits.get(target).unwrap());
    terminate_backend(&pool, *victim).await;
    let (permit, pid, _) = waiter.await.unwrap().unwrap();
    assert_eq!((permit.index(), pid), (target, waiter_pid));
    assert!(permit.was_contended());

    // With no one waiting, the other holder's permit is free as soon as
    // its backend is gone.
    let (_, survivor) = guards
        .iter()
        .find(|(guard, _)| guard.permit().unwrap().index() != target)
        .unwrap();
    terminate_backend(&pool, *survivor).await;
    until_gone(
        &pool,
        permits.get(1 - target).unwrap(),
        &[*survivor],
        "killed",
    )
    .await;
    let mut tx = pool.begin().await.unwrap();
    let permit = ns.semaphore(&1_i64, 2).try_acquire(&mut tx).await.unwrap();
    assert!(permit.is_some(), "both permits are free");
}

/// A waiter queues for one permit; another one is freed: the waiter's
/// re-tries find it. Reports how late, over a few rounds.
#[tokio::test]
async fn a_waiter_takes_a_permit_it_does_not_queue_for() {
    let pool = pool().await;
    let ns = namespace("sem_retry");
    let permits = ns.permit_ids(&1_i64, 2).unwrap();
    // Freed as soon as the waiter is seen waiting (its first slice), then
    // once it has waited 400 ms (its slices at their longest, 100 ms).
    for waited_first in [Duration::ZERO, Duration::from_millis(400)] {
        let mut delays = Vec::new();
        for _ in 0..4 {
            let mut held = vec![
                take_permit(&pool, ns, 1, 2).await,
                take_permit(&pool, ns, 1, 2).await,
            ];
            let waiter = spawn_permit_waiter(&pool, ns, 1, 2);
            let (waiter_pid, target) = permit_waiter(&pool, permits).await;
            waiting_for_at_least(&pool, waiter_pid, waited_first).await;
            let other = held
                .iter()
                .position(|(permit, ..)| permit.index() != target)
                .unwrap();
            let (permit, tx, _) = held.remove(other);
            tx.commit().await.unwrap();
            let freed = Instant::now();
            let (taken, pid, granted) = waiter.await.unwrap().unwrap();
            delays.push(granted.duration_since(freed));
            assert_eq!((taken.index(), pid), (permit.index(), waiter_pid));
            for (_, tx, _) in held {
                tx.rollback().await.unwrap();
            }
        }
        delays.sort();
        eprintln!(
            "wake-up for a permit not queued for, freed after {waited_first:?} of waiting: \
             median {:?}, max {:?}",
            delays[delays.len() / 2],
            delays[delays.len() - 1]
        );
    }
}

/// Polls `pg_stat_activity` until backend `pid`'s statement has run for
/// `at_least`, by the server's clock.
async fn waiting_for_at_least(pool: &sqlx::PgPool, pid: i32, at_least: Duration) {
    eventually(
        Duration::from_secs(30),
        "the waiter waits long enough",
        || async {
            let ran: f64 = sqlx::query_scalar(
                "SELECT extract(epoch FROM clock_timestamp() - query_start)::float8 \
             FROM pg_stat_activity WHERE pid = $1",
            )
            .bind(pid)
            .fetch_one(pool)
            .await
            .unwrap();
            ran >= at_least.as_secs_f64()
        },
    )
    .await;
}

#[tokio::test]
async fn two_sizes_on_one_key_are_reported_and_never_exceed_the_larger() {
    let pool = pool().await;
    let ns = namespace("sem_sizes");
    let five = ns.permit_ids(&1_i64, 5).unwrap();
    let held = take_every_permit(&pool, ns, 1, 5).await;
    let mut tx = pool.begin().await.unwrap();
    let refused = ns
        .semaphore(&1_i64, 3)
        .timeout(Duration::from_secs(20))
        .acquire(&mut tx)
        .await;
    match &refused {
        Err(Error::PermitsMismatch {
            semaphore,
            permits,
            seen,
        }) => {
            assert_eq!((*permits, *seen), (3, 5));
            assert_eq!(semaphore.id(), five.base());
        }
        other => panic!("expected PermitsMismatch, got {other:?}"),
    }
    let message = refused.as_ref().unwrap_err().to_string();
    assert!(
        message.contains("with 3 permits, but another holder uses at least 5:"),
        "{message}"
    );
    assert!(!refused.unwrap_err().is_retryable());
    // The transaction is usable, and holds nothing.
    sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
    // A try and `no_wait` don't wait, so they say only that it is busy.
    assert_eq!(
        ns.semaphore(&1_i64, 3).try_acquire(&mut tx).await.unwrap(),
        None
    );
    let busy = ns.semaphore(&1_i64, 3).no_wait().acquire(&mut tx).await;
    assert!(matches!(busy, Err(Error::Busy(_))), "{busy:?}");
    // A larger size takes the permits beyond: never more than the largest.
    let (seven, seven_tx, _) = take_permit(&pool, ns, 1, 7).await;
    assert!(matches!(seven.index(), 5 | 6), "{seven:?}");
    assert_eq!(permits_held(&pool, five).await.len(), 6);
    drop((seven_tx, held, tx));
}

#[tokio::test]
async fn a_timeout_is_a_conflict_that_keeps_the_transaction_and_restores_lock_timeout() {
    let pool = pool().await;
    let ns = namespace("sem_timeout");
    let (_, holder, _) = take_permit(&pool, ns, 1, 1).await;
    let base = ns.permit_ids(&1_i64, 1).unwrap().base();

    let mut tx = pool.begin().await.unwrap();
    set_local(&mut tx, "lock_timeout", "7s").await;
    let outcome = ns
        .semaphore(&1_i64, 1)
        .timeout(Duration::from_millis(100))
        .acquire(&mut tx)
        .await;
    let conflict = expect_conflict(outcome, ConflictCause::LockTimeout);
    assert_eq!(conflict.lock().id(), base);
    assert!(conflict.waited() >= Duration::from_millis(100));
    assert_eq!(lock_timeout(&mut tx).await, "7s");
    sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();

    // A stricter setting of the caller's bounds the wait, and stays.
    set_local(&mut tx, "lock_timeout", "60ms").await;
    let outcome = ns
        .semaphore(&1_i64, 1)
        .timeout(Duration::from_secs(60))
        .acquire(&mut tx)
        .await;
    expect_conflict(outcome, ConflictCause::LockTimeout);
    assert_eq!(lock_timeout(&mut tx).await, "60ms");
    // Without pglock's timeout, the caller's lock_timeout alone.
    let outcome = ns.semaphore(&1_i64, 1).acquire(&mut tx).await;
    expect_conflict(outcome, ConflictCause::LockTimeout);
    assert_eq!(lock_timeout(&mut tx).await, "60ms");

    tx.rollback().await.unwrap();

    // A wait granted its permit by the server's queue restores the setting
    // too (the slice's setting outlives the wait's subtransaction then).
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            set_local(&mut tx, "lock_timeout", "7s").await;
            let permit = ns
                .semaphore(&1_i64, 1)
                .timeout(Duration::from_secs(20))
                .acquire(&mut tx)
                .await
                .unwrap();
            let setting = lock_timeout(&mut tx).await;
            tx.rollback().await.unwrap();
            (permit, setting)
        })
    };
    permit_waiter(&pool, ns.permit_ids(&1_i64, 1).unwrap()).await;
    holder.commit().await.unwrap();
    let (permit, setting) = waiter.await.unwrap();
    assert!(permit.was_contended());
    assert_eq!(setting, "7s");
}

#[tokio::test]
async fn a_wait_whose_future_is_dropped_is_cancelled_and_its_connection_recovers() {
    let observer = cancelling_pool().await;
    let single = pool_of(1).await;
    let ns = namespace("sem_abandoned");
    let permits = ns.permit_ids(&1_i64, 2).unwrap();
    let held = [
        take_permit(&observer, ns, 1, 2).await,
        take_permit(&observer, ns, 1, 2).await,
    ];
    for attempt in 0..5 {
        let waiter = {
            let single = single.clone();
            tokio::spawn(async move {
                let mut tx = single.begin().await.unwrap();
                // No timeout: only a cancel can end this wait.
                ns.semaphore(&1_i64, 2).acquire(&mut tx).await
            })
        };
        let (pid, target) = permit_waiter(&observer, permits).await;
        waiter.abort();
        assert!(waiter.await.unwrap_err().is_cancelled());
        let what = format!("attempt {attempt}: the wait is cancelled");
        until_gone(&observer, permits.get(target).unwrap(), &[pid], &what).await;
        // The pool's only connection serves new work.
        let mut tx = tokio::time::timeout(Duration::from_secs(15), single.begin())
            .await
            .expect("the pooled connection came back")
            .unwrap();
        assert_eq!(
            ns.semaphore(&1_i64, 2).try_acquire(&mut tx).await.unwrap(),
            None
        );
        tx.rollback().await.unwrap();
    }
    drop(held);
}

#[tokio::test]
async fn a_wait_says_it_waits_and_how_it_ended_naming_the_semaphore() {
    let (capture, _guard) = capture();
    let pool = pool().await;
    let ns = namespace("sem_events");
    let permits = ns.permit_ids(&1_i64, 1).unwrap();
    let (_, holder, _) = take_permit(&pool, ns, 1, 1).await;
    let waiter = spawn_permit_waiter(&pool, ns, 1, 1);
    permit_waiter(&pool, permits).await;
    holder.commit().await.unwrap();
    waiter.await.unwrap().unwrap();
    let events: Vec<_> = capture
        .events()
        .into_iter()
        .filter(|event| event.fields["namespace"] == ns.label())
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        events[0].fields["message"],
        "advisory lock is busy; waiting"
    );
    assert_eq!(events[0].fields["key"], permits.base().to_string());
    assert_eq!(events[0].fields["timeout_ms"], "30000");
    assert_eq!(events[1].fields["outcome"], "acquired");
}

#[tokio::test]
async fn run_holds_a_permit_for_the_work_and_gives_it_back() {
    let pool = pool().await;
    let ns = namespace("sem_run");
    let permits = ns.permit_ids(&"job", 2).unwrap();
    let observer = pool.clone();
    let held = ns
        .semaphore(&"job", 2)
        .run(&pool, |_tx| {
            Box::pin(async move { Ok::<_, Error>(permits_held(&observer, permits).await.len()) })
        })
        .await
        .unwrap();
    assert_eq!(held, 1);
    assert!(permits_held(&pool, permits).await.is_empty());
}

/// `#[advisory_lock(permits = 2)]`: at most two calls run the body at once;
/// a third with `skip` is skipped.
#[pglock::advisory_lock(ns = "test:semaphores:attribute", key = tenant, permits = 2, timeout = "20s")]
async fn import(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, tenant: i64) -> Result<i32, Error> {
    Ok(backend_pid(tx).await)
}

#[pglock::advisory_lock(ns = "test:semaphores:attribute", key = tenant, permits = 2, skip)]
async fn import_if_free(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tenant: i64,
) -> Result<Option<()>, Error> {
    let _ = (tx, tenant);
    Ok(Some(()))
}

#[tokio::test]
async fn the_attribute_takes_a_permit_of_a_semaphore() {
    let pool = pool().await;
    static NS: Namespace = Namespace::named("test:semaphores:attribute");
    let tenant = i64::from(uuid::Uuid::new_v4().as_u64_pair().0 as u32);
    let permits = NS.permit_ids(&tenant, 2).unwrap();
    let mut first = pool.begin().await.unwrap();
    let mut second = pool.begin().await.unwrap();
    let pids = [
        import(&mut first, tenant).await.unwrap(),
        import(&mut second, tenant).await.unwrap(),
    ];
    let held = permits_held(&pool, permits).await;
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(held.iter().all(|(_, pid)| pids.contains(pid)));
    let mut third = pool.begin().await.unwrap();
    assert_eq!(import_if_free(&mut third, tenant).await.unwrap(), None);
    first.commit().await.unwrap();
    assert_eq!(import_if_free(&mut third, tenant).await.unwrap(), Some(()));
}

/// A transaction that asks again for a semaphore it holds a permit of
/// takes another permit while one is free (each counts toward N), and its
/// own again once none is (advisory locks are re-entrant): one session
/// never holds more permits than it asked for, and never more than N.
#[tokio::test]
async fn a_transaction_that_asks_again_takes_a_free_permit_then_its_own() {
    let pool = pool().await;
    let ns = namespace("sem_asks_again");
    let permits = ns.permit_ids(&1_i64, 2).unwrap();
    let mut tx = pool.begin().await.unwrap();
    let pid = backend_pid(&mut tx).await;
    let first = ns
        .semaphore(&1_i64, 2)
        .no_wait()
        .acquire(&mut tx)
        .await
        .unwrap();
    assert_eq!(
        permits_held(&pool, permits).await,
        vec![(first.index() as i32, pid)]
    );
    // Each ask starts at the process's next index (other tests ask too):
    // one that starts at the free permit takes it.
    let mut asks = 0;
    while permits_held(&pool, permits).await.len() < 2 {
        let again = ns
            .semaphore(&1_i64, 2)
            .no_wait()
            .acquire(&mut tx)
            .await
            .unwrap();
        assert!(again.index() < 2);
        asks += 1;
        assert!(asks < 64, "the free permit is never taken");
    }
    let both = vec![(0, pid), (1, pid)];
    assert_eq!(permits_held(&pool, permits).await, both);
    for _ in 0..3 {
        let again = ns
            .semaphore(&1_i64, 2)
            .no_wait()
            .acquire(&mut tx)
            .await
            .unwrap();
        assert!(again.index() < 2);
        assert_eq!(permits_held(&pool, permits).await, both);
    }
    // Another session finds the semaphore full.
    let mut other = pool.begin().await.unwrap();
    assert!(
        ns.semaphore(&1_i64, 2)
            .try_acquire(&mut other)
            .await
            .unwrap()
            .is_none()
    );
    other.rollback().await.unwrap();
    tx.rollback().await.unwrap();
}

/// A semaphore's wait is a PL/pgSQL block: a role that may not use the
/// language, or a server without it, gets a typed error when it would
/// wait (a free permit is taken without it).
#[tokio::test]
async fn a_wait_without_plpgsql_fails_with_a_typed_error() {
    let server = private_server(&[]);
    let admin = pool_on(&server, 2).await;
    let ns = namespace("sem_no_plpgsql");
    for statement in [
        "REVOKE USAGE ON LANGUAGE plpgsql FROM PUBLIC",
        "CREATE ROLE no_plpgsql LOGIN",
    ] {
        sqlx::query(statement).execute(&admin).await.unwrap();
    }
    let options = connect_options_of(&server).username("no_plpgsql");
    let role = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let (_, holder, _) = take_permit(&admin, ns, 1, 1).await;

    let expect_refused = async |pool: &PgPool, what: &str| {
        let mut tx = pool.begin().await.unwrap();
        let refused = ns
            .semaphore(&1_i64, 1)
            .timeout(Duration::from_secs(20))
            .acquire(&mut tx)
            .await;
        match &refused {
            Err(Error::PermitWaitUnavailable { semaphore, .. }) => {
                assert_eq!(semaphore.id(), ns.permit_ids(&1_i64, 1).unwrap().base())
            }
            other => panic!("{what}: expected PermitWaitUnavailable, got {other:?}"),
        }
        let error = refused.unwrap_err();
        assert!(!error.is_retryable(), "{what}");
        assert!(error.to_string().contains("PL/pgSQL"), "{what}: {error}");
        tx.rollback().await.unwrap();
    };
    expect_refused(&role, "a role without USAGE").await;
    sqlx::query("DROP EXTENSION plpgsql")
        .execute(&admin)
        .await
        .unwrap();
    expect_refused(&admin, "a server without the language").await;
    // A free permit needs no PL/pgSQL.
    holder.rollback().await.unwrap();
    let mut tx = role.begin().await.unwrap();
    assert!(
        ns.semaphore(&1_i64, 1)
            .try_acquire(&mut tx)
            .await
            .unwrap()
            .is_some()
    );
    tx.rollback().await.unwrap();
}
