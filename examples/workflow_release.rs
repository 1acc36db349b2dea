//! A workflow engine's release/cancel protocol on one advisory key per
//! workflow run, in the key space hand-written code already uses
//! (`hi64 ^ lo64 ^ 0x7275_6e6c_9e37_79b9` of the run's uuid): pglock locks
//! exactly the same ids, so old and new code exclude each other.
//!
//! - Releases of dependent steps take the run's lock in **shared** mode:
//!   independent releases proceed together.
//! - A cancellation takes it **exclusively**: it waits until the releases in
//!   flight have committed, and holds later ones back.
//! - A release that arrives behind a cancellation waits at most its cap
//!   (5s in production; 500ms here) and then gets a typed, retryable
//!   conflict instead of hanging.
//!
//! ```text
//! cargo run --example workflow_release
//! ```

use std::time::Duration;

use pglock::{Error, Namespace};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// The raw namespace keeps the hand-written key space bit for bit.
static WORKFLOW_RELEASE: Namespace = Namespace::raw(0x7275_6e6c_9e37_79b9, "workflow:release");

/// How long a release waits behind a cancellation (production: 5s).
const RELEASE_CAP: Duration = Duration::from_millis(500);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = pglock::testing::database_url()?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await?;
    // Once per pool: a wait whose future is dropped (an aborted task, a
    // `select!`) is then cancelled on the server, instead of keeping its
    // pooled connection until the lock is free.
    pglock::cancel_abandoned_waits(&pool);

    let table = format!("jobs_{}", Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, run uuid, state text)"
    )))
    .execute(&pool)
    .await?;
    let run = Uuid::new_v4();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} VALUES (1, $1, 'done'), (2, $1, 'waiting')"
    )))
    .bind(run)
    .execute(&pool)
    .await?;
    println!(
        "workflow run {run} locks advisory id {}",
        WORKFLOW_RELEASE.id(&run)
    );

    println!("\n1. Two releases take the run's lock in shared mode and proceed together.");
    let mut release_a = pool.begin().await?;
    let mut release_b = pool.begin().await?;
    for tx in [&mut release_a, &mut release_b] {
        WORKFLOW_RELEASE
            .lock(&run)
            .shared()
            .timeout(RELEASE_CAP)
            .acquire(tx)
            .await?;
    }
    println!("   both releases hold the lock");

    println!("\n2. A cancellation locks the run's job rows, then the run exclusively.");
    let cancellation = tokio::spawn(cancel(pool.clone(), table.clone(), run));
    // Wait until the cancellation is seen waiting for the advisory lock.
    let id = WORKFLOW_RELEASE.id(&run);
    while !pglock::inspect(&pool)
        .await?
        .waiting()
        .any(|lock| lock.id() == id)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("   the cancellation waits for the releases in flight");
    release_a.commit().await?;
    release_b.commit().await?;
    println!("   the releases commit");
    let (cancelled, cancellation) = cancellation.await??;
    println!("   the cancellation holds the run exclusively (it waited {cancelled:?})");

    println!("\n3. A release behind the cancellation gets a typed conflict after its cap.");
    let mut late_release = pool.begin().await?;
    match WORKFLOW_RELEASE
        .lock(&run)
        .shared()
        .timeout(RELEASE_CAP)
        .acquire(&mut late_release)
        .await
    {
        Err(error @ Error::Conflict(_)) => {
            let conflict = error.as_conflict().expect("a conflict");
            println!(
                "   conflict after {:?} ({:?}); retryable: {} -> roll back and retry later",
                conflict.waited(),
                conflict.cause(),
                error.is_retryable()
            );
            late_release.rollback().await?;
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    cancellation.commit().await?;
    println!("\nThe cancellation commits; every lock ended with its transaction.");
    Ok(())
}

/// Cancels the run: returns once it holds the exclusive lock, with how long
/// it waited and its transaction, still open.
async fn cancel(
    pool: PgPool,
    table: String,
    run: Uuid,
) -> Result<(Duration, Transaction<'static, Postgres>), Error> {
    let mut tx = pool.begin().await?;
    // Lock order matters: job rows first, then the advisory lock. A job's
    // terminal completion also holds its row before it takes the shared
    // advisory lock, so taking them in the same order everywhere is what
    // keeps cancellation and completion free of deadlocks.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM {table} WHERE run = $1 ORDER BY id FOR UPDATE"
    )))
    .bind(run)
    .fetch_all(&mut *tx)
    .await?;
    let acquired = WORKFLOW_RELEASE.lock(&run).acquire(&mut tx).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET state = 'cancelled' WHERE run = $1 AND state = 'waiting'"
    )))
    .bind(run)
    .execute(&mut *tx)
    .await?;
    Ok((acquired.waited().unwrap_or_default(), tx))
}
