//! Metrics (feature `metrics`): a scripted scenario against the server, and
//! the exact counts, waits and holds a debugging recorder saw.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use pglock::metrics::{ACQUISITIONS, HOLD_SECONDS, SESSION_LOCKS_HELD, WAIT_SECONDS};
use pglock::{CheckOptions, LockManager, ManagerOptions, Namespace};
use sqlx::postgres::PgPool;
use support::*;

/// One namespace for the scenario: the metrics are labelled by it.
static NS: Namespace = Namespace::named("test:metrics:scenario");

type Series = HashMap<(String, String, String), DebugValue>;

/// Every series of the scenario's namespace so far: (name, mode, outcome)
/// → value. A snapshot drains the recorder (counters and gauges restart from
/// zero, histograms empty), so each one is added to what came before.
fn take(snapshotter: &Snapshotter, seen: &mut Series) {
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let label = |name: &str| {
            key.labels()
                .find(|label| label.key() == name)
                .map(|label| label.value().to_owned())
                .unwrap_or_default()
        };
        if label("namespace") != NS.label() {
            continue;
        }
        let entry = (key.name().to_owned(), label("mode"), label("outcome"));
        match (seen.remove(&entry), value) {
            (Some(DebugValue::Counter(before)), DebugValue::Counter(now)) => {
                seen.insert(entry, DebugValue::Counter(before + now));
            }
            (Some(DebugValue::Gauge(before)), DebugValue::Gauge(now)) => {
                seen.insert(entry, DebugValue::Gauge(before + now));
            }
            (Some(DebugValue::Histogram(mut before)), DebugValue::Histogram(now)) => {
                before.extend(now);
                seen.insert(entry, DebugValue::Histogram(before));
            }
            (_, value) => {
                seen.insert(entry, value);
            }
        }
    }
}

fn counter(series: &Series, outcome: &str) -> u64 {
    match series.get(&(
        ACQUISITIONS.to_owned(),
        "exclusive".to_owned(),
        outcome.to_owned(),
    )) {
        Some(DebugValue::Counter(count)) => *count,
        None => 0,
        Some(other) => panic!("{ACQUISITIONS} is a counter, not {other:?}"),
    }
}

fn samples(
    series: &HashMap<(String, String, String), DebugValue>,
    name: &str,
    outcome: &str,
) -> usize {
    match series.get(&(name.to_owned(), "exclusive".to_owned(), outcome.to_owned())) {
        Some(DebugValue::Histogram(values)) => values.len(),
        None => 0,
        Some(other) => panic!("{name} is a histogram, not {other:?}"),
    }
}

fn held(series: &Series) -> f64 {
    match series.get(&(
        SESSION_LOCKS_HELD.to_owned(),
        "exclusive".to_owned(),
        String::new(),
    )) {
        Some(DebugValue::Gauge(value)) => value.into_inner(),
        None => 0.0,
        Some(other) => panic!("{SESSION_LOCKS_HELD} is a gauge, not {other:?}"),
    }
}

/// A transaction of its own holds `key` in `NS`, with plain SQL, so the
/// holder itself counts nothing.
async fn hold_raw(pool: &PgPool, key: i64) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(NS.id(&key).bigint().unwrap())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

#[pglock::advisory_lock(ns = NS, key = key, skip)]
async fn skipping(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    key: i64,
) -> Result<Option<()>, pglock::Error> {
    let _ = tx;
    Ok(Some(()))
}

