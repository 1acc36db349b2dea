//! Allocations per acquisition in steady state: after a warm-up, the same
//! acquisition is repeated in windows, and what each acquisition allocates
//! (counted inside its own future, see [`crate::alloc`]) must be the same in
//! the last window as in the first, with no live memory piling up.

use std::time::Duration;

use pglock::XactLockSet;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::BoxError;
use crate::alloc::{Usage, counted, live_bytes};
use crate::ops::{self, BASELINE_SQL, MANY, RUNTIME, TIMEOUT};

/// How many acquisitions to run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub(crate) warmup: usize,
    pub(crate) windows: usize,
    pub(crate) per_window: usize,
}

impl Plan {
    /// The contended case takes a few milliseconds per acquisition.
    fn smaller(self) -> Plan {
        Plan {
            warmup: self.warmup.div_ceil(5),
            windows: self.windows,
            per_window: self.per_window.div_ceil(5),
        }
    }
}

/// One variant's steady state.
#[derive(Debug)]
pub(crate) struct Steady {
    pub(crate) name: &'static str,
    /// Allocations per acquisition, window by window.
    pub(crate) allocations: Vec<f64>,
    /// Bytes allocated per acquisition, window by window.
    pub(crate) bytes: Vec<f64>,
    /// Live bytes of the process after the last window minus after the
    /// first.
    pub(crate) live_growth: i64,
    /// A pglock path (as opposed to a reference for comparison).
    pub(crate) pglock: bool,
}

/// Live memory may move by this much between windows: buffers that sqlx
/// or tokio size to the largest message so far, for example.
pub(crate) const LIVE_SLACK: i64 = 64 * 1024;

impl Steady {
    /// Whether the allocations of the last window exceed those of the first
    /// (beyond a rounding error), or live memory grew.
    pub(crate) fn grows(&self) -> bool {
        let first = self.allocations[0];
        let last = self.allocations[self.allocations.len() - 1];
        last > first + 0.01 * first + 0.05 || self.live_growth > LIVE_SLACK
    }
}

async fn measure(
    name: &'static str,
    pglock: bool,
    plan: Plan,
    mut acquisition: impl AsyncFnMut() -> Result<Usage, BoxError>,
) -> Result<Steady, BoxError> {
    for _ in 0..plan.warmup {
        acquisition().await?;
    }
    let mut allocations = Vec::new();
    let mut bytes = Vec::new();
    let mut live = Vec::new();
    for _ in 0..plan.windows {
        let mut total = Usage::default();
        for _ in 0..plan.per_window {
            let usage = acquisition().await?;
            total.allocations += usage.allocations;
            total.bytes += usage.bytes;
        }
        allocations.push(total.allocations as f64 / plan.per_window as f64);
        bytes.push(total.bytes as f64 / plan.per_window as f64);
        live.push(live_bytes());
    }
    Ok(Steady {
        name,
        allocations,
        bytes,
        live_growth: live[live.len() - 1] - live[0],
        pglock,
    })
}

