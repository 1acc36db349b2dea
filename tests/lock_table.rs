//! Exhausting the server's shared lock table: a typed error, and the server
//! keeps serving; a lock manager's budget keeps it from ever filling the
//! table. Runs on private servers with small lock tables, so no other test
//! shares the shortage.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use pglock::testing::{ServerOptions, TestServer};
use pglock::{Error, LockBudget, LockManager, LockTable, ManagedGuard, ManagerOptions, Namespace};
use sqlx::postgres::{PgConnection, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection};
use tokio::io::{AsyncBufReadExt, BufReader};

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

/// A server sized like a stock install: `max_connections = 100`,
/// `max_locks_per_transaction = 64`, no prepared transactions. Its lock table
/// has room for 6,400 locks (with some slack from spare shared memory).
fn stock_server() -> TestServer {
    TestServer::start(
        ServerOptions::new()
            .setting("max_connections", "100")
            .setting("max_locks_per_transaction", "64"),
    )
    .expect("a private server")
}

/// Takes keys `first..` through `manager` until a request fails; returns
/// the handles and the error.
async fn take_until_refused(
    manager: &LockManager,
    ns: &Namespace,
    first: i64,
) -> (Vec<ManagedGuard>, Error) {
    let mut held = Vec::new();
    loop {
        let key = first + held.len() as i64;
        assert!(key < first + 100_000, "no limit was reached");
        match manager.lock(ns, &key).try_acquire().await {
            Ok(Some(handle)) => held.push(handle),
            Ok(None) => panic!("key {key} is busy"),
            Err(error) => return (held, error),
        }
    }
}

/// What the rest of the server must still be able to do while managers
/// hold their locks: open new connections, and run a transaction that locks
/// 50 tables.
async fn the_server_serves_everyone_else(server: &TestServer) {
    for _ in 0..5 {
        let mut conn = PgConnection::connect(&server.url())
            .await
            .expect("a new connection opens");
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(one, 1);
    }
    let mut conn = PgConnection::connect(&server.url()).await.unwrap();
    let tables: Vec<String> = (0..50).map(|n| format!("budget_table_{n}")).collect();
    for table in &tables {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {table} (id int PRIMARY KEY)"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let mut tx = conn.begin().await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "LOCK TABLE {} IN ROW EXCLUSIVE MODE",
        tables.join(", ")
    )))
    .execute(&mut *tx)
    .await
    .expect("an ordinary transaction locks 50 tables");
    let locked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'relation' AND pid = pg_backend_pid() \
         AND relation::regclass::text LIKE 'budget_table_%'",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(locked, 50);
    tx.rollback().await.unwrap();
}

async fn advisory_locks_held(server: &TestServer) -> i64 {
    let mut conn = PgConnection::connect(&server.url()).await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// A manager with default options on a stock-sized server stops at its
/// budget, a quarter of the table, with a typed error naming the budget,
/// the table and the settings; what it holds stays held, the rest of the
/// server goes on serving, and a release makes room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_stops_at_its_budget_and_the_server_serves_everyone_else() {
    let server = stock_server();
    let manager = LockManager::new(server.url().parse().unwrap(), ManagerOptions::default());
    let ns = Namespace::named("test:lock_table:budget");

    let (mut held, error) = take_until_refused(&manager, &ns, 0).await;
    assert_eq!(manager.lock_table(), Some(LockTable::new(64, 100, 0)));
    let Error::LockBudget { budget, table } = &error else {
        panic!("the budget's error, not {error:?}")
    };
    assert_eq!((*budget, table.map(|t| t.entries())), (1_600, Some(6_400)));
    assert_eq!(held.len(), 1_600);
    let text = error.to_string();
    for named in [
        "1600 locks",
        "6400 entries",
        "max_locks_per_transaction 64",
        "max_connections 100",
        "ManagerOptions::lock_budget",
    ] {
        assert!(text.contains(named), "{named:?} in {text}");
    }
    assert!(!error.is_retryable(), "it repeats until locks are released");
    assert!(
        held.iter().all(ManagedGuard::is_held),
        "nothing held is lost"
    );
    assert_eq!(advisory_locks_held(&server).await, 1_600);

    the_server_serves_everyone_else(&server).await;

    held.pop().unwrap().release().await.unwrap();
    let again = manager.lock(&ns, &1_000_000_i64).try_acquire().await;
    assert!(
        matches!(again, Ok(Some(_))),
        "a release makes room: {again:?}"
    );
    assert_eq!(manager.close().await, 1_600);
}

