//! Several workers race to install a schema on a fresh database.
//!
//! `CREATE SCHEMA IF NOT EXISTS` is not safe against a concurrent twin: both
//! transactions see no schema, both insert into `pg_namespace`, and the
//! second fails with `duplicate key value violates unique constraint
//! "pg_namespace_nspname_index"` once the first commits. This program shows
//! that failure, then the same race serialised by a transaction-scoped lock
//! taken with `XactLock::run`, which holds one pooled connection only: the
//! install itself needs no second one.
//!
//! ```text
//! cargo run --example bootstrap
//! ```
//!
//! Each worker uses its own connection, exactly as separate processes would.

use std::sync::Arc;
use std::time::Duration;

use pglock::Namespace;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};
use tokio::sync::Barrier;

static BOOTSTRAP: Namespace = Namespace::named("example:bootstrap");

const WORKERS: usize = 4;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = pglock::testing::database_url()?;
    // Two connections for four workers: the locked install must not need more.
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await?;
    // Once per pool: a wait whose future is dropped (an aborted task, a
    // `select!`) is then cancelled on the server, instead of keeping its
    // pooled connection until the lock is free.
    pglock::cancel_abandoned_waits(&pool);

    let schema = fresh_schema_name();
    println!("1. {WORKERS} workers install schema {schema} at once, without a lock:");
    let failures = race(&pool, &schema, false).await;
    println!("   {failures} of {WORKERS} failed");

    let schema = fresh_schema_name();
    println!("\n2. The same race, each install inside BOOTSTRAP.lock(\"install\").run(..):");
    let failures = race(&pool, &schema, true).await;
    println!("   {failures} of {WORKERS} failed");
    assert_eq!(failures, 0, "the lock serialises the installs");
    Ok(())
}

fn fresh_schema_name() -> String {
    format!("bootstrap_{}", uuid::Uuid::new_v4().simple())
}

/// Runs the install in every worker at once; returns how many failed.
async fn race(pool: &PgPool, schema: &str, locked: bool) -> usize {
    let barrier = Arc::new(Barrier::new(WORKERS));
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let (pool, schema, barrier) = (pool.clone(), schema.to_owned(), barrier.clone());
        workers.push(tokio::spawn(async move {
            barrier.wait().await;
            let result = if locked {
                BOOTSTRAP
                    .lock(&"install")
                    .timeout(Duration::from_secs(30))
                    .run(&pool, |tx| Box::pin(install(tx, schema)))
                    .await
            } else {
                async {
                    let mut tx = pool.begin().await?;
                    install(&mut tx, schema).await?;
                    tx.commit().await.map_err(pglock::Error::from)
                }
                .await
            };
            match &result {
                Ok(()) => println!("   worker {worker}: installed (or found it installed)"),
                Err(error) => println!("   worker {worker}: failed: {error}"),
            }
            result
        }));
    }
    let mut failures = 0;
    for worker in workers {
        if worker.await.expect("the worker ran").is_err() {
            failures += 1;
        }
    }
    failures
}

/// What a migration tool's bootstrap does: idempotent DDL in a transaction.
async fn install(
    tx: &mut Transaction<'static, Postgres>,
    schema: String,
) -> Result<(), pglock::Error> {
    sqlx::query(AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}"
    )))
    .execute(&mut **tx)
    .await?;
    // Hold the transaction open a moment, as a real install does, so the
    // unlocked race reliably overlaps.
    sqlx::query("SELECT pg_sleep(0.2)")
        .execute(&mut **tx)
        .await?;
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {schema}.jobs (id bigserial PRIMARY KEY, payload jsonb)"
    )))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
