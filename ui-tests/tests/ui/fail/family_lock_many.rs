// A `LockFamily<i64>` locks `i64` keys only: several keys at once.
use pglock::LockFamily;

static USERS: LockFamily<i64> = LockFamily::named("accounts:user");

async fn run(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock::Error> {
    USERS.lock_many(["alice", "bob"]).acquire(tx).await?;
    Ok(())
}

fn main() {}