/// Several managers in several processes, each with default options, stop
/// at their own budgets: four of them together hold at most the table's
/// guaranteed size (4 × 25 %), and the server still serves everyone else.
/// The test binary plays each manager's process itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_managers_in_four_processes_together_stay_within_the_table() {
    const ROLE: &str = "PGLOCK_TEST_BUDGET_MANAGER";
    if let Ok(url) = std::env::var(ROLE) {
        return play_one_manager(&url).await;
    }
    let server = stock_server();
    let mut children = Vec::new();
    for process in 0..4 {
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "four_managers_in_four_processes_together_stay_within_the_table",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, format!("{}#{process}", server.url()))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let report = loop {
            let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
                .await
                .expect("the manager's process reports")
                .unwrap()
                .expect("the manager's process is alive");
            // The test harness writes its own words before ours on the line.
            if let Some((_, report)) = line.split_once("HELD ") {
                break report.to_owned();
            }
        };
        assert_eq!(report, "1600 refused: budget", "process {process}");
        // Kept to the end: the process writes more once it ends.
        children.push((child, lines));
    }
    // Each at its budget, a quarter of the table: together, the table's
    // documented size and no more.
    assert_eq!(advisory_locks_held(&server).await, 4 * 1_600);
    the_server_serves_everyone_else(&server).await;
    for (mut child, mut lines) in children {
        drop(child.stdin.take());
        while let Ok(Some(_)) = lines.next_line().await {}
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .expect("the manager's process ends")
            .unwrap();
        assert!(status.success());
    }
}

/// One manager's process: takes locks until refused, reports, and holds
/// them until its standard input closes.
async fn play_one_manager(url_and_process: &str) {
    let (url, process) = url_and_process.rsplit_once('#').unwrap();
    let manager = LockManager::new(url.parse().unwrap(), ManagerOptions::default());
    let ns = Namespace::named("test:lock_table:processes");
    let first = process.parse::<i64>().unwrap() * 100_000;
    let (held, error) = take_until_refused(&manager, &ns, first).await;
    let refused = match error {
        Error::LockBudget { .. } => "budget".to_owned(),
        other => format!("{other:?}"),
    };
    println!("HELD {} refused: {refused}", held.len());
    let _ = tokio::task::spawn_blocking(|| {
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new())
    })
    .await;
    assert_eq!(manager.close().await, held.len());
}

/// With the budget raised past the table, the server's own limit is met:
/// `Error::LockTableFull`, typed, nothing held is lost, and the manager
/// serves again once locks are released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_table_a_full_lock_table_is_typed_and_the_manager_serves_after_releases() {
    let server = stock_server();
    let manager = LockManager::new(
        server.url().parse().unwrap(),
        ManagerOptions::default()
            .lock_budget(LockBudget::locks(NonZeroUsize::new(1_000_000).unwrap())),
    );
    let ns = Namespace::named("test:lock_table:past");

    let (mut held, error) = take_until_refused(&manager, &ns, 0).await;
    assert!(matches!(error, Error::LockTableFull(_)), "{error:?}");
    assert!(held.len() as u64 > LockTable::new(64, 100, 0).entries());
    assert!(
        held.iter().all(ManagedGuard::is_held),
        "nothing held is lost"
    );

    for _ in 0..200 {
        held.pop().unwrap().release().await.unwrap();
    }
    let again = manager.lock(&ns, &1_000_000_i64).try_acquire().await;
    assert!(
        matches!(again, Ok(Some(_))),
        "the manager serves again: {again:?}"
    );
    drop(again);
    let released = manager.close().await;
    assert!(released >= held.len(), "{released} of {}", held.len());
    the_server_serves_everyone_else(&server).await;
}

/// A burst of requests at start-up, before any connection has read the
/// server's table, stays within a budget that is a share of it: requests
/// wait for the first connection to read the table instead of passing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_before_the_table_is_known_stays_within_the_budget() {
    let server = stock_server();
    let manager = Arc::new(LockManager::new(
        server.url().parse().unwrap(),
        ManagerOptions::default().lock_budget(LockBudget::table_share(1).unwrap()),
    ));
    static NS: Namespace = Namespace::named("test:lock_table:burst");
    let mut tries = tokio::task::JoinSet::new();
    for key in 0..1_000_i64 {
        let manager = Arc::clone(&manager);
        tries.spawn(async move { manager.lock(&NS, &key).try_acquire().await });
    }
    let (mut held, mut refused) = (Vec::new(), 0);
    while let Some(outcome) = tries.join_next().await {
        match outcome.unwrap() {
            Ok(Some(handle)) => held.push(handle),
            Ok(None) => panic!("every key is free"),
            Err(Error::LockBudget { budget: 64, .. }) => refused += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!((held.len(), refused), (64, 936));
    assert_eq!(advisory_locks_held(&server).await, 64);
    assert_eq!(manager.close().await, 64);
}
