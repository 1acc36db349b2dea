// A `LockFamily<i64>` locks `i64` keys only: work run in a transaction.
use pglock::LockFamily;

static USERS: LockFamily<i64> = LockFamily::named("accounts:user");

async fn run(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    USERS
        .lock(&"alice")
        .run(pool, |_tx| Box::pin(async { Ok::<_, pglock::Error>(()) }))
        .await
}

fn main() {}
