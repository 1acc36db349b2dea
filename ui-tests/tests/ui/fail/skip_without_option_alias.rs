// Behind an alias the macro can't see the type; the trait bound still can.
use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};

type Outcome = Result<u64, AppError>;

#[pglock::advisory_lock(ns = "jobs", key = id, skip)]
async fn run(tx: &mut Transaction<'_, Postgres>, id: i64) -> Outcome {
    let _ = (tx, id);
    Ok(1)
}

fn main() {}
