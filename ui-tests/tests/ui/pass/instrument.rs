//! Together with `#[tracing::instrument]`, in either order. The outer
//! attribute expands first, so the inner one's code runs first: with
//! `#[advisory_lock]` outside, the span also covers the wait.
#![deny(warnings)]

use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};

/// The lock is taken before the span is entered.
#[tracing::instrument(skip(tx), err)]
#[pglock::advisory_lock(ns = "jobs", key = id, timeout = "5s")]
pub async fn instrumented_outside(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
) -> Result<i64, AppError> {
    let _ = tx;
    Ok(id)
}

/// The span covers the wait, and the "skipped" event.
#[pglock::advisory_lock(ns = "jobs", key = id, skip)]
#[tracing::instrument(skip(tx))]
pub async fn instrumented_inside(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
) -> Result<Option<i64>, AppError> {
    let _ = tx;
    Ok(Some(id))
}

#[tracing::instrument(skip_all, fields(job = id))]
#[pglock::advisory_lock(ns = "jobs", key = [id, id + 1], skip)]
pub async fn instrumented_many(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
) -> Result<Option<i64>, AppError> {
    let _ = tx;
    Ok(Some(id))
}

fn main() {}
