// `no_wait` fails when busy; `skip` returns `Ok(None)`: one of them.
use pglock_ui_tests::AppError;
use sqlx::{Postgres, Transaction};

#[pglock::advisory_lock(ns = "jobs", key = id, skip, no_wait)]
async fn run(tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<Option<()>, AppError> {
    let _ = (tx, id);
    Ok(Some(()))
}

fn main() {}
