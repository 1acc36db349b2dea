//! A hot standby: a real streaming replica of a private primary, built with
//! `pg_basebackup -R` by the testing kit. Advisory locks taken there would
//! exclude no one on the primary, so every way of locking is refused with
//! `Error::Standby`, and nothing is left locked on the standby.
//!
//! The refusal costs nothing on the normal path: the `pg_is_in_recovery()`
//! guard is part of the lock statement itself. Proved by counting, for each
//! uncontended acquisition, the statements the server executed for that
//! backend (`log_statement = all`) and the round trips on the wire (a proxy
//! that counts the server's ReadyForQuery messages): one and one.
//!
//! These tests always start their own servers, `DATABASE_URL` or not.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pglock::testing::{ServerOptions, TestServer};
use pglock::{CheckOptions, Error, Namespace, XactLockSet};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Transaction};
use support::proxy::Proxy;
use support::{backend_pid, find_busy_once, hold_until_awaited, namespace};

static PAIRS: Namespace = Namespace::named_pair("test:topology:standby:pairs");

/// A private primary (with `settings`) and a streaming standby of it. Keep
/// the standby before the primary in drop order: declare it after.
fn primary_and_standby(settings: &[(&str, &str)]) -> (TestServer, TestServer) {
    let options = settings
        .iter()
        .fold(ServerOptions::new(), |options, (name, value)| {
            options.setting(name, value)
        });
    let primary = TestServer::start(options).expect("a private primary");
    let standby = primary.start_standby().expect("a streaming standby");
    (primary, standby)
}

async fn small_pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(30))
        .connect(url)
        .await
        .expect("connect")
}

/// Advisory locks in `pg_locks` of the server `pool` is on, any database.
async fn advisory_locks(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        .fetch_one(pool)
        .await
        .expect("read pg_locks")
}

/// The transaction is still usable: the refusal did not abort it.
async fn usable(tx: &mut Transaction<'static, Postgres>) {
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut **tx)
        .await
        .expect("the transaction is still usable after the refusal");
    assert_eq!(one, 1);
}

fn assert_standby<T: std::fmt::Debug>(what: &str, result: Result<T, Error>) {
    match result {
        Err(Error::Standby) => {}
        other => panic!("{what} on a hot standby: expected Error::Standby, got {other:?}"),
    }
}

