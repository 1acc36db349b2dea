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

static IMPORTS: Namespace = Namespace::named("test:prepared:imports");

/// A permit a prepared transaction holds is held: a semaphore's row counts
/// it, though no backend owns it.
#[tokio::test]
async fn a_semaphores_row_counts_the_permit_a_prepared_transaction_holds() {
    let server = private_server(&[("max_prepared_transactions", "2")]);
    let pool = pool_on(&server, 4).await;
    let ids = IMPORTS.permit_ids(&1_i64, 2).unwrap();
    let mut tx = pool.begin().await.unwrap();
    let prepared = IMPORTS
        .semaphore(&1_i64, 2)
        .no_wait()
        .acquire(&mut tx)
        .await
        .unwrap();
    sqlx::query("PREPARE TRANSACTION 'pglock-import-1'")
        .execute(&mut *tx)
        .await
        .unwrap();
    drop(tx);
    let mut holder = pool.begin().await.unwrap();
    let held = IMPORTS
        .semaphore(&1_i64, 2)
        .no_wait()
        .acquire(&mut holder)
        .await
        .unwrap();
    assert_ne!(held.index(), prepared.index());
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            let _ = IMPORTS.semaphore(&1_i64, 2).acquire(&mut tx).await;
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let inspection = loop {
        let inspection = pglock::inspect(&pool).await.unwrap();
        if inspection
            .semaphores()
            .iter()
            .any(|row| row.base() == ids.base() && row.waiters().len() == 1)
        {
            break inspection;
        }
        assert!(std::time::Instant::now() < deadline, "{inspection:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let row = inspection
        .semaphores()
        .iter()
        .find(|row| row.base() == ids.base())
        .unwrap();
    assert_eq!(row.held(), 2, "{row:#?}");
    assert_eq!(row.prepared(), [prepared.index()]);
    assert_eq!(row.holders().len(), 1);
    assert_eq!(row.holders()[0].0, held.index());
    assert!(
        row.to_string().ends_with(": 2 of 2 held, 1 waiting"),
        "{row}"
    );
    let known = inspection.semaphore(&IMPORTS, &1_i64, 2).unwrap();
    assert_eq!((known.held(), known.prepared()), (2, row.prepared()));
    // The server agrees: two permits held, one by no backend.
    let rows: Vec<(Option<i32>,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT l.pid FROM pg_locks l WHERE {} AND l.granted",
        pglock::pg_locks::PERMITS_OF
    )))
    .bind(pglock::pg_locks::encode(ids.base()).0)
    .bind(pglock::pg_locks::encode(ids.base()).1)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows.iter().filter(|(pid,)| pid.is_none()).count(), 1);

    waiter.abort();
    holder.rollback().await.unwrap();
    sqlx::query("ROLLBACK PREPARED 'pglock-import-1'")
        .execute(&pool)
        .await
        .unwrap();
}
