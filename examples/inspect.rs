//! Who holds which advisory lock, who waits, blocked by whom, in which
//! namespace: `pglock::inspect` printed as a table.
//!
//! ```text
//! cargo run --example inspect
//! ```
//!
//! With `DATABASE_URL` pointing at a live database, it first stages a holder
//! and two waiters of its own, then lists every advisory lock there.

use std::time::Duration;

use pglock::{Mode, Namespace};
use sqlx::postgres::PgPoolOptions;

static REPORTS: Namespace = Namespace::named("example:reports");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = pglock::testing::database_url()?;
    let pool = PgPoolOptions::new()
        .max_connections(6)
        .connect(&url)
        .await?;
    // Once per pool: a wait whose future is dropped (an aborted task, a
    // `select!`) is then cancelled on the server, instead of keeping its
    // pooled connection until the lock is free.
    pglock::cancel_abandoned_waits(&pool);

    // A reader holds report 2026 in shared mode; a writer and another reader
    // queue up behind it (the reader waits behind the queued writer).
    let mut reader = pool.begin().await?;
    REPORTS
        .lock(&2026_i64)
        .shared()
        .acquire(&mut reader)
        .await?;
    let mut waiters = Vec::new();
    for mode in [Mode::Exclusive, Mode::Shared] {
        let waiter_pool = pool.clone();
        waiters.push(tokio::spawn(async move {
            let mut tx = waiter_pool.begin().await?;
            REPORTS
                .lock(&2026_i64)
                .with_mode(mode)
                .timeout(Duration::from_secs(30))
                .acquire(&mut tx)
                .await?;
            tx.commit().await?;
            Ok::<_, pglock::Error>(())
        }));
        // Wait until it is seen waiting, so the queue order is the one shown.
        while pglock::inspect(&pool).await?.waiting().count() < waiters.len() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    let inspection = pglock::inspect(&pool).await?;
    println!(
        "{:>7}  {:<9}  {:<7}  {:>9}  {:<12}  {:<22}  namespace",
        "pid", "mode", "state", "waited", "blocked by", "lock id"
    );
    for lock in inspection.locks() {
        println!(
            "{:>7}  {:<9}  {:<7}  {:>9}  {:<12}  {:<22}  {}",
            lock.pid(),
            lock.mode().map_or("?".to_owned(), |mode| mode.to_string()),
            if lock.granted() { "holds" } else { "waits" },
            lock.waited()
                .map_or(String::new(), |waited| format!("{}ms", waited.as_millis())),
            format!("{:?}", lock.blocked_by()),
            lock.id().to_string(),
            lock.namespace().unwrap_or("?"),
        );
    }
    if !inspection.queries_visible() {
        println!("(some queries are hidden: grant pg_read_all_stats to see every namespace)");
    }

    reader.commit().await?;
    for waiter in waiters {
        waiter.await??;
    }
    Ok(())
}
