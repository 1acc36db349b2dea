// `savepoint` guards a wait; `no_wait` never waits.
use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};

#[pglock::advisory_lock(ns = "jobs", key = id, no_wait, savepoint)]
async fn run(tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<(), AppError> {
    let _ = (tx, id);
    Ok(())
}

fn main() {}
