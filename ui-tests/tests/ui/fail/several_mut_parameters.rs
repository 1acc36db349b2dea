// Two `&mut` parameters: which one is the transaction?
use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};

#[pglock::advisory_lock(ns = "jobs", key = id)]
async fn run(
    log: &mut Vec<String>,
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
) -> Result<(), AppError> {
    let _ = (log, tx, id);
    Ok(())
}

fn main() {}
