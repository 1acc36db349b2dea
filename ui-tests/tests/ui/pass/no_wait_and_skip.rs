//! `no_wait` fails with `pglock::Error::Busy` through `From`; `skip`
//! returns `Ok(None)`.
#![deny(warnings)]

use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};

#[pglock::advisory_lock(ns = "jobs", key = id, no_wait)]
pub async fn run_now(tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<i64, AppError> {
    let _ = tx;
    Ok(id)
}

#[pglock::advisory_lock(ns = "jobs", key = id, skip, mode = shared)]
pub async fn run_if_free(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
) -> Result<Option<i64>, AppError> {
    let _ = tx;
    Ok(Some(id))
}

/// Behind an alias, the trait bound accepts `Result<Option<T>, E>`.
pub type Maybe<T> = Result<Option<T>, AppError>;

#[pglock::advisory_lock(ns = "jobs", key = id, skip)]
pub async fn run_if_free_alias(tx: &mut Transaction<'_, Postgres>, id: i64) -> Maybe<i64> {
    let _ = tx;
    Ok(Some(id))
}

/// `skip` with an early return in the body.
#[pglock::advisory_lock(ns = "jobs", key = id, skip)]
pub async fn early_return(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
) -> Result<Option<()>, pglock::Error> {
    if id < 0 {
        return Ok(None);
    }
    let _ = tx;
    Ok(Some(()))
}

fn main() {}
