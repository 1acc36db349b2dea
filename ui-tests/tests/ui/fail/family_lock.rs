// A `LockFamily<i64>` locks `i64` keys only: a transaction lock.
use pglock::LockFamily;

static USERS: LockFamily<i64> = LockFamily::named("accounts:user");

async fn run(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock::Error> {
    USERS.lock(&"alice").acquire(tx).await?;
    Ok(())
}

fn main() {}
