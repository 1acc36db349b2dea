// Taking the lock can fail: the function must return a `Result`.
use sqlx::{Postgres, Transaction};

#[pglock::advisory_lock(ns = "jobs", key = id)]
async fn run(tx: &mut Transaction<'_, Postgres>, id: i64) {
    let _ = (tx, id);
}

fn main() {}
