// Independent mistakes are reported together, in one build.
use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};

#[pglock::advisory_lock(ns = "", key = id, mode = shard, timeout = "0s", timeout = "5s", savepont)]
fn run(tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<(), AppError> {
    let _ = (tx, id);
    Ok(())
}

fn main() {}
