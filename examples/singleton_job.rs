//! A job that must run once per tick although every worker schedules it.
//!
//! Three workers wake on the same schedule and call the same annotated job.
//! The `skip` form tries the lock once: the worker that gets it runs the
//! job, the others return `Ok(None)` at once and log pglock's structured
//! "busy; skipped" event. No worker waits, none runs the job twice, and the
//! lock ends with the job's transaction, whatever happens inside it.
//!
//! ```text
//! cargo run --example singleton_job
//! ```

use std::sync::Arc;
use std::time::Duration;

use pglock::advisory_lock;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Postgres, Transaction};
use tokio::sync::Barrier;

const WORKERS: usize = 3;
const TICKS: usize = 3;

/// Purges expired sessions; at most one worker per tick gets to run it.
#[advisory_lock(ns = "example:jobs", key = "purge-expired-sessions", skip)]
async fn purge_expired_sessions(
    tx: &mut Transaction<'_, Postgres>,
    worker: usize,
) -> Result<Option<u64>, pglock::Error> {
    // Stand-in for the real work.
    sqlx::query("SELECT pg_sleep(0.05)")
        .execute(&mut **tx)
        .await?;
    println!("   worker {worker} ran the purge");
    Ok(Some(42))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Only pglock's events, on stderr: the "busy; skipped" lines.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let url = pglock::testing::database_url()?;
    let pool = PgPoolOptions::new()
        .max_connections(WORKERS as u32)
        .connect(&url)
        .await?;

    for tick in 1..=TICKS {
        println!("tick {tick}: {WORKERS} workers wake up");
        // Everyone wakes at once; every transaction stays open until all
        // have tried, as if the job took longer than the others' arrival.
        let woke = Arc::new(Barrier::new(WORKERS));
        let tried = Arc::new(Barrier::new(WORKERS));
        let mut workers = Vec::new();
        for worker in 0..WORKERS {
            let (pool, woke, tried) = (pool.clone(), woke.clone(), tried.clone());
            workers.push(tokio::spawn(async move {
                let mut tx = pool.begin().await?;
                woke.wait().await;
                let outcome = purge_expired_sessions(&mut tx, worker).await?;
                tried.wait().await;
                tx.commit().await?;
                Ok::<_, pglock::Error>(outcome)
            }));
        }
        let mut ran = 0;
        for worker in workers {
            if worker.await??.is_some() {
                ran += 1;
            }
        }
        println!("   {ran} of {WORKERS} workers ran the job; the others skipped it");
        assert_eq!(ran, 1, "exactly one run per tick");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