/// Runs every allocation measurement on fresh connections to `url`.
pub(crate) async fn steady_state(url: &str, plan: Plan) -> Result<Vec<Steady>, BoxError> {
    let mut conn = PgConnection::connect(url).await?;
    let mut results = Vec::new();

    results.push(
        measure(
            "sqlx: bare SQL exclusive lock, executed (reference)",
            false,
            plan,
            async || {
                let mut tx = conn.begin().await?;
                let (result, usage) = counted(
                    sqlx::query(BASELINE_SQL)
                        .bind(ops::bigint(&RUNTIME, 20))
                        .execute(&mut *tx),
                )
                .await;
                result?;
                tx.commit().await?;
                Ok(usage)
            },
        )
        .await?,
    );

    results.push(
        measure(
            "pglock: XactLock::acquire, free key",
            true,
            plan,
            async || {
                let mut tx = conn.begin().await?;
                let (result, usage) =
                    counted(RUNTIME.lock(&21_i64).timeout(TIMEOUT).acquire(&mut tx)).await;
                result?;
                tx.commit().await?;
                Ok(usage)
            },
        )
        .await?,
    );

    results.push(
        measure(
            "pglock: #[advisory_lock] fn, free key",
            true,
            plan,
            async || {
                let mut tx = conn.begin().await?;
                let (result, usage) = counted(ops::locked_by_macro(&mut tx, 22)).await;
                result?;
                tx.commit().await?;
                Ok(usage)
            },
        )
        .await?,
    );

    results.push(
        measure(
            "pglock: lock_many, 100 keys (per set)",
            true,
            plan,
            async || {
                let mut tx = conn.begin().await?;
                let (result, usage) = counted(async {
                    let set: XactLockSet<'_> = MANY.lock_many(1_000..1_100_i64).timeout(TIMEOUT);
                    set.acquire(&mut tx).await
                })
                .await;
                result?;
                tx.commit().await?;
                Ok(usage)
            },
        )
        .await?,
    );

    results.push(contended(url, plan.smaller()).await?);

    // Made once, as an application would keep it.
    let lock = sqlx::postgres::PgAdvisoryLock::with_key(sqlx::postgres::PgAdvisoryLockKey::BigInt(
        ops::bigint(&RUNTIME, 23),
    ));
    results.push(
        measure(
            "sqlx: PgAdvisoryLock acquire + release (reference)",
            false,
            plan,
            async || {
                let (guard, acquire) = counted(lock.acquire(&mut conn)).await;
                let (released, release) = counted(guard?.release_now()).await;
                released?;
                Ok(Usage {
                    allocations: acquire.allocations + release.allocations,
                    bytes: acquire.bytes + release.bytes,
                })
            },
        )
        .await?,
    );
    conn.close().await?;
    Ok(results)
}

/// The contended path: a try that finds the lock busy, the "busy" event,
/// and the capped wait, which another connection's commit then ends.
async fn contended(url: &str, plan: Plan) -> Result<Steady, BoxError> {
    const KEY: i64 = 24;
    let mut holder = PgConnection::connect(url).await?;
    let mut observer = PgConnection::connect(url).await?;
    let mut waiter = Some(PgConnection::connect(url).await?);
    let waiter_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(waiter.as_mut().expect("connected"))
        .await?;
    let steady = measure(
        "pglock: XactLock::acquire, contended (try + capped wait)",
        true,
        plan,
        async || {
            let mut held = holder.begin().await?;
            sqlx::query(BASELINE_SQL)
                .bind(ops::bigint(&RUNTIME, KEY))
                .execute(&mut *held)
                .await?;
            let mut conn = waiter.take().expect("the waiter is back");
            let wait = tokio::spawn(async move {
                let outcome = async {
                    let mut tx = conn.begin().await?;
                    let (acquired, usage) =
                        counted(RUNTIME.lock(&KEY).timeout(TIMEOUT).acquire(&mut tx)).await;
                    let acquired = acquired?;
                    tx.commit().await?;
                    Ok::<_, BoxError>((acquired, usage))
                }
                .await;
                (conn, outcome)
            });
            wait_until_waiting(&mut observer, waiter_pid).await?;
            held.commit().await?;
            let (conn, outcome) = wait.await?;
            waiter = Some(conn);
            let (acquired, usage) = outcome?;
            if !acquired.was_contended() {
                return Err("the contended acquisition did not wait".into());
            }
            Ok(usage)
        },
    )
    .await?;
    Ok(steady)
}

async fn wait_until_waiting(observer: &mut PgConnection, pid: i32) -> Result<(), BoxError> {
    for _ in 0..10_000 {
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks \
             WHERE pid = $1 AND locktype = 'advisory' AND NOT granted)",
        )
        .bind(pid)
        .fetch_one(&mut *observer)
        .await?;
        if waiting {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Err("the waiter never waited".into())
}
