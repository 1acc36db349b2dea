// `skip` never waits either.
use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};

#[pglock::advisory_lock(ns = "jobs", key = id, skip, timeout = "5s")]
async fn run(tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<Option<()>, AppError> {
    let _ = (tx, id);
    Ok(Some(()))
}

fn main() {}
