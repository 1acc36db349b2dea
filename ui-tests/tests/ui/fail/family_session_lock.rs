// A `LockFamily<i64>` locks `i64` keys only: a session lock.
use pglock::LockFamily;

static USERS: LockFamily<i64> = LockFamily::named("accounts:user");

async fn run(conn: sqlx::PgConnection) -> Result<(), pglock::Error> {
    let guard = USERS.session_lock(&"alice").acquire(conn).await?;
    guard.release().await?;
    Ok(())
}

fn main() {}
