//! The lock helpers against the kit's shared server: what `holds` counts.

use std::str::FromStr;

use pglock_runtime::{Mode, Namespace};
use pglock_testing::TestServer;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, Connection};

static JOBS: Namespace = Namespace::named("pglock-testing:lock-helpers");

fn shared() -> &'static TestServer {
    TestServer::shared().unwrap_or_else(|e| panic!("the shared test server: {e}"))
}

async fn execute(conn: &mut PgConnection, sql: String) {
    sqlx::raw_sql(AssertSqlSafe(sql.clone()))
        .execute(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn options(server: &TestServer) -> PgConnectOptions {
    PgConnectOptions::from_str(&server.url()).expect("the kit's URL parses")
}

#[tokio::test]
async fn holds_asks_about_the_session_not_a_transaction() {
    let conn = PgConnection::connect_with(&options(shared()))
        .await
        .expect("connect");
    let mut guard = JOBS
        .session_lock(&1_i64)
        .acquire(conn)
        .await
        .expect("a session lock");
    // No transaction is open: the lock is the session's.
    assert!(
        pglock_testing::holds(guard.connection(), &JOBS, &1_i64, Mode::Exclusive)
            .await
            .expect("holds")
    );
    assert!(
        !pglock_testing::holds(guard.connection(), &JOBS, &1_i64, Mode::Shared)
            .await
            .expect("holds")
    );
    guard.release().await.expect("released");
}

#[tokio::test]
async fn holds_does_not_count_a_lock_held_in_another_database() {
    let server = shared();
    let here = options(server);
    // The shared server's databases outlive the run: a name of this process.
    let other = format!("pglock_testing_holds_{}", std::process::id());
    let mut admin = PgConnection::connect_with(&here).await.expect("connect");
    execute(&mut admin, format!("DROP DATABASE IF EXISTS {other}")).await;
    execute(&mut admin, format!("CREATE DATABASE {other}")).await;

    let mut there = PgConnection::connect_with(&here.clone().database(&other))
        .await
        .expect("connect to the other database");
    let mut tx = there.begin().await.expect("begin");
    JOBS.lock(&2_i64)
        .acquire(&mut tx)
        .await
        .expect("lock there");
    assert!(
        pglock_testing::holds(&mut tx, &JOBS, &2_i64, Mode::Exclusive)
            .await
            .expect("holds there"),
        "the holder's own session holds it"
    );

    let mut conn = PgConnection::connect_with(&here).await.expect("connect");
    let rows_of_the_id: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM pg_catalog.pg_locks l WHERE {}",
        pglock_runtime::pg_locks::MATCHES
    )))
    .bind(pglock_runtime::pg_locks::encode(JOBS.id(&2_i64)).0)
    .bind(pglock_runtime::pg_locks::encode(JOBS.id(&2_i64)).1)
    .fetch_one(&mut conn)
    .await
    .expect("pg_locks");
    assert_eq!(
        rows_of_the_id, 1,
        "pg_locks shows the other database's lock"
    );
    assert!(
        !pglock_testing::holds(&mut conn, &JOBS, &2_i64, Mode::Exclusive)
            .await
            .expect("holds here"),
        "a lock of another database is not this session's"
    );

    tx.rollback().await.expect("rollback");
    there.close().await.expect("close");
    conn.close().await.expect("close");
    execute(&mut admin, format!("DROP DATABASE {other}")).await;
}
