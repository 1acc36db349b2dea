//! Exhausting the server's shared lock table: a typed error, and the server
//! keeps serving. Runs on a private server with a small lock table, so no
//! other test shares the shortage.

use pglock::testing::{ServerOptions, TestServer};
use pglock::{Error, Namespace};
use sqlx::postgres::PgPoolOptions;

static MANY: Namespace = Namespace::named("test:lock_table");

#[tokio::test]
async fn exhausting_the_lock_table_is_a_typed_error_and_the_server_keeps_serving() {
    let server = TestServer::start(
        ServerOptions::new()
            .setting("max_connections", "20")
            .setting("max_locks_per_transaction", "10"),
    )
    .expect("a private server");
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&server.url())
        .await
        .unwrap();

    let mut tx = pool.begin().await.unwrap();
    let error = MANY
        .lock_many(0..50_000_i64)
        .acquire(&mut tx)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::LockTableFull(_)), "{error:?}");
    assert!(error.to_string().contains("max_locks_per_transaction"));
    assert!(!error.is_retryable());
    tx.rollback().await.unwrap();

    // The shortage ended with the transaction: others lock and query again.
    let mut tx = pool.begin().await.unwrap();
    MANY.lock_many(0..100_i64).acquire(&mut tx).await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(one, 1);
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(held, 100);
    tx.commit().await.unwrap();
}
