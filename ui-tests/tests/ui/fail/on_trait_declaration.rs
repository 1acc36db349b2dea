// A trait's method declaration has no body to lock: annotate the impls.
use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};

trait Jobs {
    #[pglock::advisory_lock(ns = "jobs", key = id)]
    async fn run(&self, tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<(), AppError>;
}

fn main() {}
