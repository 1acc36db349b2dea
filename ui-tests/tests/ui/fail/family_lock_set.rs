// A `LockFamily<i64>` locks `i64` keys only: a lock set of several namespaces.
use pglock::{LockFamily, Namespace, XactLockSet};

static USERS: LockFamily<i64> = LockFamily::named("accounts:user");
static BOOKS: Namespace = Namespace::named("ledger:book");

async fn run(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock::Error> {
    XactLockSet::new()
        .shared(&BOOKS, "2026")
        .exclusive(&USERS, "alice")
        .acquire(tx)
        .await?;
    Ok(())
}

fn main() {}
