//! Before measuring: the statements measured are the ones the runtime and
//! hand-written code send, and they do what they claim.

use std::sync::Arc;
use std::time::Duration;

use pglock::{Mode, testing};
use sqlx::postgres::{PgConnection, PgPoolOptions};
use sqlx::{Connection, PgPool};

use crate::BoxError;
use crate::ops::{self, CAPPED, CAPPED_SQL};

/// Learns the capped-wait statement the runtime sends when a lock is busy,
/// byte for byte: a lock is held, the runtime waits for it, and
/// `pg_stat_activity` shows the waiting statement's text, which the bench
/// then sends on free keys as the runtime would (prepared, binding the id and
/// the cap in milliseconds).
pub(crate) async fn learn_capped_sql(url: &str) -> Result<(), BoxError> {
    let pool = PgPoolOptions::new().max_connections(2).connect(url).await?;
    let holder = testing::hold_lock(&pool, &CAPPED, &-1_i64, Mode::Exclusive).await?;
    let mut waiter = PgConnection::connect(url).await?;
    let wait = tokio::spawn(async move {
        let mut tx = waiter.begin().await?;
        let acquired = CAPPED
            .lock(&-1_i64)
            .timeout(ops::TIMEOUT)
            .acquire(&mut tx)
            .await?;
        tx.commit().await?;
        Ok::<_, BoxError>(acquired)
    });
    let seen = seen_waiting(&pool).await;
    holder.release().await?;
    let acquired = wait.await??;
    let (seen, limit) = seen?;
    if !acquired.was_contended() {
        return Err("the runtime did not wait; the check saw nothing".into());
    }
    // `pg_stat_activity.query` keeps `track_activity_query_size - 1` bytes.
    if seen.len() + 1 >= limit {
        return Err(format!(
            "pg_stat_activity shows only the first {} bytes of the runtime's capped-wait \
             statement: raise track_activity_query_size on the server",
            seen.len()
        )
        .into());
    }
    if !seen.starts_with(CAPPED.marker()) || !seen.contains("lock_timeout") {
        return Err(format!("the statement seen waiting is not a capped wait: {seen}").into());
    }
    CAPPED_SQL
        .set(Arc::from(seen))
        .map_err(|_| "the capped-wait statement was learned twice")?;
    Ok(())
}

async fn seen_waiting(pool: &PgPool) -> Result<(String, usize), BoxError> {
    let pid = testing::wait_for_waiter(pool, &CAPPED, Duration::from_secs(10))
        .await?
        .ok_or("the runtime's wait never showed in pg_stat_activity")?;
    let (query, limit): (String, i32) = sqlx::query_as(
        "SELECT query, (SELECT setting::int4 FROM pg_catalog.pg_settings \
                        WHERE name = 'track_activity_query_size') \
         FROM pg_catalog.pg_stat_activity WHERE pid = $1",
    )
    .bind(pid)
    .fetch_one(pool)
    .await?;
    Ok((query, usize::try_from(limit)?))
}

/// The capped statement restores the exact previous setting (a plain value
/// and a stricter one); the hand-written three statements cap and then restore.
pub(crate) async fn statements_restore(url: &str) -> Result<(), BoxError> {
    let mut conn = PgConnection::connect(url).await?;
    let mut tx = conn.begin().await?;
    for previous in ["0", "2s", "1min"] {
        sqlx::query("SELECT set_config('lock_timeout', $1, true)")
            .bind(previous)
            .execute(&mut *tx)
            .await?;
        ops::capped_statement(&mut tx, ops::bigint(&CAPPED, -2)).await?;
        expect_lock_timeout(&mut tx, previous, "after the capped-wait statement").await?;
    }
    sqlx::query("SELECT set_config('lock_timeout', '0', true)")
        .execute(&mut *tx)
        .await?;
    let previous: String = sqlx::query_scalar(ops::HAND_WRITTEN_CAP_SQL)
        .bind("5s")
        .bind(5_000_i64)
        .fetch_one(&mut *tx)
        .await?;
    expect_lock_timeout(&mut tx, "5s", "after the hand-written cap").await?;
    let _: String = sqlx::query_scalar(ops::HAND_WRITTEN_RESTORE_SQL)
        .bind(&previous)
        .fetch_one(&mut *tx)
        .await?;
    expect_lock_timeout(&mut tx, "0", "after the hand-written restore").await?;
    tx.rollback().await?;
    Ok(())
}

async fn expect_lock_timeout(
    conn: &mut PgConnection,
    expected: &str,
    when: &str,
) -> Result<(), BoxError> {
    let actual: String = sqlx::query_scalar("SELECT current_setting('lock_timeout')")
        .fetch_one(conn)
        .await?;
    if actual != expected {
        return Err(format!("lock_timeout is {actual:?} {when}, expected {expected:?}").into());
    }
    Ok(())
}
