//! Transaction-scoped locks against a real PostgreSQL: exclusion, lifetime,
//! timeouts and their restore, error causes, savepoints, ordering.

mod support;

use std::time::Duration;

use pglock::{ConflictCause, Error, LockId, Mode, Namespace, XactLockSet, testing};
use sqlx::{PgPool, Postgres, Transaction};
use support::*;

#[tokio::test]
async fn exclusive_excludes_exclusive_and_shared() {
    let pool = pool().await;
    let ns = namespace("exclusive_excludes");
    let holder = hold(&pool, ns, 1).await;

    let mut other = pool.begin().await.unwrap();
    assert!(!ns.lock(&1_i64).try_acquire(&mut other).await.unwrap());
    assert!(
        !ns.lock(&1_i64)
            .shared()
            .try_acquire(&mut other)
            .await
            .unwrap()
    );
    assert!(
        !testing::holds(&mut other, ns, &1_i64, Mode::Shared)
            .await
            .unwrap()
    );
    assert_eq!(holders(&pool, ns.id(&1_i64)).await, vec![holder.pid()]);

    holder.release().await.unwrap();
    assert!(ns.lock(&1_i64).try_acquire(&mut other).await.unwrap());
    testing::assert_holds(&mut other, ns, &1_i64, Mode::Exclusive).await;
}

