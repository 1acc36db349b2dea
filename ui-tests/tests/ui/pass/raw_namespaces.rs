//! Both of PostgreSQL's key spaces, with the exact keys of a hand-written
//! key space (the hand-written one, kept bit for bit).
#![deny(warnings)]

use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

/// bigint space, raw: the key is `hi64 ^ lo64 ^ 0x7275_6e6c_9e37_79b9`.
#[pglock::advisory_lock(ns = 0x7275_6e6c_9e37_79b9, key = run_id, mode = shared, timeout = "5s")]
pub async fn release(tx: &mut Transaction<'_, Postgres>, run_id: Uuid) -> Result<(), AppError> {
    let _ = tx;
    Ok(())
}

/// int4 pair space, raw class: locks `(0x7275_6e6c, 0x696e_7465)`.
#[pglock::advisory_lock(ns = pair(0x7275_6e6c), key = 0x696e_7465_i32)]
pub async fn pair_lock(tx: &mut Transaction<'_, Postgres>) -> Result<(), AppError> {
    let _ = tx;
    Ok(())
}

/// int4 pair space, named: the class is hashed from the name.
#[pglock::advisory_lock(ns = pair("tenant:migrate"), key = tenant)]
pub async fn migrate(tx: &mut Transaction<'_, Postgres>, tenant: i32) -> Result<(), AppError> {
    let _ = tx;
    Ok(())
}

/// The whole 64-bit and 32-bit ranges are accepted.
#[pglock::advisory_lock(ns = 0xffff_ffff_ffff_ffff, key = 1_i64)]
pub async fn top(tx: &mut Transaction<'_, Postgres>) -> Result<(), AppError> {
    let _ = tx;
    Ok(())
}

#[pglock::advisory_lock(ns = pair(0xffff_ffff), key = 1_i32)]
pub async fn top_pair(tx: &mut Transaction<'_, Postgres>) -> Result<(), AppError> {
    let _ = tx;
    Ok(())
}

fn main() {}
