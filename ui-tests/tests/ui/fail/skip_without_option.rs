// `skip` returns `Ok(None)` when busy: the function must return `Result<Option<T>, E>`.
use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};

#[pglock::advisory_lock(ns = "jobs", key = id, skip)]
async fn run(tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<u64, AppError> {
    let _ = (tx, id);
    Ok(1)
}

fn main() {}
