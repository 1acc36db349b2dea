// Behind an alias, the `?` on the lock finds the return type is no `Result`.
use sqlx::{Postgres, Transaction};

type Count = u64;

#[pglock::advisory_lock(ns = "jobs", key = id)]
async fn run(tx: &mut Transaction<'_, Postgres>, id: i64) -> Count {
    let _ = (tx, id);
    1
}

fn main() {}
