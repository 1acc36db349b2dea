//! Never more than N holders of a semaphore, across processes: 3 processes
//! of 16 tasks take a permit 200 times each, and a counter that nothing but
//! the semaphore protects records the peak number of holders. The test
//! binary plays each process itself. Also reports how long acquisitions
//! waited under this steady load: the worst against the mean.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use pglock::Namespace;
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};

const ROLE: &str = "PGLOCK_TEST_SEMAPHORE_PROCESS";
const PROCESSES: usize = 3;
const TASKS: usize = 16;
const ROUNDS: usize = 200;
const PERMITS: u32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_n_holders_across_three_processes() {
    if let Ok(role) = std::env::var(ROLE) {
        return play_one_process(&role).await;
    }
    let url = pglock::testing::database_url().unwrap();
    let pool = pool().await;
    let table = fresh_table(
        &pool,
        "sem_peak",
        "holding int4 NOT NULL, peak int4 NOT NULL",
    )
    .await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} VALUES (0, 0)"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let name = format!("test:semaphore_processes:{}", uuid::Uuid::new_v4());

    let mut children = Vec::new();
    for _ in 0..PROCESSES {
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "never_more_than_n_holders_across_three_processes",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, format!("{url}#{table}#{name}"))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        children.push((child, lines));
    }
    let mut waits_ms: Vec<f64> = Vec::new();
    for (mut child, mut lines) in children {
        let report = loop {
            let line = tokio::time::timeout(Duration::from_secs(300), lines.next_line())
                .await
                .expect("the process reports")
                .unwrap()
                .expect("the process is alive");
            // The test harness writes its own words before ours on the line.
            if let Some((_, report)) = line.split_once("WAITS ") {
                break report.to_owned();
            }
        };
        waits_ms.extend(report.split(',').map(|ms| ms.parse::<f64>().unwrap()));
        while let Ok(Some(_)) = lines.next_line().await {}
        assert!(child.wait().await.unwrap().success());
    }

    let (holding, peak): (i32, i32) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT holding, peak FROM {table}"
    )))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(holding, 0);
    assert!(
        peak <= PERMITS as i32,
        "{peak} holders at once, of {PERMITS} permits"
    );
    assert_eq!(peak, PERMITS as i32, "every permit was used");
    assert_eq!(waits_ms.len(), PROCESSES * TASKS * ROUNDS);

    // Starvation: the worst wait against the mean, for the acquisitions
    // that found every permit busy.
    waits_ms.retain(|ms| *ms > 0.0);
    waits_ms.sort_by(f64::total_cmp);
    let mean = waits_ms.iter().sum::<f64>() / waits_ms.len() as f64;
    let at = |q: f64| waits_ms[((waits_ms.len() - 1) as f64 * q) as usize];
    let worst = waits_ms[waits_ms.len() - 1];
    eprintln!(
        "{} of {} acquisitions waited: mean {mean:.1} ms, median {:.1} ms, p99 {:.1} ms, \
         worst {worst:.1} ms ({:.1} x the mean)",
        waits_ms.len(),
        PROCESSES * TASKS * ROUNDS,
        at(0.5),
        at(0.99),
        worst / mean
    );
    // Generous: no waiter is left behind while others come and go.
    assert!(worst < 30_000.0, "a waiter starved for {worst} ms");
}

/// One process: 16 tasks take a permit 200 times each, count themselves in
/// and out of the table while they hold it, and report every wait.
async fn play_one_process(role: &str) {
    let mut parts = role.splitn(3, '#');
    let (url, table, name) = (
        parts.next().unwrap(),
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
    );
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2 * TASKS as u32)
        .acquire_timeout(Duration::from_secs(120))
        .connect(url)
        .await
        .unwrap();
    let ns: &'static Namespace = Box::leak(Box::new(Namespace::try_named(name).unwrap()));
    let enter: &'static str = Box::leak(
        format!("UPDATE {table} SET holding = holding + 1, peak = greatest(peak, holding + 1)")
            .into_boxed_str(),
    );
    let leave: &'static str =
        Box::leak(format!("UPDATE {table} SET holding = holding - 1").into_boxed_str());
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut waits = Vec::with_capacity(ROUNDS);
            for _ in 0..ROUNDS {
                let mut tx = pool.begin().await.unwrap();
                let started = Instant::now();
                let permit = ns
                    .semaphore(&"work", PERMITS)
                    .timeout(Duration::from_secs(120))
                    .acquire(&mut tx)
                    .await
                    .unwrap();
                let waited = started.elapsed();
                // In and out on another connection, each statement its own
                // transaction: only the permit keeps the count down.
                sqlx::query(sqlx::AssertSqlSafe(enter))
                    .execute(&pool)
                    .await
                    .unwrap();
                sqlx::query(sqlx::AssertSqlSafe(leave))
                    .execute(&pool)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                waits.push(if permit.was_contended() {
                    waited.as_secs_f64() * 1e3
                } else {
                    0.0
                });
            }
            waits
        }));
    }
    let mut waits = Vec::new();
    for task in tasks {
        waits.extend(task.await.unwrap());
    }
    let waits: Vec<String> = waits.iter().map(|ms| format!("{ms:.3}")).collect();
    println!("WAITS {}", waits.join(","));
}
