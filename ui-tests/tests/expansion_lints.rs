//! The expansion is clean under the lints a careful crate enables: every
//! shape of the attribute, compiled as part of this crate's tests, so that
//! `cargo clippy --all-targets -- -D warnings` checks the generated code as
//! a user's crate would see it.
#![deny(
    warnings,
    rust_2018_idioms,
    unused_qualifications,
    clippy::all,
    clippy::pedantic
)]
#![allow(dead_code)]

use pglock::LockFamily;
use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

static INVOICES: LockFamily<Uuid> = LockFamily::named("billing:invoice");

#[pglock::advisory_lock(ns = "billing:invoice", key = invoice_id, mode = shared, timeout = "5s")]
async fn named(tx: &mut Transaction<'_, Postgres>, invoice_id: Uuid) -> Result<(), AppError> {
    let _ = tx;
    Ok(())
}

#[pglock::advisory_lock(ns = 0x7275_6e6c_9e37_79b9, key = run_id, savepoint)]
async fn raw(tx: &mut Transaction<'_, Postgres>, run_id: &Uuid) -> Result<(), AppError> {
    let _ = tx;
    Ok(())
}

#[pglock::advisory_lock(ns = pair(0x7275_6e6c), key = 0x696e_7465_i32, no_wait)]
async fn raw_pair(tx: &mut Transaction<'_, Postgres>) -> Result<(), AppError> {
    let _ = tx;
    Ok(())
}

#[pglock::advisory_lock(ns = pair("tenant:migrate"), key = &tenant, skip)]
async fn named_pair(
    tx: &mut Transaction<'_, Postgres>,
    tenant: i32,
) -> Result<Option<i32>, AppError> {
    let _ = tx;
    Ok(Some(tenant))
}

#[pglock::advisory_lock(ns = INVOICES, key = invoice_id)]
async fn family(tx: &mut Transaction<'_, Postgres>, invoice_id: &Uuid) -> Result<(), AppError> {
    let _ = tx;
    Ok(())
}

#[pglock::advisory_lock(ns = "ledger:account", key = [from, to, &from], timeout = "250ms")]
async fn several(tx: &mut Transaction<'_, Postgres>, from: i64, to: i64) -> Result<(), AppError> {
    let _ = tx;
    Ok(())
}

#[pglock::advisory_lock(ns = INVOICES, key = [a, b], mode = shared, skip)]
async fn several_skip(
    tx: &mut Transaction<'_, Postgres>,
    a: Uuid,
    b: Uuid,
) -> Result<Option<()>, AppError> {
    let _ = tx;
    Ok(None)
}

struct Service;

impl Service {
    #[pglock::advisory_lock(ns = "service", key = name.as_str())]
    async fn method(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        name: String,
    ) -> Result<String, AppError> {
        let _ = tx;
        Ok(name)
    }
}

#[test]
fn annotated_functions_keep_their_signatures() {
    // Coercing to a plain function pointer type proves the signature is the
    // one written (the body is the only thing the attribute changes).
    fn takes<F>(_: F) {}
    takes(named);
    takes(raw);
    takes(raw_pair);
    takes(named_pair);
    takes(family);
    takes(several);
    takes(several_skip);
    takes(Service::method);
}