#[tokio::test]
async fn a_scripted_scenario_records_exact_counts_waits_and_holds() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");
    let pool = pool().await;
    let base = i64::from(uuid::Uuid::new_v4().as_u128() as u32) << 8;

    // 1. Free: acquired at once.
    let mut tx = pool.begin().await.unwrap();
    NS.lock(&base).acquire(&mut tx).await.unwrap();
    tx.commit().await.unwrap();

    // 2. Busy, waited for, then acquired.
    let holder = hold_raw(&pool, base + 1).await;
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            NS.lock(&(base + 1)).acquire(&mut tx).await.unwrap();
            tx.commit().await.unwrap();
        })
    };
    wait_for_waiters(&pool, NS.id(&(base + 1)), 1).await;
    holder.rollback().await.unwrap();
    waiter.await.unwrap();

    // 3. Busy and not waited for; busy and timed out; busy and skipped.
    let holder = hold_raw(&pool, base + 2).await;
    let mut tx = pool.begin().await.unwrap();
    assert!(
        NS.lock(&(base + 2))
            .no_wait()
            .acquire(&mut tx)
            .await
            .is_err()
    );
    tx.rollback().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let error = NS
        .lock(&(base + 2))
        .timeout(Duration::from_millis(50))
        .acquire(&mut tx)
        .await
        .unwrap_err();
    assert_eq!(error.as_conflict().expect("a conflict").sqlstate(), "55P03");
    tx.rollback().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(skipping(&mut tx, base + 2).await.unwrap(), None);
    tx.rollback().await.unwrap();
    holder.rollback().await.unwrap();

    // 4. A session lock, held and released: the gauge goes up and down.
    let guard = NS
        .session_lock(&(base + 3))
        .acquire(pool.acquire().await.unwrap())
        .await
        .unwrap();
    let mut seen = Series::new();
    take(&snapshotter, &mut seen);
    assert_eq!(held(&seen), 1.0, "one session lock held");
    guard.release().await.unwrap();

    // 5. A lease, lost when its backend is terminated.
    let mut conn = pool.acquire().await.unwrap();
    let pid = backend_pid(&mut conn).await;
    let mut lease = NS
        .session_lock(&(base + 4))
        .acquire_lease(
            conn,
            CheckOptions::default()
                .check_every(Duration::from_millis(100))
                .check_timeout(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    terminate_backend(&pool, pid).await;
    tokio::time::timeout(Duration::from_secs(10), lease.lost())
        .await
        .expect("the lease reports the loss");

    // 6. Through a lock manager: one acquisition; one timed out in-process
    // behind it (counted once, as a conflict); a handle released, and one
    // released by close(), which is no loss.
    let manager = LockManager::new(
        pglock::testing::database_url().unwrap().parse().unwrap(),
        ManagerOptions::default(),
    );
    let first = manager.lock(&NS, &(base + 5)).acquire().await.unwrap();
    let error = manager
        .lock(&NS, &(base + 5))
        .timeout(Duration::from_millis(50))
        .acquire()
        .await
        .unwrap_err();
    assert!(error.as_conflict().is_some());
    first.release().await.unwrap();
    let _kept = manager.lock(&NS, &(base + 6)).acquire().await.unwrap();
    assert_eq!(manager.close().await, 1);

    take(&snapshotter, &mut seen);
    assert_eq!(counter(&seen, "acquired"), 5, "{seen:?}");
    assert_eq!(counter(&seen, "acquired_after_wait"), 1, "{seen:?}");
    assert_eq!(counter(&seen, "busy"), 1, "{seen:?}");
    assert_eq!(counter(&seen, "conflict_lock_timeout"), 2, "{seen:?}");
    assert_eq!(counter(&seen, "skipped"), 1, "{seen:?}");
    assert_eq!(counter(&seen, "lost"), 1, "{seen:?}");
    assert_eq!(samples(&seen, WAIT_SECONDS, "acquired_after_wait"), 1);
    assert_eq!(samples(&seen, WAIT_SECONDS, "conflict_lock_timeout"), 2);
    assert_eq!(
        samples(&seen, HOLD_SECONDS, ""),
        4,
        "the session lock, the lease, the two managed locks"
    );
    assert_eq!(held(&seen), 0.0, "no session lock held");
    // Labels are bounded: namespace, mode and outcome, never the key.
    let mut any = pool.begin().await.unwrap();
    NS.lock(&base).acquire(&mut any).await.unwrap();
    any.rollback().await.unwrap();
    for (key, _, _, _) in snapshotter.snapshot().into_vec() {
        for label in key.key().labels() {
            assert!(
                ["namespace", "mode", "outcome"].contains(&label.key()),
                "{key:?}"
            );
        }
    }
}
