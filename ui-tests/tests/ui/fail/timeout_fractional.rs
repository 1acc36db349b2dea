// A fraction is read exactly ("1.5s" is 1500 ms), but a timeout is whole
// milliseconds.
use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};

#[pglock::advisory_lock(ns = "jobs", key = id, timeout = "1.5ms")]
async fn run(tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<(), AppError> {
    let _ = (tx, id);
    Ok(())
}

fn main() {}
