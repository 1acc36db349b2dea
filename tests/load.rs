//! Mutual exclusion under load, through the attribute macro: unprotected
//! read-modify-write sections come out exact, across tasks and across OS
//! processes; shared holders overlap, exclusive ones never; distinct keys
//! never serialise each other.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use pglock::advisory_lock;
use sqlx::{Postgres, Transaction};
use support::*;

const TASKS: usize = 16;
const SECTIONS: usize = 200;

/// Concurrency observed inside critical sections.
#[derive(Default)]
struct Concurrency {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Concurrency {
    fn enter(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }

    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

/// An unprotected read-modify-write with a yield in the middle: without the
/// lock, concurrent sections lose updates.
#[advisory_lock(ns = "test:load:counter", key = "counter", timeout = "60s")]
async fn increment(
    tx: &mut Transaction<'_, Postgres>,
    counter: &AtomicI64,
    concurrency: &Concurrency,
) -> Result<(), pglock::Error> {
    concurrency.enter();
    let read = counter.load(Ordering::SeqCst);
    tokio::task::yield_now().await;
    counter.store(read + 1, Ordering::SeqCst);
    concurrency.leave();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_tasks_times_two_hundred_sections_count_exactly() {
    let pool = pool_of(TASKS as u32).await;
    let counter = Arc::new(AtomicI64::new(0));
    let concurrency = Arc::new(Concurrency::default());
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (pool, counter, concurrency) = (pool.clone(), counter.clone(), concurrency.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..SECTIONS {
                let mut tx = pool.begin().await.unwrap();
                increment(&mut tx, &counter, &concurrency).await.unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(counter.load(Ordering::SeqCst), (TASKS * SECTIONS) as i64);
    assert_eq!(concurrency.max(), 1, "exclusive holders never overlap");
    let id = pglock::Namespace::named("test:load:counter").id(&"counter");
    assert!(
        locks_on(&pool, id).await.is_empty(),
        "nothing left held or awaited"
    );
}

#[advisory_lock(ns = "test:load:shared", key = "report", mode = shared, timeout = "60s")]
async fn read_report(
    tx: &mut Transaction<'_, Postgres>,
    concurrency: &Concurrency,
) -> Result<(), pglock::Error> {
    concurrency.enter();
    tokio::time::sleep(Duration::from_millis(2)).await;
    concurrency.leave();
    Ok(())
}

#[advisory_lock(ns = "test:load:shared", key = "report", timeout = "60s")]
async fn write_report(
    tx: &mut Transaction<'_, Postgres>,
    readers: &Concurrency,
    writers: &Concurrency,
) -> Result<(), pglock::Error> {
    writers.enter();
    assert_eq!(
        readers.now.load(Ordering::SeqCst),
        0,
        "no reader inside with a writer"
    );
    tokio::time::sleep(Duration::from_millis(2)).await;
    writers.leave();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_holders_overlap_and_exclusive_holders_never_do() {
    let pool = pool_of(TASKS as u32).await;
    let readers = Arc::new(Concurrency::default());
    let writers = Arc::new(Concurrency::default());
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (pool, readers, writers) = (pool.clone(), readers.clone(), writers.clone());
        tasks.push(tokio::spawn(async move {
            for section in 0..50 {
                let mut tx = pool.begin().await.unwrap();
                if (task + section) % 8 == 0 {
                    write_report(&mut tx, &readers, &writers).await.unwrap();
                } else {
                    read_report(&mut tx, &readers).await.unwrap();
                }
                tx.commit().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        readers.max() > 1,
        "shared holders overlapped: {}",
        readers.max()
    );
    assert_eq!(writers.max(), 1, "exclusive holders never overlap");
}

#[advisory_lock(ns = "test:load:many", key = key, timeout = "60s")]
async fn distinct_section(
    tx: &mut Transaction<'_, Postgres>,
    key: i64,
    concurrency: &Concurrency,
) -> Result<(), pglock::Error> {
    concurrency.enter();
    tokio::time::sleep(Duration::from_millis(20)).await;
    concurrency.leave();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_distinct_keys_do_not_serialise_each_other() {
    const CONNECTIONS: usize = 32;
    const KEYS: usize = 3_000;
    let pool = pool_of(CONNECTIONS as u32).await;
    let concurrency = Arc::new(Concurrency::default());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (pool, concurrency, next) = (pool.clone(), concurrency.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let key = next.fetch_add(1, Ordering::SeqCst);
                if key >= KEYS {
                    return;
                }
                let mut tx = pool.begin().await.unwrap();
                distinct_section(&mut tx, key as i64, &concurrency)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Serialised sections would never overlap; independent ones fill the
    // pool (a quarter of it is the bar, for a loaded machine).
    assert!(
        concurrency.max() >= CONNECTIONS / 4,
        "only {} sections overlapped",
        concurrency.max()
    );
}

/// A row in a table, read then written in two statements: the same
/// unprotected read-modify-write, now across processes.
#[advisory_lock(ns = "test:load:processes", key = "counter", timeout = "60s")]
async fn increment_row(
    tx: &mut Transaction<'_, Postgres>,
    table: &str,
) -> Result<(), pglock::Error> {
    let read: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT n FROM {table}")))
        .fetch_one(&mut **tx)
        .await?;
    tokio::task::yield_now().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("UPDATE {table} SET n = $1")))
        .bind(read + 1)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

const PROCESSES: usize = 3;
const PROCESS_TASKS: usize = 4;
const PROCESS_SECTIONS: usize = 100;
const CHILD_TABLE: &str = "PGLOCK_LOAD_TABLE";

/// The parent starts copies of this test binary that run only this test
/// with `PGLOCK_LOAD_TABLE` set; each copy is then a worker process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_incrementing_one_row_count_exactly() {
    if let Ok(table) = std::env::var(CHILD_TABLE) {
        let pool = pool_of(PROCESS_TASKS as u32).await;
        let mut tasks = Vec::new();
        for _ in 0..PROCESS_TASKS {
            let (pool, table) = (pool.clone(), table.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..PROCESS_SECTIONS {
                    let mut tx = pool.begin().await.unwrap();
                    increment_row(&mut tx, &table).await.unwrap();
                    tx.commit().await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        return;
    }

    let pool = pool().await;
    let table = fresh_table(&pool, "load_counter", "n int8 NOT NULL").await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} VALUES (0)"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let url = pglock::testing::database_url().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            tokio::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "processes_incrementing_one_row_count_exactly",
                    "--quiet",
                ])
                .env(CHILD_TABLE, &table)
                .env("DATABASE_URL", &url)
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        let status = tokio::time::timeout(Duration::from_secs(300), child.wait())
            .await
            .expect("the worker process finishes")
            .unwrap();
        assert!(status.success(), "a worker process failed: {status}");
    }
    let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT n FROM {table}")))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, (PROCESSES * PROCESS_TASKS * PROCESS_SECTIONS) as i64);
}
