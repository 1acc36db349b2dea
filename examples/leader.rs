//! Leader election with a lease: two candidates, one leader at a time. The
//! leader's backend is killed; the lease says so at once, and the other
//! candidate takes over.
//!
//! ```text
//! cargo run --example leader
//! ```
//!
//! `leader --candidate NAME` runs a single candidate until it is killed,
//! printing `LEADING <name> <backend pid>` when it leads; the project's tests
//! start two such processes to prove that one leads at a time across
//! processes.

use std::time::Duration;

use pglock::{CheckOptions, Namespace};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

static CLUSTER: Namespace = Namespace::named("example:leader");

/// Checks every 200ms, so a lost lease is reported within about 2s.
fn lease_options() -> CheckOptions {
    CheckOptions::default()
        .check_every(Duration::from_millis(200))
        .check_timeout(Duration::from_secs(2))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let url = pglock::testing::database_url()?;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await?;

    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, name] = args.as_slice()
        && flag == "--candidate"
    {
        return candidate_until_killed(&pool, name).await;
    }
    demo(&pool).await
}

/// One candidate: wait to lead, then lead until the process is killed.
async fn candidate_until_killed(
    pool: &PgPool,
    name: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut lease = CLUSTER
        .session_lock(&"cluster")
        .acquire_lease(pool.acquire().await?, lease_options())
        .await?;
    let pid = leader_backend(pool).await?;
    println!("LEADING {name} {pid}");
    let lost = lease.lost().await;
    println!("LOST {name}: {lost}");
    Err(lost.to_string().into())
}

async fn demo(pool: &PgPool) -> Result<(), Box<dyn std::error::Error>> {
    println!("Two candidates race for the lease on {}.", CLUSTER.label());
    let (leading_tx, mut leading_rx) = tokio::sync::mpsc::channel(2);
    for name in ["alpha", "beta"] {
        let pool = pool.clone();
        let leading_tx = leading_tx.clone();
        tokio::spawn(async move {
            let mut lease = CLUSTER
                .session_lock(&"cluster")
                .acquire_lease(pool.acquire().await.expect("a connection"), lease_options())
                .await
                .expect("a lease");
            println!("  {name} leads");
            leading_tx.send(name).await.expect("the demo listens");
            let lost = lease.lost().await;
            println!("  {name} stops leading: {}", lost.reason());
        });
    }

    let first = leading_rx.recv().await.expect("someone leads");
    let holder = leader_backend(pool).await?;
    println!("{first} leads from backend {holder}; the other candidate waits.");
    println!("Killing backend {holder} (pg_terminate_backend)...");
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(holder)
        .execute(pool)
        .await?;

    let second = tokio::time::timeout(Duration::from_secs(30), leading_rx.recv())
        .await?
        .expect("the other candidate leads");
    println!("{second} took over: one leader at a time, and the loss was not silent.");
    // Give the old leader's task a moment to print its loss.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

/// The backend that holds the lease, as pglock's inspection sees it.
async fn leader_backend(pool: &PgPool) -> Result<i32, Box<dyn std::error::Error>> {
    let id = CLUSTER.id(&"cluster");
    pglock::inspect(pool)
        .await?
        .held()
        .find(|lock| lock.id() == id)
        .map(|lock| lock.pid())
        .ok_or_else(|| "nobody holds the lease".into())
}
