// The function's error type must convert from `pglock::Error`.
use sqlx::{Postgres, Transaction};

#[derive(Debug)]
struct NotConvertible;

#[pglock::advisory_lock(ns = "jobs", key = id)]
async fn run(tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<(), NotConvertible> {
    let _ = (tx, id);
    Ok(())
}

fn main() {}
