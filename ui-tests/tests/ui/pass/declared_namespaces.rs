//! `ns = PATH`: a `static` `Namespace` takes any key; a `LockFamily<K>`
//! takes `K` or `&K`.
#![deny(warnings)]

use pglock::{LockFamily, Namespace};
use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

mod locks {
    pub static INVOICES: pglock::LockFamily<uuid::Uuid> =
        pglock::LockFamily::named("billing:invoice");
}

static RELEASES: LockFamily<Uuid> =
    LockFamily::from_namespace(Namespace::raw(0x7275_6e6c_9e37_79b9, "runledger:release"));
static TENANTS: Namespace = Namespace::named_pair("tenant:migrate");
static NAMES: LockFamily<str> = LockFamily::named("names");

#[pglock::advisory_lock(ns = locks::INVOICES, key = invoice_id)]
pub async fn by_value(
    tx: &mut Transaction<'_, Postgres>,
    invoice_id: Uuid,
) -> Result<(), AppError> {
    let _ = tx;
    Ok(())
}

#[pglock::advisory_lock(ns = crate::locks::INVOICES, key = invoice_id, mode = shared)]
pub async fn by_reference(
    tx: &mut Transaction<'_, Postgres>,
    invoice_id: &Uuid,
) -> Result<(), AppError> {
    let _ = tx;
    Ok(())
}

#[pglock::advisory_lock(ns = RELEASES, key = run_id, timeout = "5s")]
pub async fn release(tx: &mut Transaction<'_, Postgres>, run_id: Uuid) -> Result<(), AppError> {
    let _ = tx;
    Ok(())
}

#[pglock::advisory_lock(ns = TENANTS, key = tenant)]
pub async fn migrate(tx: &mut Transaction<'_, Postgres>, tenant: i32) -> Result<(), AppError> {
    let _ = tx;
    Ok(())
}

#[pglock::advisory_lock(ns = NAMES, key = name)]
pub async fn by_name(tx: &mut Transaction<'_, Postgres>, name: &str) -> Result<(), AppError> {
    let _ = tx;
    Ok(())
}

fn main() {}
