//! The body may rely on the declared return type for inference, and the
//! error type only needs `From<pglock::Error>`.
#![deny(warnings)]

use std::collections::BTreeSet;

use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};

#[pglock::advisory_lock(ns = "inference", key = id)]
pub async fn collect(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
) -> Result<BTreeSet<i64>, AppError> {
    let _ = tx;
    Ok((0..id).collect())
}

#[pglock::advisory_lock(ns = "inference", key = id)]
pub async fn defaulted(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
) -> Result<(u8, String), AppError> {
    let _ = (tx, id);
    Ok(Default::default())
}

#[pglock::advisory_lock(ns = "inference", key = id)]
pub async fn question_mark_into(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
) -> Result<u8, AppError> {
    let _ = tx;
    let small = u8::try_from(id).map_err(|_| pglock::Error::Standby)?;
    Ok(small.into())
}

/// A boxed error converts from any error.
#[pglock::advisory_lock(ns = "inference", key = id)]
pub async fn boxed(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
) -> Result<i64, Box<dyn std::error::Error + Send + Sync>> {
    let _ = tx;
    Ok(id)
}

/// The future of an annotated function is `Send` (it can be spawned).
pub fn assert_send(tx: &'static mut Transaction<'static, Postgres>) {
    fn send<T: Send>(_: T) {}
    send(collect(tx, 1));
}

/// An empty-bodied function is still its own code.
#[pglock::advisory_lock(ns = "inference", key = id)]
pub async fn unit(tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<(), AppError> {
    #![allow(unused_variables)]
    Ok(())
}

fn main() {}
