//! pglock in one minute: two tasks contending for one invoice, shared
//! versus exclusive, and a timeout that becomes a typed conflict.
//!
//! Runs against `DATABASE_URL`, or, without it, a throwaway PostgreSQL that
//! pglock's testing kit starts from the machine's own binaries:
//!
//! ```text
//! cargo run --example quickstart
//! ```

use std::time::{Duration, Instant};

use pglock::{Error, Namespace};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// Every lock on an invoice lives in this namespace; its name is hashed at
/// compile time into the 64-bit space PostgreSQL's advisory locks use.
static INVOICES: Namespace = Namespace::named("billing:invoice");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // pglock's structured events (busy, waited, acquired) go to stderr.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_target(false)
        .init();

    let url = pglock::testing::database_url()?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await?;
    // Once per pool: a wait whose future is dropped (an aborted task, a
    // `select!`) is then cancelled on the server, instead of keeping its
    // pooled connection until the lock is free.
    pglock::cancel_abandoned_waits(&pool);

    let invoice = uuid::Uuid::new_v4();
    println!(
        "invoice {invoice} locks advisory id {}",
        INVOICES.id(&invoice)
    );

    two_tasks_contend(&pool, invoice).await?;
    shared_versus_exclusive(&pool, invoice).await?;
    a_timeout_becomes_a_typed_conflict(&pool, invoice).await?;
    Ok(())
}

/// One task settles the invoice; the other arrives while it works and waits.
async fn two_tasks_contend(pool: &PgPool, invoice: uuid::Uuid) -> Result<(), Error> {
    println!("\n1. Two tasks settle the same invoice: the second waits for the first.");
    let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
    let first = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut tx = pool.begin().await?;
            INVOICES.lock(&invoice).acquire(&mut tx).await?;
            println!("   task A holds the invoice and works for 300ms");
            let _ = locked_tx.send(());
            tokio::time::sleep(Duration::from_millis(300)).await;
            tx.commit().await?;
            println!("   task A committed: its lock ended with the transaction");
            Ok::<_, Error>(())
        })
    };
    locked_rx.await.expect("task A locked");

    let mut tx = pool.begin().await?;
    let acquired = INVOICES
        .lock(&invoice)
        .timeout(Duration::from_secs(5))
        .acquire(&mut tx)
        .await?;
    println!(
        "   task B got the invoice after waiting {:?}",
        acquired.waited().unwrap_or_default()
    );
    tx.commit().await?;
    first.await.expect("task A ran")?;
    Ok(())
}

/// Readers share the lock; a writer waits until every reader is done.
async fn shared_versus_exclusive(pool: &PgPool, invoice: uuid::Uuid) -> Result<(), Error> {
    println!("\n2. Shared holders run together; an exclusive one waits for them all.");
    let mut reader_one = pool.begin().await?;
    let mut reader_two = pool.begin().await?;
    INVOICES
        .lock(&invoice)
        .shared()
        .acquire(&mut reader_one)
        .await?;
    INVOICES
        .lock(&invoice)
        .shared()
        .acquire(&mut reader_two)
        .await?;
    println!("   two readers hold the invoice in shared mode at the same time");

    let writer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut tx = pool.begin().await?;
            INVOICES.lock(&invoice).acquire(&mut tx).await?;
            println!(
                "   the writer got the exclusive lock after {:?}",
                started.elapsed()
            );
            tx.commit().await?;
            Ok::<_, Error>(())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!("   the readers finish");
    reader_one.commit().await?;
    reader_two.commit().await?;
    writer.await.expect("the writer ran")?;
    Ok(())
}

/// A caller that can't wait long gets a typed conflict, not a hang.
async fn a_timeout_becomes_a_typed_conflict(
    pool: &PgPool,
    invoice: uuid::Uuid,
) -> Result<(), Error> {
    println!("\n3. A wait longer than its timeout becomes a typed conflict.");
    let mut holder = pool.begin().await?;
    INVOICES.lock(&invoice).acquire(&mut holder).await?;

    let mut tx = pool.begin().await?;
    match INVOICES
        .lock(&invoice)
        .timeout(Duration::from_millis(250))
        .acquire(&mut tx)
        .await
    {
        Err(error @ Error::Conflict(_)) => {
            let conflict = error.as_conflict().expect("a conflict");
            println!(
                "   conflict on {} after {:?}: {:?}, SQLSTATE {}; retryable: {}",
                conflict.lock(),
                conflict.waited(),
                conflict.cause(),
                conflict.sqlstate(),
                error.is_retryable(),
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    holder.commit().await?;
    println!("\nDone: every lock ended with its transaction.");
    Ok(())
}
