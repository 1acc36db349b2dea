//! Inherent methods (`&self`, `&mut self`, `self: &Arc<Self>`), trait impl
//! methods (native async fn in traits) and generic functions.
#![deny(warnings)]

use std::fmt::Display;
use std::sync::Arc;

use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};

pub struct Repository {
    pub table: &'static str,
}

impl Repository {
    #[pglock::advisory_lock(ns = "repo", key = (self.table, id))]
    pub async fn lock_row(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        id: i64,
    ) -> Result<(), AppError> {
        let _ = tx;
        Ok(())
    }

    /// `&mut self` is not taken for the transaction: the one `&mut`
    /// parameter is.
    #[pglock::advisory_lock(ns = "repo", key = id)]
    pub async fn rename(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        id: i64,
    ) -> Result<(), AppError> {
        let _ = tx;
        self.table = "renamed";
        Ok(())
    }

    #[pglock::advisory_lock(ns = "repo", key = id, mode = shared)]
    pub async fn shared_handle(
        self: &Arc<Self>,
        tx: &mut Transaction<'_, Postgres>,
        id: i64,
    ) -> Result<(), AppError> {
        let _ = (tx, &self.table);
        Ok(())
    }

    #[pglock::advisory_lock(ns = "repo", key = Self::KEY)]
    pub async fn associated(tx: &mut Transaction<'_, Postgres>) -> Result<(), AppError> {
        let _ = tx;
        Ok(())
    }

    const KEY: i64 = 7;
}

#[allow(async_fn_in_trait)]
pub trait Settle {
    async fn settle(&self, tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<(), AppError>;
}

impl Settle for Repository {
    /// Docs and attributes stay.
    #[pglock::advisory_lock(ns = "billing:invoice", key = id, timeout = "5s")]
    #[inline]
    async fn settle(&self, tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<(), AppError> {
        let _ = (tx, self.table);
        Ok(())
    }
}

#[pglock::advisory_lock(ns = "generic", key = key)]
pub async fn generic<'c, K, T>(
    tx: &'c mut Transaction<'_, Postgres>,
    key: K,
    value: T,
) -> Result<String, AppError>
where
    K: pglock::LockKey + Send,
    T: Display,
{
    let _ = tx;
    Ok(value.to_string())
}

#[pglock::advisory_lock(ns = "generic", key = key)]
pub async fn impl_trait_argument(
    tx: &mut Transaction<'_, Postgres>,
    key: impl pglock::LockKey,
) -> Result<(), AppError> {
    let _ = tx;
    Ok(())
}

fn main() {}
