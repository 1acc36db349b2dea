//! Fencing tokens: a report that only the current holder of its lock may
//! write. The first writer's backend is terminated while it works; it has
//! not noticed yet when a second writer takes the lock and writes. The
//! first writer's late write carries an older token, and the row refuses
//! it.
//!
//! ```text
//! cargo run --example fencing
//! ```

use std::time::Duration;

use pglock::{CheckOptions, FencingToken, Namespace};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

static REPORTS: Namespace = Namespace::named("example:fencing");

/// Writes the report if no newer holder has written it: the row keeps the
/// newest token it has seen and refuses older ones.
async fn write(pool: &PgPool, body: &str, token: FencingToken) -> Result<bool, sqlx::Error> {
    let written = sqlx::query(
        "UPDATE example_fenced_report SET body = $1, fence = $2 WHERE name = 'daily' AND fence <= $2",
    )
    .bind(body)
    .bind(token.as_i64())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(written == 1)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = pglock::testing::database_url()?;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await?;
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS example_fenced_report; \
         CREATE TABLE example_fenced_report (name text PRIMARY KEY, body text, fence int8 NOT NULL); \
         INSERT INTO example_fenced_report VALUES ('daily', 'none yet', 0)",
    )
    .execute(&pool)
    .await?;

    // The first writer checks its lease only every minute: for that long it
    // may not know its lock is gone.
    let first = REPORTS
        .session_lock(&"daily")
        .with_fencing_token()
        .acquire_lease(
            pool.acquire().await?,
            CheckOptions::default().check_every(Duration::from_secs(60)),
        )
        .await?;
    let first_token = first.fencing_token().expect("asked for");
    println!("first writer holds the lock with token {first_token}");

    // Its backend is terminated (an operator, a failover, a network cut).
    let (encoded, objsubid) = pglock::pg_locks::encode(REPORTS.id(&"daily"));
    let pid: i32 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT l.pid FROM pg_locks l WHERE {} AND l.granted",
        pglock::pg_locks::MATCHES
    )))
    .bind(encoded)
    .bind(objsubid)
    .fetch_one(&pool)
    .await?;
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&pool)
        .await?;

    let second = REPORTS
        .session_lock(&"daily")
        .with_fencing_token()
        .timeout(Duration::from_secs(10))
        .acquire(pool.acquire().await?)
        .await?;
    let second_token = second.fencing_token().expect("asked for");
    println!("second writer holds the lock with token {second_token}");
    println!(
        "second writer's write: {}",
        if write(&pool, "by the second writer", second_token).await? {
            "accepted"
        } else {
            "refused"
        }
    );

    println!(
        "first writer still believes it holds the lock: {}",
        first.is_held()
    );
    let late = write(&pool, "by the first writer, late", first_token).await?;
    println!(
        "first writer's late write: {}",
        if late { "accepted" } else { "refused" }
    );
    let body: String =
        sqlx::query_scalar("SELECT body FROM example_fenced_report WHERE name = 'daily'")
            .fetch_one(&pool)
            .await?;
    println!("the report says: {body}");
    assert!(!late, "a write with an older token is refused");

    second.release().await?;
    drop(first);
    sqlx::raw_sql("DROP TABLE example_fenced_report")
        .execute(&pool)
        .await?;
    Ok(())
}