#[tokio::test]
async fn shared_holders_do_not_block_each_other() {
    let pool = pool().await;
    let ns = namespace("shared_coexist");
    let mut first = pool.begin().await.unwrap();
    let mut second = pool.begin().await.unwrap();
    ns.lock(&"doc")
        .shared()
        .no_wait()
        .acquire(&mut first)
        .await
        .unwrap();
    ns.lock(&"doc")
        .shared()
        .no_wait()
        .acquire(&mut second)
        .await
        .unwrap();

    let locks = locks_on(&pool, ns.id(&"doc")).await;
    assert_eq!(locks.len(), 2);
    assert!(
        locks
            .iter()
            .all(|(_, mode, granted)| mode == "ShareLock" && *granted)
    );
    assert!(
        !ns.lock(&"doc")
            .try_acquire(&mut pool.begin().await.unwrap())
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_queued_exclusive_waiter_blocks_a_new_shared_request() {
    let pool = pool().await;
    let (ns, id) = fresh_key("queued_exclusive", 7);
    let mut reader = pool.begin().await.unwrap();
    ns.lock(&7_i64).shared().acquire(&mut reader).await.unwrap();

    let writer = spawn_xact_acquire(&pool, ns.lock(&7_i64));
    wait_for_waiters(&pool, id, 1).await;

    let mut late_reader = pool.begin().await.unwrap();
    assert!(
        !ns.lock(&7_i64)
            .shared()
            .try_acquire(&mut late_reader)
            .await
            .unwrap(),
        "a shared request must queue behind the waiting exclusive one"
    );
    reader.commit().await.unwrap();
    writer.await.unwrap().unwrap();
}

/// Takes key 1 of `ns` in `mode` in a transaction, checks that its backend
/// still holds it after another statement, ends the transaction (a commit
/// when `commit`, else a rollback) and checks that nobody holds it then.
async fn assert_held_until_the_transaction_ends(ns: &'static Namespace, mode: Mode, commit: bool) {
    let pool = pool().await;
    let id = ns.id(&1_i64);
    let mut tx = pool.begin().await.unwrap();
    ns.lock(&1_i64)
        .with_mode(mode)
        .acquire(&mut tx)
        .await
        .unwrap();
    let pid = backend_pid(&mut tx).await;
    sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
    assert_eq!(
        holders(&pool, id).await,
        vec![pid],
        "held across statements"
    );
    match commit {
        true => tx.commit().await.unwrap(),
        false => tx.rollback().await.unwrap(),
    }
    assert!(holders(&pool, id).await.is_empty(), "released at the end");
}

#[tokio::test]
async fn locks_end_at_commit_not_before() {
    let ns = namespace("end_at_commit");
    assert_held_until_the_transaction_ends(ns, Mode::Exclusive, true).await;
}

#[tokio::test]
async fn locks_end_at_rollback_not_before() {
    let ns = namespace("end_at_rollback");
    assert_held_until_the_transaction_ends(ns, Mode::Shared, false).await;
}

#[tokio::test]
async fn a_timeout_becomes_a_conflict_naming_the_lock() {
    let pool = pool().await;
    let ns = namespace("timeout_conflict");
    let _holder = hold(&pool, ns, 42).await;

    let mut waiter = pool.begin().await.unwrap();
    let request = ns.lock(&42_i64).shared();
    let outcome = request
        .timeout(Duration::from_millis(200))
        .acquire(&mut waiter)
        .await;
    assert!(outcome.as_ref().is_err_and(Error::is_retryable));
    let conflict = expect_conflict(outcome, ConflictCause::LockTimeout);
    assert_eq!(conflict.sqlstate(), "55P03");
    assert_eq!(conflict.lock().namespace(), ns.label());
    assert_eq!(conflict.lock().id(), ns.id(&42_i64));
    assert_eq!(conflict.lock().mode(), Mode::Shared);
    assert!(
        conflict.waited() >= Duration::from_millis(150),
        "{conflict}"
    );
}

#[tokio::test]
async fn a_stricter_existing_lock_timeout_wins_over_the_cap() {
    let pool = pool().await;
    let ns = namespace("stricter_wins");
    let _holder = hold(&pool, ns, 1).await;

    let mut waiter = pool.begin().await.unwrap();
    set_local(&mut waiter, "lock_timeout", "100ms").await;
    // With a 10 minute cap, only the caller's 100ms can end this wait.
    let request = ns.lock(&1_i64).timeout(Duration::from_secs(600));
    let outcome = request.acquire(&mut waiter).await;
    let conflict = expect_conflict(outcome, ConflictCause::LockTimeout);
    assert!(conflict.waited() < Duration::from_secs(60), "{conflict}");
}

#[tokio::test]
async fn a_longer_existing_lock_timeout_is_capped() {
    let pool = pool().await;
    let ns = namespace("longer_capped");
    let holder = hold(&pool, ns, 1).await;
    for previous in ["1h", "1d", "30s"] {
        let mut waiter = pool.begin().await.unwrap();
        set_local(&mut waiter, "lock_timeout", previous).await;
        let request = ns.lock(&1_i64).timeout(Duration::from_millis(100));
        let outcome = request.acquire(&mut waiter).await;
        let conflict = expect_conflict(outcome, ConflictCause::LockTimeout);
        assert!(
            conflict.waited() < Duration::from_secs(20),
            "{previous}: {conflict}"
        );
    }
    holder.release().await.unwrap();
}

/// Waits for a fresh key of `ns` after `key` (in `mode`, for at most 5 s),
/// found busy once before when `busy_before`, in a transaction whose
/// `lock_timeout` is `previous`, against a holder that lets go as soon as
/// the server sees the wait. On a busy machine a strict `previous` may
/// still run out first: that is no successful wait, and the next key is
/// tried, up to five times. Returns the transaction, which holds the lock,
/// and the lock's id.
async fn successful_wait(
    pool: &PgPool,
    ns: &'static Namespace,
    key: &mut i64,
    (mode, busy_before): (Mode, bool),
    previous: &str,
) -> (Transaction<'static, Postgres>, LockId) {
    for attempt in 1..=5 {
        *key += 1;
        if busy_before {
            find_busy_once(pool, ns, *key).await;
        }
        let id = ns.id(&*key);
        let holder = hold_until_awaited(pool, id).await;
        let mut tx = pool.begin().await.unwrap();
        set_local(&mut tx, "lock_timeout", previous).await;
        let request = ns
            .lock(&*key)
            .with_mode(mode)
            .timeout(Duration::from_secs(5));
        let outcome = request.acquire(&mut tx).await;
        holder.await.unwrap();
        match outcome {
            Err(Error::Conflict(conflict))
                if conflict.cause() == ConflictCause::LockTimeout && attempt < 5 => {}
            other => {
                let acquired = other
                    .unwrap_or_else(|error| panic!("wait with lock_timeout {previous}: {error}"));
                assert!(acquired.was_contended(), "the lock was busy at first");
                return (tx, id);
            }
        }
    }
    unreachable!("the fifth attempt returns")
}

#[tokio::test]
async fn a_successful_capped_wait_restores_lock_timeout_byte_for_byte() {
    let pool = pool().await;
    let ns = namespace("restore_exact");
    let mut key = 0_i64;
    for previous in ["0", "100ms", "1min", "10s", "1500ms", "1d"] {
        let waited = (Mode::Exclusive, false);
        let (mut tx, id) = successful_wait(&pool, ns, &mut key, waited, previous).await;
        assert_eq!(lock_timeout(&mut tx).await, previous);
        assert_eq!(holders(&pool, id).await, vec![backend_pid(&mut tx).await]);
        tx.commit().await.unwrap();
    }
}

/// Waits without a timeout for key 1 of `ns` (found busy once before when
/// `busy_before`) in a transaction whose `lock_timeout` is `7s`, against a
/// holder that lets go once the wait is seen; the wait leaves
/// `lock_timeout` as it was.
async fn assert_an_unbounded_wait_leaves_lock_timeout_untouched(
    ns: &'static Namespace,
    busy_before: bool,
) {
    let pool = pool().await;
    if busy_before {
        find_busy_once(&pool, ns, 1).await;
    }
    let holder = hold_until_awaited(&pool, ns.id(&1_i64)).await;
    let mut tx = pool.begin().await.unwrap();
    set_local(&mut tx, "lock_timeout", "7s").await;
    let acquired = ns.lock(&1_i64).acquire(&mut tx).await.unwrap();
    assert!(acquired.was_contended());
    assert_eq!(lock_timeout(&mut tx).await, "7s");
    holder.await.unwrap();
}

#[tokio::test]
async fn an_unbounded_wait_leaves_lock_timeout_untouched() {
    let ns = namespace("unbounded_wait");
    assert_an_unbounded_wait_leaves_lock_timeout_untouched(ns, false).await;
}

#[tokio::test]
async fn a_statement_timeout_during_the_wait_has_its_own_cause() {
    let pool = pool().await;
    let ns = namespace("statement_timeout");
    let _holder = hold(&pool, ns, 1).await;

    let mut waiter = pool.begin().await.unwrap();
    set_local(&mut waiter, "statement_timeout", "150ms").await;
    let outcome = ns.lock(&1_i64).acquire(&mut waiter).await;
    let conflict = expect_conflict(outcome, ConflictCause::StatementTimeoutOrCancel);
    assert_eq!(conflict.sqlstate(), "57014");
}

#[tokio::test]
async fn a_real_deadlock_maps_to_the_deadlock_cause() {
    let pool = pool().await;
    let ns = namespace("deadlock");
    let (a, b) = (ns.id(&1_i64), ns.id(&2_i64));
    let mut first = pool.begin().await.unwrap();
    let mut second = pool.begin().await.unwrap();
    ns.lock(&1_i64).acquire(&mut first).await.unwrap();
    ns.lock(&2_i64).acquire(&mut second).await.unwrap();

    // first waits for b; once it is seen waiting, second waits for a.
    let first_wait = tokio::spawn(async move {
        let result = ns.lock(&2_i64).acquire(&mut first).await;
        (result, first)
    });
    wait_for_waiters(&pool, b, 1).await;
    let second_result = ns.lock(&1_i64).acquire(&mut second).await;
    let (first_result, _first) = first_wait.await.unwrap();

    // PostgreSQL aborts exactly one of them; the other then gets its lock.
    let (failed, succeeded) = match (first_result, second_result) {
        (Err(error), Ok(_)) | (Ok(_), Err(error)) => (error, ()),
        other => panic!("expected exactly one deadlock victim, got {other:?}"),
    };
    let () = succeeded;
    let conflict = expect_conflict(Err::<(), _>(failed), ConflictCause::Deadlock);
    assert_eq!(conflict.sqlstate(), "40P01");
    assert!([a, b].contains(&conflict.lock().id()));
}

#[tokio::test]
async fn with_a_savepoint_a_conflict_leaves_the_transaction_usable() {
    let pool = pool().await;
    let ns = namespace("savepoint");
    let _holder = hold(&pool, ns, 2).await;

    let mut tx = pool.begin().await.unwrap();
    ns.lock(&1_i64).acquire(&mut tx).await.unwrap();
    set_local(&mut tx, "lock_timeout", "1min").await;
    let request = ns.lock(&2_i64).timeout(Duration::from_millis(100));
    let outcome = request.in_savepoint().acquire(&mut tx).await;
    expect_conflict(outcome, ConflictCause::LockTimeout);

    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(one, 1, "the transaction still runs statements");
    assert_eq!(lock_timeout(&mut tx).await, "1min", "the cap was undone");
    let pid = backend_pid(&mut tx).await;
    assert_eq!(
        holders(&pool, ns.id(&1_i64)).await,
        vec![pid],
        "earlier locks kept"
    );
    assert!(!holders(&pool, ns.id(&2_i64)).await.contains(&pid));
}

#[tokio::test]
async fn without_a_savepoint_a_conflict_aborts_the_transaction() {
    let pool = pool().await;
    let ns = namespace("no_savepoint");
    let mut tx = pool.begin().await.unwrap();
    let _holder = time_out_behind_a_holder(&pool, ns, 1, &mut tx).await;
    let error = sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap_err();
    assert_eq!(
        error.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("25P02"),
        "in failed transaction"
    );
}

#[tokio::test]
async fn a_savepoint_wait_that_succeeds_keeps_the_lock() {
    let pool = pool().await;
    let (ns, id) = fresh_key("savepoint_success", 3);
    let holder = hold_until_awaited(&pool, id).await;
    let mut tx = pool.begin().await.unwrap();
    let acquired = ns
        .lock(&3_i64)
        .timeout(Duration::from_secs(5))
        .in_savepoint()
        .acquire(&mut tx)
        .await
        .unwrap();
    assert!(acquired.was_contended());
    assert_eq!(holders(&pool, id).await, vec![backend_pid(&mut tx).await]);
    assert_eq!(lock_timeout(&mut tx).await, "0");
    holder.await.unwrap();
}

#[tokio::test]
async fn no_wait_fails_busy_and_try_acquire_says_false() {
    let pool = pool().await;
    let ns = namespace("no_wait");
    let _holder = hold(&pool, ns, 5).await;

    let mut tx = pool.begin().await.unwrap();
    match ns.lock(&5_i64).no_wait().acquire(&mut tx).await {
        Err(Error::Busy(lock)) => {
            assert_eq!(lock.namespace(), ns.label());
            assert_eq!(lock.id(), ns.id(&5_i64));
            assert_eq!(lock.mode(), Mode::Exclusive);
        }
        other => panic!("expected busy, got {other:?}"),
    }
    assert!(!ns.lock(&5_i64).try_acquire(&mut tx).await.unwrap());
    assert!(ns.lock(&6_i64).try_acquire(&mut tx).await.unwrap());
}

#[tokio::test]
async fn two_tasks_locking_in_opposite_orders_never_deadlock() {
    let pool = pool().await;
    let ns = namespace("opposite_orders");
    let mut tasks = Vec::new();
    for order in [[1_i64, 2], [2, 1]] {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..300 {
                let mut tx = pool.begin().await.unwrap();
                ns.lock_many(order)
                    .timeout(Duration::from_secs(30))
                    .acquire(&mut tx)
                    .await
                    .expect("ordered acquisition never deadlocks");
                tokio::task::yield_now().await;
                tx.commit().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn a_lock_set_takes_every_key_once_and_the_strongest_mode() {
    let pool = pool().await;
    let ns = namespace("lock_set");
    let other = namespace("lock_set_other");
    let mut tx = pool.begin().await.unwrap();
    XactLockSet::new()
        .shared(ns, &3_i64)
        .exclusive(ns, &3_i64)
        .shared(ns, &1_i64)
        .shared(other, "x")
        .acquire(&mut tx)
        .await
        .unwrap();
    let pid = backend_pid(&mut tx).await;
    assert_eq!(
        locks_on(&pool, ns.id(&3_i64)).await,
        vec![(pid, "ExclusiveLock".to_owned(), true)]
    );
    assert_eq!(
        locks_on(&pool, ns.id(&1_i64)).await,
        vec![(pid, "ShareLock".to_owned(), true)]
    );
    assert_eq!(holders(&pool, other.id(&"x")).await, vec![pid]);
}

#[tokio::test]
async fn a_lock_set_waits_for_a_busy_key_under_one_deadline() {
    let pool = pool().await;
    let ns = namespace("set_deadline");
    let _holder = hold(&pool, ns, 2).await;

    let mut tx = pool.begin().await.unwrap();
    let request = ns
        .lock_many([1_i64, 2, 3])
        .timeout(Duration::from_millis(200));
    let outcome = request.acquire(&mut tx).await;
    let conflict = expect_conflict(outcome, ConflictCause::LockTimeout);
    assert_eq!(conflict.lock().id(), ns.id(&2_i64));
}

#[tokio::test]
async fn a_lock_set_that_waited_holds_every_key_afterwards() {
    let pool = pool().await;
    let ns = namespace("set_waited");
    let busy = ns.id(&2_i64);
    let holder = hold_until_awaited(&pool, busy).await;
    let mut tx = pool.begin().await.unwrap();
    let acquired = ns
        .lock_many([3_i64, 2, 1])
        .timeout(Duration::from_secs(5))
        .acquire(&mut tx)
        .await
        .unwrap();
    assert!(acquired.was_contended());
    let pid = backend_pid(&mut tx).await;
    for key in [1_i64, 2, 3] {
        assert_eq!(holders(&pool, ns.id(&key)).await, vec![pid], "key {key}");
    }
    assert_eq!(lock_timeout(&mut tx).await, "0");
    holder.await.unwrap();
}

#[tokio::test]
async fn the_marker_names_the_namespace_of_a_waiting_backend() {
    let pool = pool().await;
    let (ns, id) = fresh_key("marker", 1);
    let holder = hold(&pool, ns, 1).await;

    let waiter = spawn_xact_acquire(&pool, ns.lock(&1_i64).timeout(Duration::from_secs(30)));
    let waiter_pid = testing::wait_for_waiter(&pool, ns, Duration::from_secs(30))
        .await
        .unwrap()
        .expect("a backend waits on the namespace");
    assert_eq!(wait_for_waiters(&pool, id, 1).await, vec![waiter_pid]);
    let query = current_query(&pool, waiter_pid).await;
    assert!(
        query.starts_with(&format!("/* pglock ns={} */", ns.label())),
        "{query}"
    );
    holder.release().await.unwrap();
    waiter.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_connection_outside_a_transaction_gets_a_typed_error_and_no_lock() {
    let pool = pool().await;
    let ns = namespace("outside_transaction");
    let mut conn = pool.acquire().await.unwrap();
    let error = ns.lock(&1_i64).acquire(&mut conn).await.unwrap_err();
    assert!(matches!(error, Error::NotInTransaction), "{error:?}");
    let error = ns
        .lock_many([1_i64, 2])
        .acquire(&mut conn)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::NotInTransaction), "{error:?}");
    assert!(holders(&pool, ns.id(&1_i64)).await.is_empty());
    assert!(holders(&pool, ns.id(&2_i64)).await.is_empty());
}

#[tokio::test]
async fn an_impossible_timeout_is_refused_before_any_lock() {
    let pool = pool().await;
    let ns = namespace("bad_timeout");
    let mut tx = pool.begin().await.unwrap();
    for timeout in [Duration::ZERO, Duration::from_secs(30 * 24 * 3600)] {
        let error = ns
            .lock(&1_i64)
            .timeout(timeout)
            .acquire(&mut tx)
            .await
            .unwrap_err();
        assert!(matches!(error, Error::InvalidTimeout { .. }), "{error:?}");
    }
    assert!(holders(&pool, ns.id(&1_i64)).await.is_empty());
    // Sub-millisecond rounds up to a real cap rather than to "no limit".
    ns.lock(&1_i64)
        .timeout(Duration::from_micros(10))
        .acquire(&mut tx)
        .await
        .unwrap();
}

static EXTREMES: pglock::Namespace = pglock::Namespace::raw(0, "test:extremes");
static EXTREME_PAIRS: pglock::Namespace =
    pglock::Namespace::raw_pair(i32::MIN, "test:extreme_pairs");

#[tokio::test]
async fn the_extreme_ids_can_be_waited_for_on_every_path() {
    let pool = pool().await;
    for key in [i64::MIN, i64::MAX] {
        let id = EXTREMES.id(&key);
        assert_eq!(id, pglock::LockId::BigInt(key));
        for variant in ["savepoint", "session"] {
            let holder = hold_until_awaited(&pool, id).await;
            match variant {
                "savepoint" => {
                    let mut tx = pool.begin().await.unwrap();
                    EXTREMES
                        .lock(&key)
                        .timeout(Duration::from_secs(30))
                        .in_savepoint()
                        .acquire(&mut tx)
                        .await
                        .unwrap_or_else(|e| panic!("{key} {variant}: {e}"));
                    tx.commit().await.unwrap();
                }
                _ => {
                    EXTREMES
                        .session_lock(&key)
                        .timeout(Duration::from_secs(30))
                        .acquire(pool.acquire().await.unwrap())
                        .await
                        .unwrap_or_else(|e| panic!("{key} {variant}: {e}"))
                        .release()
                        .await
                        .unwrap();
                }
            }
            holder.await.unwrap();
        }
    }
    // The pair space's extremes, through the literal savepoint wait.
    let holder = testing::hold_lock(&pool, &EXTREME_PAIRS, &i32::MIN, Mode::Exclusive)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    let request = EXTREME_PAIRS
        .lock(&i32::MIN)
        .timeout(Duration::from_millis(50));
    let outcome = request.in_savepoint().acquire(&mut tx).await;
    expect_conflict(outcome, ConflictCause::LockTimeout);
    holder.release().await.unwrap();
}

#[tokio::test]
async fn a_lock_set_that_does_not_wait_takes_all_or_nothing() {
    let pool = pool().await;
    let ns = namespace("set_all_or_nothing");
    let holder = hold(&pool, ns, 3).await;
    let mut tx = pool.begin().await.unwrap();
    ns.lock(&0_i64).acquire(&mut tx).await.unwrap();
    let error = ns
        .lock_many([1_i64, 2, 3, 4])
        .no_wait()
        .acquire(&mut tx)
        .await
        .unwrap_err();
    match error {
        Error::Busy(lock) => assert_eq!(lock.id(), ns.id(&3_i64)),
        other => panic!("expected busy, got {other:?}"),
    }
    let pid = backend_pid(&mut tx).await;
    for key in [1_i64, 2, 4] {
        assert!(
            !holders(&pool, ns.id(&key)).await.contains(&pid),
            "key {key} given back"
        );
    }
    assert_eq!(
        holders(&pool, ns.id(&0_i64)).await,
        vec![pid],
        "earlier locks kept"
    );
    holder.release().await.unwrap();
    ns.lock_many([1_i64, 2, 3, 4])
        .no_wait()
        .acquire(&mut tx)
        .await
        .expect("all free now");
    for key in [1_i64, 2, 3, 4] {
        assert_eq!(holders(&pool, ns.id(&key)).await, vec![pid]);
    }
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(one, 1, "the transaction is usable");
}

#[tokio::test]
async fn a_lock_found_busy_before_is_waited_for_in_one_statement_that_restores_lock_timeout() {
    let pool = pool().await;
    let ns = namespace("one_statement_restore");
    let mut key = 0_i64;
    for previous in ["0", "100ms", "1min", "1500ms", "1d"] {
        let waited = (Mode::Shared, true);
        let (mut tx, id) = successful_wait(&pool, ns, &mut key, waited, previous).await;
        assert_eq!(lock_timeout(&mut tx).await, previous);
        let pid = backend_pid(&mut tx).await;
        assert_eq!(
            locks_on(&pool, id).await,
            vec![(pid, "ShareLock".to_owned(), true)]
        );
        tx.commit().await.unwrap();
    }
}

#[tokio::test]
async fn a_lock_found_busy_before_keeps_a_stricter_lock_timeout_and_caps_a_longer_one() {
    let pool = pool().await;
    let ns = namespace("one_statement_cap");
    let holder = hold_found_busy(&pool, ns, 1).await;
    for (previous, timeout) in [("100ms", 600_000), ("1h", 100), ("0", 100)] {
        let mut waiter = pool.begin().await.unwrap();
        set_local(&mut waiter, "lock_timeout", previous).await;
        let request = ns.lock(&1_i64).timeout(Duration::from_millis(timeout));
        let outcome = request.acquire(&mut waiter).await;
        let conflict = expect_conflict(outcome, ConflictCause::LockTimeout);
        assert_eq!(conflict.lock().id(), ns.id(&1_i64));
        assert_eq!(conflict.lock().mode(), Mode::Exclusive);
        assert!(
            conflict.waited() < Duration::from_secs(20),
            "{previous}, {timeout}ms: {conflict}"
        );
    }
    holder.release().await.unwrap();
}

#[tokio::test]
async fn a_lock_found_busy_before_and_waited_for_without_a_timeout_leaves_lock_timeout_untouched() {
    let ns = namespace("one_statement_unbounded");
    assert_an_unbounded_wait_leaves_lock_timeout_untouched(ns, true).await;
}

#[tokio::test]
async fn a_lock_found_busy_before_but_free_now_is_taken_without_waiting() {
    let pool = pool().await;
    let ns = namespace("one_statement_free");
    find_busy_once(&pool, ns, 1).await;
    let mut tx = pool.begin().await.unwrap();
    set_local(&mut tx, "lock_timeout", "1min").await;
    let request = ns.lock(&1_i64).timeout(Duration::from_secs(5));
    let acquired = request.acquire(&mut tx).await.unwrap();
    assert!(!acquired.was_contended());
    assert_eq!(lock_timeout(&mut tx).await, "1min");
    let pid = backend_pid(&mut tx).await;
    let advisory: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM pg_locks l WHERE l.locktype = 'advisory' AND l.pid = $1",
        pglock::pg_locks::ENCODED
    )))
    .bind(pid)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        advisory,
        vec![ns.id(&1_i64).bigint().unwrap()],
        "the lock, and nothing else"
    );
}

#[tokio::test]
async fn inspection_shows_a_wait_in_one_statement_as_the_lock_it_waits_for() {
    let pool = pool().await;
    let (ns, id) = fresh_key("one_statement_inspection", 1);
    let holder = hold_found_busy(&pool, ns, 1).await;
    let waiter = spawn_xact_acquire(&pool, ns.lock(&1_i64).timeout(Duration::from_secs(30)));
    let waiter_pid = wait_for_waiters(&pool, id, 1).await[0];
    let inspection = pglock::inspect(&pool).await.unwrap();
    let rows: Vec<_> = inspection
        .locks()
        .iter()
        .filter(|row| row.pid() == waiter_pid)
        .map(|row| {
            let named = row
                .namespace()
                .is_some_and(|label| ns.marker() == format!("/* pglock ns={label} */"));
            (row.id(), row.granted(), named)
        })
        .collect();
    assert_eq!(
        rows,
        vec![(id, false, true)],
        "the awaited lock, named, alone"
    );
    holder.release().await.unwrap();
    waiter.await.unwrap().unwrap();
}
