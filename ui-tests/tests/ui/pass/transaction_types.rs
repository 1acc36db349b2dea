//! The transaction parameter behind an alias, a user's wrapper type
//! implementing `pglock::XactConnection`, `tx = name` among several `&mut`
//! parameters, and `tx = self`.
#![deny(warnings)]

use pglock::XactConnection;
use pglock_ui_tests::AppError;
use sqlx::{PgConnection, Postgres, Transaction};

/// A transaction alias, as applications declare them.
pub type DbTx<'a> = Transaction<'a, Postgres>;

/// An application's result alias.
pub type Result<T, E = AppError> = std::result::Result<T, E>;

#[pglock::advisory_lock(ns = "runledger:release", key = id)]
pub async fn aliased(tx: &mut DbTx<'_>, id: i64) -> Result<()> {
    let _ = tx;
    Ok(())
}

#[pglock::advisory_lock(ns = "runledger:release", key = id)]
pub async fn fully_qualified(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: i64,
) -> Result<()> {
    let _ = tx;
    Ok(())
}

/// A unit of work that wraps the transaction.
pub struct UnitOfWork<'c> {
    tx: Transaction<'c, Postgres>,
    touched: Vec<i64>,
}

impl XactConnection for UnitOfWork<'_> {
    fn connection(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

#[pglock::advisory_lock(ns = "work", key = id)]
pub async fn wrapped(work: &mut UnitOfWork<'_>, id: i64) -> Result<()> {
    work.touched.push(id);
    Ok(())
}

impl UnitOfWork<'_> {
    #[pglock::advisory_lock(ns = "work", key = id, tx = self)]
    pub async fn touch(&mut self, id: i64) -> Result<()> {
        self.touched.push(id);
        Ok(())
    }
}

#[pglock::advisory_lock(ns = "work", key = id, tx = tx)]
pub async fn named(log: &mut Vec<String>, tx: &mut DbTx<'_>, id: i64) -> Result<()> {
    let _ = tx;
    log.push(id.to_string());
    Ok(())
}

#[pglock::advisory_lock(ns = "work", key = id, tx = tx)]
pub async fn mutable_binding(mut tx: &mut DbTx<'_>, id: i64) -> Result<()> {
    let _ = &mut tx;
    Ok(())
}

fn main() {}
