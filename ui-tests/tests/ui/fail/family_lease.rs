// A `LockFamily<i64>` locks `i64` keys only: a lease.
use pglock::{CheckOptions, LockFamily};

static LEADERS: LockFamily<i64> = LockFamily::named("cluster:leader");

async fn run(conn: sqlx::PgConnection) -> Result<(), pglock::Error> {
    let lease = LEADERS
        .session_lock(&"partition-7")
        .acquire_lease(conn, CheckOptions::default())
        .await?;
    lease.release().await?;
    Ok(())
}

fn main() {}
