// A float has no stable key value.
use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};

#[pglock::advisory_lock(ns = "prices", key = price)]
async fn run(tx: &mut Transaction<'_, Postgres>, price: f64) -> Result<(), AppError> {
    let _ = (tx, price);
    Ok(())
}

fn main() {}
