//! `key = [..]`: several keys, taken in ascending id order under one
//! deadline; the keys may have different types.
#![deny(warnings)]

use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

static ACCOUNTS: pglock::LockFamily<i64> = pglock::LockFamily::named("ledger:account");

#[pglock::advisory_lock(ns = "ledger:account", key = [from, to], timeout = "5s", savepoint)]
pub async fn transfer(
    tx: &mut Transaction<'_, Postgres>,
    from: i64,
    to: i64,
    cents: u64,
) -> Result<u64, AppError> {
    let _ = tx;
    Ok(cents)
}

#[pglock::advisory_lock(ns = ACCOUNTS, key = [from, &to], mode = shared, no_wait)]
pub async fn audit(tx: &mut Transaction<'_, Postgres>, from: i64, to: i64) -> Result<(), AppError> {
    let _ = tx;
    Ok(())
}

#[pglock::advisory_lock(ns = "mixed", key = [id, name.as_str(), (1_i32, 2_i32)], skip)]
pub async fn mixed(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    name: String,
) -> Result<Option<String>, AppError> {
    let _ = tx;
    Ok(Some(name))
}

fn main() {}
