// The lock needs a name to reach the transaction by.
use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};

#[pglock::advisory_lock(ns = "jobs", key = 1_i64)]
async fn run(_: &mut Transaction<'_, Postgres>) -> Result<(), AppError> {
    Ok(())
}

fn main() {}
