// A `LockFamily<Uuid>` takes uuid keys only.
use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};

use pglock::LockFamily;
use uuid::Uuid;

static INVOICES: LockFamily<Uuid> = LockFamily::named("billing:invoice");

#[pglock::advisory_lock(ns = INVOICES, key = invoice_number)]
async fn run(tx: &mut Transaction<'_, Postgres>, invoice_number: i64) -> Result<(), AppError> {
    let _ = (tx, invoice_number);
    Ok(())
}

fn main() {}
