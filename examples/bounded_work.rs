//! At most three at once: ten workers share a semaphore of three permits.
//!
//! Each worker runs a heavy report twice. The report takes a permit of the
//! semaphore `reports:heavy` / `"nightly"` in its transaction, so no more
//! than three reports run at once, in this process or any other; a worker
//! that finds the three permits held waits for one, and the permit ends
//! with the report's transaction. The peak number of reports running at
//! once is printed at the end, with the permits `pg_locks` showed held.
//!
//! ```text
//! cargo run --example bounded_work
//! ```
//!
//! With the attribute, the same bound is one argument:
//! `#[advisory_lock(ns = "reports:heavy", key = "nightly", permits = 3)]`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pglock::{Namespace, pg_locks};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

const WORKERS: usize = 10;
const PERMITS: u32 = 3;
const REPORTS_EACH: usize = 2;

static REPORTS: Namespace = Namespace::named("reports:heavy");

/// How many reports run now, and the most that ever ran at once.
#[derive(Default)]
struct Running {
    now: AtomicUsize,
    peak: AtomicUsize,
    /// The most permits `pg_locks` showed held, seen from inside a report.
    peak_in_pg_locks: AtomicUsize,
}

async fn heavy_report(
    pool: &PgPool,
    worker: usize,
    running: &Running,
) -> Result<(), pglock::Error> {
    let mut tx = pool.begin().await?;
    let permit = REPORTS
        .semaphore(&"nightly", PERMITS)
        .timeout(Duration::from_secs(30))
        .acquire(&mut tx)
        .await?;
    let now = running.now.fetch_add(1, Ordering::SeqCst) + 1;
    running.peak.fetch_max(now, Ordering::SeqCst);
    let waited = match permit.waited() {
        Some(waited) => format!("after waiting {} ms", waited.as_millis()),
        None => "at once".to_owned(),
    };
    println!(
        "worker {worker:>2} runs a report in slot {} ({now} running), {waited}",
        permit.index()
    );

    // What the server shows: every permit of the semaphore that is held.
    let (base, objsubid) = pg_locks::encode(REPORTS.permit_ids(&"nightly", PERMITS)?.base());
    let held: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM pg_catalog.pg_locks l WHERE {} AND l.granted",
        pg_locks::PERMITS_OF
    )))
    .bind(base)
    .bind(objsubid)
    .fetch_one(&mut *tx)
    .await?;
    running
        .peak_in_pg_locks
        .fetch_max(held as usize, Ordering::SeqCst);

    // Stand-in for the heavy work.
    sqlx::query("SELECT pg_sleep(0.1)")
        .execute(&mut *tx)
        .await?;
    running.now.fetch_sub(1, Ordering::SeqCst);
    tx.commit().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = pglock::testing::database_url()?;
    let pool = PgPoolOptions::new()
        .max_connections(WORKERS as u32)
        .connect(&url)
        .await?;
    println!("{WORKERS} workers, {PERMITS} permits");

    let running = Arc::new(Running::default());
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let (pool, running) = (pool.clone(), running.clone());
        workers.push(tokio::spawn(async move {
            for _ in 0..REPORTS_EACH {
                heavy_report(&pool, worker, &running).await?;
            }
            Ok::<_, pglock::Error>(())
        }));
    }
    for worker in workers {
        worker.await??;
    }

    let peak = running.peak.load(Ordering::SeqCst);
    println!(
        "peak: {peak} reports at once, of {PERMITS} permits \
         (pg_locks showed at most {} permits held)",
        running.peak_in_pg_locks.load(Ordering::SeqCst)
    );
    assert!(peak <= PERMITS as usize, "never more than the permits");
    Ok(())
}
