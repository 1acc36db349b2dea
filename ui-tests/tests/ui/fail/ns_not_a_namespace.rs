// `ns = PATH` names a `Namespace` or a `LockFamily`, not a number.
use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};

const JOBS: u64 = 0x6a6f_6273;

#[pglock::advisory_lock(ns = JOBS, key = id)]
async fn run(tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<(), AppError> {
    let _ = (tx, id);
    Ok(())
}

fn main() {}
