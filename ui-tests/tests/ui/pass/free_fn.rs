//! The shape from the design: a free function, a string namespace, a uuid
//! key, shared mode and a timeout.
#![deny(warnings)]

use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

pub struct Receipt;

/// Settles an invoice while holding its lock.
#[pglock::advisory_lock(ns = "billing:invoice", key = invoice_id, mode = shared, timeout = "5s")]
pub async fn settle(
    tx: &mut Transaction<'_, Postgres>,
    invoice_id: Uuid,
) -> Result<Receipt, AppError> {
    // The body still has the transaction: the lock only reborrowed it.
    sqlx::query("UPDATE invoices SET settled = true WHERE id = $1::uuid")
        .bind(invoice_id.to_string())
        .execute(&mut **tx)
        .await
        .map_err(pglock::Error::from)?;
    Ok(Receipt)
}

/// Every mode and timeout unit; the key can be any expression over the
/// parameters.
#[pglock::advisory_lock(ns = "jobs", key = (tenant, job.as_str()), mode = exclusive, timeout = "250ms", savepoint)]
pub async fn run_job(
    tx: &mut Transaction<'_, Postgres>,
    tenant: i32,
    job: String,
) -> Result<String, AppError> {
    let _ = tx;
    Ok(job)
}

#[pglock::advisory_lock(ns = "reports", key = "nightly", timeout = "2min")]
pub async fn nightly(tx: &mut Transaction<'_, Postgres>) -> Result<(), pglock::Error> {
    let _ = tx;
    Ok(())
}

#[pglock::advisory_lock(ns = "archive", key = day, timeout = "1h")]
pub async fn archive(tx: &mut Transaction<'_, Postgres>, day: u32) -> Result<(), AppError> {
    let _ = tx;
    Ok(())
}

/// A fraction of a unit that is a whole number of milliseconds.
#[pglock::advisory_lock(ns = "archive:part", key = day, timeout = "1.5s")]
pub async fn archive_part(tx: &mut Transaction<'_, Postgres>, day: u32) -> Result<(), AppError> {
    let _ = tx;
    Ok(())
}

#[pglock::advisory_lock(ns = "bytes", key = &digest[..], timeout = "596h")]
pub async fn by_digest(
    tx: &mut Transaction<'_, Postgres>,
    digest: [u8; 32],
) -> Result<(), AppError> {
    let _ = tx;
    Ok(())
}

fn main() {}
