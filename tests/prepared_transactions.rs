//! A lock held by a prepared (two-phase) transaction belongs to no backend;
//! inspection still shows it.

mod support;

use pglock::{Mode, Namespace};
use support::{pool_on, private_server};

static BATCHES: Namespace = Namespace::named("test:prepared:batches");

#[tokio::test]
async fn inspection_lists_locks_held_by_prepared_transactions() {
    let server = private_server(&[("max_prepared_transactions", "2")]);
    let pool = pool_on(&server, 2).await;
    let mut tx = pool.begin().await.unwrap();
    BATCHES
        .lock(&9_i64)
        .shared()
        .acquire(&mut tx)
        .await
        .unwrap();
    sqlx::query("PREPARE TRANSACTION 'pglock-batch-9'")
        .execute(&mut *tx)
        .await
        .unwrap();
    drop(tx);

    let inspection = pglock::inspect(&pool).await.unwrap();
    assert!(inspection.locks().is_empty(), "{:?}", inspection.locks());
    let prepared = inspection.prepared();
    assert_eq!(prepared.len(), 1, "{prepared:?}");
    assert_eq!(prepared[0].id(), BATCHES.id(&9_i64));
    assert_eq!(prepared[0].mode(), Some(Mode::Shared));

    sqlx::query("ROLLBACK PREPARED 'pglock-batch-9'")
        .execute(&pool)
        .await
        .unwrap();
    let inspection = pglock::inspect(&pool).await.unwrap();
    assert!(inspection.prepared().is_empty());
}
