//! `permits = N` takes a permit of a semaphore: with a timeout, `no_wait`,
//! `skip`, a family or a pair namespace.
#![deny(warnings)]

use pglock::LockFamily;
use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};

static TENANTS: LockFamily<i64> = LockFamily::named("imports:tenant");

#[pglock::advisory_lock(ns = "reports", key = id, permits = 4)]
pub async fn report(tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<i64, AppError> {
    let _ = tx;
    Ok(id)
}

#[pglock::advisory_lock(ns = TENANTS, key = tenant, permits = 1024, timeout = "5s")]
pub async fn import(tx: &mut Transaction<'_, Postgres>, tenant: i64) -> Result<(), AppError> {
    let _ = (tx, tenant);
    Ok(())
}

#[pglock::advisory_lock(ns = pair("calls"), key = "partner", permits = 1, no_wait)]
pub async fn call(tx: &mut Transaction<'_, Postgres>) -> Result<(), AppError> {
    let _ = tx;
    Ok(())
}

#[pglock::advisory_lock(ns = "renders", key = id, permits = 8u32, skip)]
pub async fn render(tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<Option<i64>, AppError> {
    let _ = tx;
    Ok(Some(id))
}

fn main() {}