#[tokio::test]
async fn every_way_of_locking_is_refused_on_a_hot_standby_and_nothing_is_locked() {
    let (primary, standby) = primary_and_standby(&[]);
    let pool = small_pool(&standby.url()).await;
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(in_recovery, "the standby is in recovery");
    let ns = namespace("standby");
    // A lock found busy (on the primary) is tried and waited for in one
    // statement, which starts with the same guard.
    let primary_pool = small_pool(&primary.url()).await;
    find_busy_once(&primary_pool, ns, 50).await;

    // Transaction-scoped locks, in one transaction that stays open (an xact
    // lock taken by mistake would show in pg_locks until it ends).
    let mut tx = pool.begin().await.unwrap();
    assert_standby("acquire", ns.lock(&1_i64).acquire(&mut tx).await);
    usable(&mut tx).await;
    assert_standby(
        "a shared acquire",
        ns.lock(&1_i64).shared().acquire(&mut tx).await,
    );
    assert_standby(
        "an acquire with a timeout",
        ns.lock(&"doc")
            .timeout(Duration::from_millis(250))
            .acquire(&mut tx)
            .await,
    );
    assert_standby(
        "a no-wait acquire",
        ns.lock(&2_i64).no_wait().acquire(&mut tx).await,
    );
    assert_standby(
        "an acquire in a savepoint",
        ns.lock(&3_i64).in_savepoint().acquire(&mut tx).await,
    );
    assert_standby("try_acquire", ns.lock(&4_i64).try_acquire(&mut tx).await);
    assert_standby(
        "an acquire of a lock found busy before",
        ns.lock(&50_i64)
            .timeout(Duration::from_secs(1))
            .acquire(&mut tx)
            .await,
    );
    assert_standby(
        "a pair-keyed acquire",
        PAIRS.lock(&5_i64).acquire(&mut tx).await,
    );
    assert_standby(
        "XactLockSet::acquire",
        XactLockSet::new()
            .exclusive(ns, &10_i64)
            .shared(ns, &11_i64)
            .exclusive(&PAIRS, &12_i64)
            .timeout(Duration::from_secs(1))
            .acquire(&mut tx)
            .await,
    );
    assert_standby(
        "lock_many",
        ns.lock_many(0..100_i64).no_wait().acquire(&mut tx).await,
    );
    usable(&mut tx).await;

    // The pool helper: refused before the work runs.
    let ran = Arc::new(AtomicUsize::new(0));
    let counter = ran.clone();
    let outcome = ns
        .lock(&20_i64)
        .run(&pool, move |_tx| {
            Box::pin(async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Error>(())
            })
        })
        .await;
    assert_standby("XactLock::run", outcome);
    assert_eq!(ran.load(Ordering::SeqCst), 0, "the work never ran");

    // Session locks and leases, on connections of their own.
    let session = PgConnection::connect(&standby.url()).await.unwrap();
    assert_standby(
        "a session lock",
        ns.session_lock(&30_i64).acquire(session).await,
    );
    let session = PgConnection::connect(&standby.url()).await.unwrap();
    assert_standby(
        "a session try_acquire",
        ns.session_lock(&31_i64).try_acquire(session).await,
    );
    assert_standby(
        "a pooled session lock",
        ns.session_lock(&32_i64)
            .no_wait()
            .acquire(pool.acquire().await.unwrap())
            .await,
    );
    let session = PgConnection::connect(&standby.url()).await.unwrap();
    assert_standby(
        "a lease",
        ns.session_lock(&33_i64)
            .acquire_lease(session, CheckOptions::default())
            .await,
    );

    // Semaphores: every way of taking a permit.
    assert_standby(
        "a semaphore",
        ns.semaphore(&40_i64, 3).acquire(&mut tx).await,
    );
    assert_standby(
        "a semaphore try_acquire",
        ns.semaphore(&41_i64, 3).try_acquire(&mut tx).await,
    );
    let session = PgConnection::connect(&standby.url()).await.unwrap();
    assert_standby(
        "a session semaphore",
        ns.session_semaphore(&42_i64, 2).acquire(session).await,
    );
    let session = PgConnection::connect(&standby.url()).await.unwrap();
    assert_standby(
        "a semaphore's lease",
        ns.session_semaphore(&43_i64, 2)
            .acquire_lease(session, CheckOptions::default())
            .await,
    );

    // Nothing is locked on the standby, while the transaction is still open.
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(held, 0, "no advisory lock seen from the transaction");
    assert_eq!(
        advisory_locks(&pool).await,
        0,
        "no advisory lock on the standby"
    );
    tx.rollback().await.unwrap();
    assert_eq!(advisory_locks(&pool).await, 0);

    // The same calls succeed on the primary: the refusal is the standby's.
    let mut tx = primary_pool.begin().await.unwrap();
    ns.lock(&1_i64).acquire(&mut tx).await.unwrap();
    assert!(ns.lock(&4_i64).try_acquire(&mut tx).await.unwrap());
    XactLockSet::new()
        .exclusive(ns, &10_i64)
        .shared(ns, &11_i64)
        .exclusive(&PAIRS, &12_i64)
        .acquire(&mut tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let guard = ns
        .session_lock(&30_i64)
        .acquire(PgConnection::connect(&primary.url()).await.unwrap())
        .await
        .unwrap();
    guard.release().await.unwrap();

    pool.close().await;
    primary_pool.close().await;
    drop(standby);
    drop(primary);
}

