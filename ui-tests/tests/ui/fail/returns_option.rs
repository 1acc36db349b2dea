// An `Option` can't carry the lock's error.
use sqlx::{Postgres, Transaction};

#[pglock::advisory_lock(ns = "jobs", key = id)]
async fn run(tx: &mut Transaction<'_, Postgres>, id: i64) -> Option<u64> {
    let _ = (tx, id);
    Some(1)
}

fn main() {}
