//! The structured events a lock emits, captured with a tracing subscriber.

mod support;

use std::time::Duration;

use pglock::ConflictCause;
use support::capture::capture;
use support::*;

#[tokio::test]
async fn a_free_lock_emits_nothing_and_a_busy_one_says_so_once() {
    let (capture, _guard) = capture();
    let pool = pool().await;
    let (ns, id) = fresh_key("events", 9);

    let mut tx = pool.begin().await.unwrap();
    ns.lock(&8_i64).acquire(&mut tx).await.unwrap();
    assert!(capture.events().is_empty(), "{:?}", capture.events());

    let holder = hold_until_awaited(&pool, id).await;
    ns.lock(&9_i64)
        .shared()
        .timeout(Duration::from_secs(5))
        .acquire(&mut tx)
        .await
        .unwrap();
    holder.await.unwrap();

    let events = capture.events();
    assert_eq!(events.len(), 2, "{events:?}");
    let busy = &events[0].fields;
    assert_eq!(busy["message"], "advisory lock is busy; waiting");
    assert_eq!(busy["namespace"], ns.label());
    assert_eq!(busy["key"], id.to_string());
    assert_eq!(busy["mode"], "shared");
    assert_eq!(busy["timeout_ms"], "5000");
    let outcome = &events[1].fields;
    assert_eq!(outcome["outcome"], "acquired");
    assert!(outcome.contains_key("waited_ms"));
    assert_eq!(events[1].level, tracing::Level::INFO);
}

#[tokio::test]
async fn a_failed_wait_reports_its_outcome_as_a_warning() {
    let (capture, _guard) = capture();
    let pool = pool().await;
    let ns = namespace("events_conflict");
    let mut tx = pool.begin().await.unwrap();
    time_out_behind_a_holder(&pool, ns, 1, &mut tx).await;
    let events = capture.events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1].level, tracing::Level::WARN);
    assert_eq!(events[1].fields["outcome"], "failed");
    assert!(events[1].fields["error"].contains("55P03"), "{events:?}");
}

#[tokio::test]
async fn a_busy_lock_that_is_not_waited_for_says_so_once() {
    let (capture, _guard) = capture();
    let pool = pool().await;
    let ns = namespace("events_no_wait");
    let _holder = hold(&pool, ns, 1).await;

    let mut tx = pool.begin().await.unwrap();
    ns.lock(&1_i64)
        .no_wait()
        .acquire(&mut tx)
        .await
        .unwrap_err();
    let session = ns
        .session_lock(&1_i64)
        .no_wait()
        .acquire(pool.acquire().await.unwrap())
        .await;
    assert!(matches!(session, Err(pglock::Error::Busy(_))));
    let events = capture.events();
    assert_eq!(events.len(), 2, "one per refusal: {events:?}");
    for event in &events {
        assert_eq!(event.fields["outcome"], "busy");
        assert_eq!(event.fields["namespace"], ns.label());
    }
}

/// No pool of this test binary is registered with
/// `cancel_abandoned_waits`, and no other test here abandons a wait: the
/// warning is said once per process.
#[tokio::test]
async fn abandoned_waits_without_a_registered_pool_warn_once_naming_the_fix() {
    let (capture, _guard) = capture();
    let pool = pool().await;
    let (ns, id) = fresh_key("abandoned_unregistered", 1);
    let holder = hold(&pool, ns, 1).await;

    for waiting in 1..=2 {
        let waiter = spawn_xact_acquire(&pool, ns.lock(&1_i64));
        // Not cancelled: the first abandoned wait is still there.
        wait_for_waiters(&pool, id, waiting).await;
        waiter.abort();
        assert!(waiter.await.unwrap_err().is_cancelled());
    }

    let events = capture.events();
    let warnings: Vec<_> = events
        .iter()
        .filter(|event| event.level == tracing::Level::WARN)
        .collect();
    assert_eq!(warnings.len(), 1, "{events:?}");
    assert!(
        warnings[0].fields["message"].contains("pglock::cancel_abandoned_waits(&pool)"),
        "{warnings:?}"
    );
    let abandoned = events
        .iter()
        .filter(|event| event.fields["message"].contains("abandoned"))
        .count();
    assert_eq!(abandoned, 2, "each abandoned wait is told: {events:?}");

    holder.release().await.unwrap();
    until_unlocked(&pool, id).await;
}

