// The class of the int4 pair key space is 32 bits.
use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};

#[pglock::advisory_lock(ns = pair(0x1_0000_0000), key = id)]
async fn run(tx: &mut Transaction<'_, Postgres>, id: i32) -> Result<(), AppError> {
    let _ = (tx, id);
    Ok(())
}

fn main() {}
