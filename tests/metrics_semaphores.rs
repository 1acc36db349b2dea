//! Metrics (feature `metrics`) of a semaphore through the lock manager: its
//! permits count under its namespace as its locks do, each acquisition
//! once, and no series names a permit.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use pglock::metrics::{ACQUISITIONS, SESSION_LOCKS_HELD, WAIT_SECONDS};
use pglock::{Error, LockManager, ManagerOptions, Namespace};
use support::*;

static NS: Namespace = Namespace::named("test:metrics:semaphore");

/// (name, labels) → value, for the series of `NS`, added up over snapshots.
type Series = HashMap<(String, Vec<(String, String)>), DebugValue>;

fn take(snapshotter: &Snapshotter, seen: &mut Series) {
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let labels: Vec<(String, String)> = key
            .labels()
            .map(|label| (label.key().to_owned(), label.value().to_owned()))
            .collect();
        if !labels.contains(&("namespace".to_owned(), NS.label().to_owned())) {
            continue;
        }
        let entry = (key.name().to_owned(), labels);
        let value = match (seen.remove(&entry), value) {
            (Some(DebugValue::Counter(a)), DebugValue::Counter(b)) => DebugValue::Counter(a + b),
            (Some(DebugValue::Gauge(a)), DebugValue::Gauge(b)) => DebugValue::Gauge(a + b),
            (Some(DebugValue::Histogram(mut a)), DebugValue::Histogram(b)) => {
                a.extend(b);
                DebugValue::Histogram(a)
            }
            (_, value) => value,
        };
        seen.insert(entry, value);
    }
}

fn labels(outcome: Option<&str>) -> Vec<(String, String)> {
    let mut labels = vec![
        ("namespace".to_owned(), NS.label().to_owned()),
        ("mode".to_owned(), "exclusive".to_owned()),
    ];
    if let Some(outcome) = outcome {
        labels.push(("outcome".to_owned(), outcome.to_owned()));
    }
    labels
}

fn counter(seen: &Series, outcome: &str) -> u64 {
    match seen.get(&(ACQUISITIONS.to_owned(), labels(Some(outcome)))) {
        Some(DebugValue::Counter(count)) => *count,
        None => 0,
        Some(other) => panic!("a counter, not {other:?}"),
    }
}

fn held(seen: &Series) -> f64 {
    match seen.get(&(SESSION_LOCKS_HELD.to_owned(), labels(None))) {
        Some(DebugValue::Gauge(value)) => value.into_inner(),
        None => 0.0,
        Some(other) => panic!("a gauge, not {other:?}"),
    }
}

#[tokio::test]
async fn a_managed_semaphore_counts_each_acquisition_once_under_its_namespace() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");
    let pool = pool().await;
    let key = i64::from(uuid::Uuid::new_v4().as_u128() as u32);
    let ids = NS.permit_ids(&key, 2).unwrap();
    let manager = LockManager::new(connect_options(), ManagerOptions::default());
    let mut seen = Series::new();

    // Both permits, free; then a try and a no-wait that find none.
    let first = manager.semaphore(&NS, &key, 2).acquire().await.unwrap();
    let second = manager.semaphore(&NS, &key, 2).acquire().await.unwrap();
    assert!(
        manager
            .semaphore(&NS, &key, 2)
            .try_acquire()
            .await
            .unwrap()
            .is_none()
    );
    let busy = manager.semaphore(&NS, &key, 2).no_wait().acquire().await;
    assert!(matches!(busy, Err(Error::Busy(_))), "{busy:?}");
    take(&snapshotter, &mut seen);
    assert_eq!(counter(&seen, "acquired"), 2);
    assert_eq!(counter(&seen, "busy"), 2);
    assert_eq!(held(&seen), 2.0);

    first.release().await.unwrap();
    second.release().await.unwrap();

    // Another process holds both permits, with plain SQL, so it counts
    // nothing: a wait that times out, and one that gets a freed permit.
    let mut outside = Vec::new();
    for id in ids.iter() {
        let mut conn = pool.acquire().await.unwrap();
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(id.bigint().unwrap())
            .execute(&mut *conn)
            .await
            .unwrap();
        outside.push(conn);
    }
    let timed_out = manager
        .semaphore(&NS, &key, 2)
        .timeout(Duration::from_millis(100))
        .acquire()
        .await;
    assert!(
        matches!(timed_out, Err(Error::Conflict(_))),
        "{timed_out:?}"
    );
    let waiter = manager
        .semaphore(&NS, &key, 2)
        .timeout(Duration::from_secs(30))
        .acquire();
    tokio::pin!(waiter);
    let (_, queued_for) = tokio::select! {
        seen = permit_waiter(&pool, ids) => seen,
        guard = &mut waiter => panic!("granted while both permits are held: {guard:?}"),
    };
    let mut freed = outside.remove(queued_for as usize);
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut *freed)
        .await
        .unwrap();
    let third = waiter.await.unwrap();
    take(&snapshotter, &mut seen);
    assert_eq!(
        counter(&seen, "acquired"),
        2,
        "a wait is not counted as acquired at once"
    );
    assert_eq!(counter(&seen, "acquired_after_wait"), 1);
    assert_eq!(counter(&seen, "conflict_lock_timeout"), 1);
    let waits = match seen.get(&(WAIT_SECONDS.to_owned(), labels(Some("acquired_after_wait")))) {
        Some(DebugValue::Histogram(values)) => values.len(),
        other => panic!("a histogram, not {other:?}"),
    };
    assert_eq!(waits, 1);
    assert_eq!(held(&seen), 1.0);

    third.release().await.unwrap();
    drop(outside);
    take(&snapshotter, &mut seen);
    assert_eq!(held(&seen), 0.0);
    // The same few series as a lock's: no label but namespace, mode and
    // outcome, whatever permit was taken.
    for (name, labels) in seen.keys() {
        for (label, _) in labels {
            assert!(
                ["namespace", "mode", "outcome"].contains(&label.as_str()),
                "{name} {labels:?}"
            );
        }
    }
}
