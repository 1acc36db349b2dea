// `ns(..)` is not a form of `ns`: the message lists the forms that are.
use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};

#[pglock::advisory_lock(ns("billing:invoice"), key = id)]
async fn run(tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<(), AppError> {
    let _ = (tx, id);
    Ok(())
}

fn main() {}