/// A lock found busy before is tried and waited for in one statement, which
/// can't say that it waits before it answers: the wait is reported by a
/// timer, while it lasts.
#[tokio::test]
async fn a_wait_in_one_statement_is_reported_while_it_lasts() {
    let pool = pool().await;
    let (ns, id) = fresh_key("events_while_waiting", 1);
    let holder = hold_found_busy(&pool, ns, 1).await;
    let (capture, _guard) = capture();

    let waiter = spawn_xact_acquire(&pool, ns.lock(&1_i64).timeout(Duration::from_secs(30)));
    let waiter_pid = wait_for_waiters(&pool, id, 1).await[0];
    let statement = current_query(&pool, waiter_pid).await;
    assert!(
        statement.contains("pg_try_advisory_xact_lock("),
        "the statement that waits is the one that tried: {statement}"
    );
    eventually(Duration::from_secs(10), "an event while waiting", || {
        let seen = !capture.events().is_empty();
        async move { seen }
    })
    .await;
    let events = capture.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0].fields["message"],
        "advisory lock is busy; waiting"
    );
    assert_eq!(events[0].fields["timeout_ms"], "30000");
    assert!(!waiter.is_finished(), "reported while it waits");
    assert_eq!(wait_for_waiters(&pool, id, 1).await.len(), 1);

    holder.release().await.unwrap();
    assert!(waiter.await.unwrap().unwrap().was_contended());
    let events = capture.events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1].fields["outcome"], "acquired");
}

#[tokio::test]
async fn a_wait_says_it_is_busy_while_it_waits_then_how_it_ended() {
    let (capture, _guard) = capture();
    let pool = pool().await;
    let (ns, id) = fresh_key("begin_events", 1);

    let tx = ns.lock(&2_i64).begin(&pool).await.unwrap();
    tx.commit().await.unwrap();
    assert!(capture.events().is_empty(), "{:?}", capture.events());

    let holder = hold_bare(&pool, id).await;
    let request = ns.lock(&1_i64).timeout(Duration::from_secs(30));
    let waiter_pool = warm_pool(1).await;
    let waiter = tokio::spawn(async move { request.begin(&waiter_pool).await });
    let pid = wait_for_waiters(&pool, id, 1).await[0];
    waits_in_the_begin_message(&pool, pid).await;
    eventually(Duration::from_secs(15), "the wait is reported", || async {
        !capture.events().is_empty()
    })
    .await;
    holder.rollback().await.unwrap();
    waiter.await.unwrap().unwrap().commit().await.unwrap();

    // A conflict within 1 ms, most likely answered before the wait would be
    // said by the timer: the conflict itself says that it waited.
    let holder = hold_bare(&pool, id).await;
    let failed = ns
        .lock(&1_i64)
        .timeout(Duration::from_millis(1))
        .begin(&warm_pool(1).await)
        .await;
    expect_conflict(failed, ConflictCause::LockTimeout);
    holder.rollback().await.unwrap();

    let events = capture.events();
    let said: Vec<(&str, &str)> = events
        .iter()
        .map(|event| {
            (
                event.fields["message"].as_str(),
                event.fields.get("outcome").map_or("", String::as_str),
            )
        })
        .collect();
    assert_eq!(
        said,
        vec![
            ("advisory lock is busy; waiting", ""),
            ("advisory lock acquired after waiting", "acquired"),
            ("advisory lock is busy; waiting", ""),
            ("advisory lock not acquired", "failed"),
        ]
    );
    assert_eq!(events[0].fields["key"], id.to_string());
    assert_eq!(events[0].fields["timeout_ms"], "30000");
    assert_eq!(events[3].level, tracing::Level::WARN);
}
