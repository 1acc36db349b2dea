//! The structured events a lock emits, captured with a tracing subscriber.

mod support;

use std::time::Duration;

use support::capture::Capture;
use support::*;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test]
async fn a_free_lock_emits_nothing_and_a_busy_one_says_so_once() {
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let pool = pool().await;
    let ns = namespace("events");
    let id = ns.id(&9_i64);

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
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let pool = pool().await;
    let ns = namespace("events_conflict");
    let mut holder = pool.begin().await.unwrap();
    ns.lock(&1_i64).acquire(&mut holder).await.unwrap();

    let mut tx = pool.begin().await.unwrap();
    ns.lock(&1_i64)
        .timeout(Duration::from_millis(50))
        .acquire(&mut tx)
        .await
        .unwrap_err();
    let events = capture.events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1].level, tracing::Level::WARN);
    assert_eq!(events[1].fields["outcome"], "failed");
    assert!(events[1].fields["error"].contains("55P03"), "{events:?}");
}

#[tokio::test]
async fn a_busy_lock_that_is_not_waited_for_says_so_once() {
    let (capture, _guard) = support::capture::capture();
    let pool = pool().await;
    let ns = namespace("events_no_wait");
    let mut holder = pool.begin().await.unwrap();
    ns.lock(&1_i64).acquire(&mut holder).await.unwrap();

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
