// A pool can't hold a transaction-scoped lock.
use pglock_ui_tests::AppError;
use sqlx::PgPool;

#[pglock::advisory_lock(ns = "jobs", key = id)]
async fn run(pool: &PgPool, id: i64) -> Result<(), AppError> {
    let _ = (pool, id);
    Ok(())
}

fn main() {}
