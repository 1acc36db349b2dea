// `tx = self` needs `&mut self`: taking a lock runs a statement.
use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};

struct UnitOfWork<'c> {
    tx: Transaction<'c, Postgres>,
}

impl UnitOfWork<'_> {
    #[pglock::advisory_lock(ns = "work", key = id, tx = self)]
    async fn touch(&self, id: i64) -> Result<(), AppError> {
        let _ = (&self.tx, id);
        Ok(())
    }
}

fn main() {}