#[tokio::test]
async fn a_standby_built_by_the_kit_streams_from_its_primary() {
    let (primary, standby) = primary_and_standby(&[]);
    let primary_pool = small_pool(&primary.url()).await;
    sqlx::query("CREATE TABLE replicated (n int)")
        .execute(&primary_pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO replicated VALUES (42)")
        .execute(&primary_pool)
        .await
        .unwrap();
    primary
        .wait_for_replay(&standby, Duration::from_secs(30))
        .expect("the standby replays the primary's WAL");

    let standby_pool = small_pool(&standby.url()).await;
    let n: i32 = sqlx::query_scalar("SELECT n FROM replicated")
        .fetch_one(&standby_pool)
        .await
        .unwrap();
    assert_eq!(n, 42, "the standby sees what the primary committed");
    let senders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
            .fetch_one(&primary_pool)
            .await
            .unwrap();
    assert_eq!(senders, 1, "the primary streams to the standby");
    let write = sqlx::query("CREATE TABLE refused (n int)")
        .execute(&standby_pool)
        .await
        .unwrap_err();
    assert_eq!(
        write.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("25006"),
        "the standby is read-only: {write}"
    );

    // After a restart, the kit's wait says when it streams again.
    standby_pool.close().await;
    standby.restart().unwrap();
    standby
        .wait_for_standby(Duration::from_secs(60))
        .expect("streaming again after a restart");

    primary_pool.close().await;
    drop(standby);
    drop(primary);
}

/// What a connection through a round-trip counter cost, from the counter
/// and the server log (filtered by the connection's backend pid).
struct Probe {
    trips: Proxy,
    log: std::path::PathBuf,
    pid: i32,
}

impl Probe {
    /// A connection to `server` through a new counter, and its probe.
    async fn connect(server: &TestServer) -> (PgConnection, Probe) {
        let trips = Proxy::to(server.port());
        let mut conn = PgConnection::connect(&trips.url()).await.unwrap();
        let pid = backend_pid(&mut conn).await;
        let probe = Probe {
            trips,
            log: server.log_file().to_path_buf(),
            pid,
        };
        (conn, probe)
    }

    fn mark(&self) -> (usize, u64) {
        let log_len = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        (self.trips.round_trips(), log_len)
    }

    /// The round trips since `mark`, and the statements this backend logged
    /// since then (`log_statement = all`: one `LOG:` line per execution,
    /// written before the statement runs, so before its answer arrives).
    fn since(&self, (trips, log_len): (usize, u64)) -> (usize, Vec<String>) {
        let log = std::fs::read(&self.log).unwrap();
        let text = String::from_utf8_lossy(&log[log_len as usize..]);
        let tag = format!("[{}] LOG:  ", self.pid);
        let statements = text
            .lines()
            .filter(|line| line.contains(&tag))
            .map(str::to_owned)
            .collect();
        (self.trips.round_trips() - trips, statements)
    }
}

/// Asserts that what happened since `mark` was one round trip that ran one
/// lock statement, with the standby guard in it.
fn assert_one_statement(probe: &Probe, mark: (usize, u64), what: &str) {
    let (trips, statements) = probe.since(mark);
    assert_eq!(
        statements.len(),
        1,
        "{what}: exactly one statement executed; the log shows {statements:#?}"
    );
    let statement = &statements[0];
    assert!(
        statement.contains("/* pglock ns="),
        "{what}: the statement is the lock statement: {statement}"
    );
    assert!(
        statement.contains("pg_is_in_recovery()"),
        "{what}: the standby check is part of it: {statement}"
    );
    assert!(
        statement.contains("advisory_"),
        "{what}: the lock call is part of it: {statement}"
    );
    assert_eq!(trips, 1, "{what}: exactly one round trip");
}

#[tokio::test]
async fn an_uncontended_acquisition_is_one_statement_in_one_round_trip() {
    let (primary, standby) =
        primary_and_standby(&[("log_statement", "all"), ("log_line_prefix", "%m [%p] ")]);
    let ns = namespace("one_round_trip");

    // On the primary. The first use of each statement on a connection also
    // prepares it (one round trip more, once): warm every kind up first, in
    // a transaction of its own.
    let (mut conn, probe) = Probe::connect(&primary).await;
    {
        let mut tx = conn.begin().await.unwrap();
        ns.lock(&0_i64).acquire(&mut tx).await.unwrap();
        ns.lock(&0_i64).shared().acquire(&mut tx).await.unwrap();
        ns.lock_many([0_i64, 1]).acquire(&mut tx).await.unwrap();
        tx.commit().await.unwrap();
    }
    let mut tx = conn.begin().await.unwrap();
    let mark = probe.mark();
    let acquired = ns.lock(&1_i64).acquire(&mut tx).await.unwrap();
    assert!(!acquired.was_contended());
    assert_one_statement(&probe, mark, "acquire");

    let mark = probe.mark();
    ns.lock(&2_i64).shared().acquire(&mut tx).await.unwrap();
    assert_one_statement(&probe, mark, "a shared acquire");

    let mark = probe.mark();
    ns.lock(&3_i64)
        .timeout(Duration::from_secs(5))
        .in_savepoint()
        .acquire(&mut tx)
        .await
        .unwrap();
    assert_one_statement(&probe, mark, "an acquire with a timeout, in a savepoint");

    let mark = probe.mark();
    assert!(ns.lock(&4_i64).try_acquire(&mut tx).await.unwrap());
    assert_one_statement(&probe, mark, "try_acquire");

    let mark = probe.mark();
    ns.lock_many([10_i64, 11, 12, 13])
        .acquire(&mut tx)
        .await
        .unwrap();
    assert_one_statement(&probe, mark, "a set of four locks");
    tx.commit().await.unwrap();

    // A session lock, on a connection that took and released one before.
    // Its first acquisition shows that the counters do see more: the
    // statement is prepared first, one round trip more.
    let (conn, probe) = Probe::connect(&primary).await;
    let mark = probe.mark();
    let guard = ns.session_lock(&100_i64).acquire(conn).await.unwrap();
    let (cold_trips, cold_statements) = probe.since(mark);
    assert_eq!(cold_statements.len(), 1, "{cold_statements:#?}");
    assert!(
        cold_trips >= 2,
        "a first use prepares: {cold_trips} round trip(s)"
    );
    let conn = guard.release().await.unwrap();
    let mark = probe.mark();
    let guard = ns.session_lock(&101_i64).acquire(conn).await.unwrap();
    assert_one_statement(&probe, mark, "a session lock");
    guard.release().await.unwrap();

    // A contended lock that was found busy before: its try and its wait are
    // one statement, in one round trip, as the bare pg_advisory_xact_lock.
    let pool = small_pool(&primary.url()).await;
    let (mut conn, probe) = Probe::connect(&primary).await;
    find_busy_once(&pool, ns, 200).await;
    for measured in [false, true] {
        let holder = hold_until_awaited(&pool, ns.id(&200_i64)).await;
        let mut tx = conn.begin().await.unwrap();
        let mark = probe.mark();
        let acquired = ns
            .lock(&200_i64)
            .timeout(Duration::from_secs(30))
            .acquire(&mut tx)
            .await
            .unwrap();
        assert!(acquired.was_contended());
        // The first use on the connection prepares the statement.
        if measured {
            assert_one_statement(&probe, mark, "a contended acquisition");
        }
        tx.commit().await.unwrap();
        holder.await.unwrap();
    }
    drop(conn);
    pool.close().await;

    // On the standby, the refusal is that same single statement.
    let (mut conn, probe) = Probe::connect(&standby).await;
    {
        let mut tx = conn.begin().await.unwrap();
        assert_standby("warm-up", ns.lock(&0_i64).acquire(&mut tx).await);
        tx.rollback().await.unwrap();
    }
    let mut tx = conn.begin().await.unwrap();
    let mark = probe.mark();
    assert_standby("acquire", ns.lock(&1_i64).acquire(&mut tx).await);
    assert_one_statement(&probe, mark, "a refused acquire on the standby");
    tx.rollback().await.unwrap();
    drop(conn);

    drop(standby);
    drop(primary);
}
