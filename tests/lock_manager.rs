//! The lock manager: many session locks on a few connections, exact
//! exclusion between its own guards, loss reported per guard, and nothing
//! left behind by dropped guards or abandoned waits. Every claim is checked
//! against what `pg_locks` shows.

mod support;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pglock::testing::TestServer;
use pglock::{
    CheckOptions, ConflictCause, Error, LockBudget, LockId, LockManager, ManagedGuard,
    ManagerOptions, Namespace, pg_locks,
};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use support::proxy::Proxy;
use support::*;

fn manager(options: ManagerOptions) -> Arc<LockManager> {
    manager_for(connect_options(), options)
}

fn manager_for(connect: PgConnectOptions, options: ManagerOptions) -> Arc<LockManager> {
    Arc::new(LockManager::new(connect, options))
}

/// A manager of one connection, so that every lock it takes is on the same
/// backend.
fn on_one_connection(connect: PgConnectOptions) -> Arc<LockManager> {
    Arc::new(LockManager::new(
        connect,
        ManagerOptions::default().max_connections(1),
    ))
}

/// A manager of one connection with no lock budget, for the tests that
/// fill the server's lock table through it.
fn on_one_connection_without_budget(connect: PgConnectOptions) -> Arc<LockManager> {
    Arc::new(LockManager::new(
        connect,
        ManagerOptions::default()
            .max_connections(1)
            .lock_budget(LockBudget::locks(NonZeroUsize::MAX)),
    ))
}

/// The bigint ids of `keys` in `ns`.
fn bigint_ids(ns: &Namespace, keys: std::ops::Range<i64>) -> Vec<i64> {
    keys.map(|key| ns.id(&key).bigint().expect("a bigint namespace"))
        .collect()
}

/// Fast checks, so that a loss is seen within about a second.
fn quick_checks() -> ManagerOptions {
    ManagerOptions::default().checks(
        CheckOptions::default()
            .check_every(Duration::from_millis(200))
            .check_timeout(Duration::from_secs(1)),
    )
}

/// (count, distinct pids) of the granted advisory locks on these bigint ids.
async fn held_on(pool: &PgPool, ids: &[i64]) -> (i64, i64) {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*), count(DISTINCT l.pid) FROM pg_locks l \
         JOIN unnest($1::int8[]) AS k(id) ON {} = k.id AND l.objsubid = 1 \
         WHERE l.locktype = 'advisory' AND l.granted",
        pg_locks::ENCODED
    )))
    .bind(ids)
    .fetch_one(pool)
    .await
    .expect("read pg_locks")
}

/// The pid that holds each bigint id, per `pg_locks`.
async fn holder_of(pool: &PgPool, id: LockId) -> Option<i32> {
    holders(pool, id).await.first().copied()
}

async fn acquire_all(
    manager: &Arc<LockManager>,
    ns: &'static Namespace,
    keys: std::ops::Range<i64>,
    workers: i64,
) -> Vec<ManagedGuard> {
    let mut tasks = tokio::task::JoinSet::new();
    let per_worker = (keys.end - keys.start + workers - 1) / workers;
    for worker in 0..workers {
        let manager = Arc::clone(manager);
        let first = keys.start + worker * per_worker;
        let last = (first + per_worker).min(keys.end);
        tasks.spawn(async move {
            let mut held = Vec::new();
            for key in first..last {
                held.push(manager.lock(ns, &key).acquire().await.expect("a free key"));
            }
            held
        });
    }
    let mut held = Vec::new();
    while let Some(part) = tasks.join_next().await {
        held.extend(part.expect("a worker"));
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_locks_live_on_at_most_eight_connections_and_exclude_everyone_else() {
    let pool = pool().await;
    let ns = namespace("manager:scale");
    let manager = manager(ManagerOptions::default().max_connections(8));
    let held = acquire_all(&manager, ns, 0..10_000, 16).await;
    assert_eq!(held.len(), 10_000);
    assert!(manager.connections() <= 8, "{manager:?}");

    let ids = bigint_ids(ns, 0..10_000_i64);
    let (count, pids) = held_on(&pool, &ids).await;
    assert_eq!(count, 10_000, "pg_locks shows every lock");
    assert!((1..=8).contains(&pids), "{pids} backends hold them");

    // Another manager, and a session of another process, get none of them.
    let other = manager_with_default();
    for key in 0..10_000_i64 {
        assert!(
            other.lock(ns, &key).try_acquire().await.unwrap().is_none(),
            "key {key} is held by the first manager"
        );
    }
    let mut outsider = PgConnection::connect(&pglock::testing::database_url().unwrap())
        .await
        .unwrap();
    let taken: i64 = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_try_advisory_lock(k.id)) FROM unnest($1::int8[]) AS k(id)",
    )
    .bind(&ids)
    .fetch_one(&mut outsider)
    .await
    .unwrap();
    assert_eq!(taken, 0, "another session took none");

    drop(held);
    assert_eq!(other.close().await, 0);
    eventually(
        Duration::from_secs(30),
        "dropped handles are unlocked",
        || {
            let pool = pool.clone();
            let ids = ids.clone();
            async move { held_on(&pool, &ids).await.0 == 0 }
        },
    )
    .await;
}

fn manager_with_default() -> Arc<LockManager> {
    manager(ManagerOptions::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_connection_loses_exactly_its_own_handles() {
    let pool = pool().await;
    let ns = namespace("manager:loss");
    let options = quick_checks();
    let manager = manager(options);
    let mut held = acquire_all(&manager, ns, 0..400, 8).await;
    // Which backend holds which handle's lock.
    let mut pids = Vec::new();
    for handle in &held {
        pids.push(holder_of(&pool, handle.lock().id()).await.expect("held"));
    }
    let victim = pids[0];
    assert!(
        pids.iter().any(|pid| *pid != victim),
        "the locks are spread over several connections: {:?}",
        manager
    );
    terminate_backend(&pool, victim).await;

    let bound = options.detection_bound() + Duration::from_secs(2);
    for (handle, pid) in held.iter_mut().zip(&pids) {
        if *pid == victim {
            let lost = tokio::time::timeout(bound, handle.lost())
                .await
                .expect("a handle on the terminated backend reports the loss in time");
            assert_eq!(lost.lock(), handle.lock());
        }
    }
    // One more check interval: the others are still held, per pg_locks too.
    tokio::time::sleep(options.detection_bound()).await;
    for (handle, pid) in held.iter().zip(&pids) {
        if *pid != victim {
            assert!(handle.is_held(), "{} on a sound connection", handle.lock());
            assert_eq!(holder_of(&pool, handle.lock().id()).await, Some(*pid));
        }
    }
    // New locks still succeed, and a lost handle's release says it was lost.
    let fresh = manager.lock(ns, &1_000_000_i64).acquire().await.unwrap();
    fresh.release().await.unwrap();
    let lost_index = pids.iter().position(|pid| *pid == victim).unwrap();
    let lost = held.swap_remove(lost_index);
    assert!(matches!(lost.release().await, Err(Error::LockLost(_))));
    let released = manager.close().await;
    assert_eq!(
        released,
        pids.iter().filter(|pid| **pid != victim).count(),
        "close releases what is still held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exclusive_handles_of_one_manager_exclude_each_other() {
    let ns = namespace("manager:exclusion");
    let manager = manager(ManagerOptions::default().max_connections(4));
    let unprotected = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let manager = Arc::clone(&manager);
        let unprotected = Arc::clone(&unprotected);
        tasks.spawn(async move {
            for _ in 0..200 {
                let lock = manager.lock(ns, &1_i64).acquire().await.expect("the lock");
                // A read-modify-write that loses updates unless excluded.
                let seen = unprotected.load(Ordering::Relaxed);
                tokio::task::yield_now().await;
                unprotected.store(seen + 1, Ordering::Relaxed);
                lock.release().await.expect("a release");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(unprotected.load(Ordering::Relaxed), 16 * 200);
    assert!(manager.connections() <= 4);
}

#[tokio::test]
async fn shared_handles_overlap_and_hold_off_an_exclusive_one() {
    let pool = pool().await;
    let ns = namespace("manager:shared");
    let manager = manager_with_default();
    let first = manager.lock(ns, &7_i64).shared().acquire().await.unwrap();
    let second = manager
        .lock(ns, &7_i64)
        .shared()
        .no_wait()
        .acquire()
        .await
        .unwrap();
    let shared: Vec<(i32, String, bool)> = locks_on(&pool, ns.id(&7_i64)).await;
    assert!(
        !shared.is_empty()
            && shared
                .iter()
                .all(|(_, mode, granted)| mode == "ShareLock" && *granted)
    );
    assert!(
        manager
            .lock(ns, &7_i64)
            .try_acquire()
            .await
            .unwrap()
            .is_none(),
        "an exclusive handle waits for the shared ones"
    );
    first.release().await.unwrap();
    assert!(
        manager
            .lock(ns, &7_i64)
            .try_acquire()
            .await
            .unwrap()
            .is_none()
    );
    second.release().await.unwrap();
    let exclusive = manager
        .lock(ns, &7_i64)
        .try_acquire()
        .await
        .unwrap()
        .expect("free now");
    assert_eq!(
        locks_on(&pool, ns.id(&7_i64)).await,
        vec![(
            holder_of(&pool, ns.id(&7_i64)).await.unwrap(),
            "ExclusiveLock".to_owned(),
            true
        )]
    );
    exclusive.release().await.unwrap();
}

#[tokio::test]
async fn a_handle_waits_for_another_process_on_a_connection_of_its_own() {
    let pool = pool().await;
    let ns = namespace("manager:wait");
    let manager = manager_with_default();
    let other = manager.lock(ns, &1_i64).acquire().await.unwrap();
    let holder = hold(&pool, ns, 2).await;
    let waiting = spawn_managed_acquire(&manager, ns, 2, None);
    let waiters = wait_for_waiters(&pool, ns.id(&2_i64), 1).await;
    let other_pid = holder_of(&pool, ns.id(&1_i64)).await.unwrap();
    assert_ne!(
        waiters[0], other_pid,
        "the wait does not block the connection of a held lock"
    );
    // The held lock's connection still serves its release at once.
    other.release().await.unwrap();
    holder.release().await.unwrap();
    let handle = waiting.await.unwrap().unwrap();
    assert_eq!(holder_of(&pool, ns.id(&2_i64)).await, Some(waiters[0]));
    handle.release().await.unwrap();
}

#[tokio::test]
async fn a_timeout_is_a_typed_conflict_and_no_wait_is_busy() {
    let pool = pool().await;
    let ns = namespace("manager:timeout");
    let manager = manager_with_default();
    let holder = hold(&pool, ns, 3).await;
    let error = manager
        .lock(ns, &3_i64)
        .timeout(Duration::from_millis(100))
        .acquire()
        .await
        .unwrap_err();
    let conflict = error.as_conflict().expect("a conflict");
    assert_eq!(conflict.lock().id(), ns.id(&3_i64));
    assert_eq!(conflict.sqlstate(), "55P03");
    assert!(matches!(
        manager.lock(ns, &3_i64).no_wait().acquire().await,
        Err(Error::Busy(lock)) if lock.id() == ns.id(&3_i64)
    ));
    // An in-process holder times out the same way.
    holder.release().await.unwrap();
    let mine = manager.lock(ns, &3_i64).acquire().await.unwrap();
    let error = manager
        .lock(ns, &3_i64)
        .timeout(Duration::from_millis(100))
        .acquire()
        .await
        .unwrap_err();
    assert_eq!(error.as_conflict().expect("a conflict").sqlstate(), "55P03");
    mine.release().await.unwrap();
}

#[tokio::test]
async fn dropped_handles_and_abandoned_waits_leave_nothing_behind() {
    let pool = pool().await;
    let ns = namespace("manager:drop");
    let manager = manager_with_default();
    let kept = manager.lock(ns, &1_i64).acquire().await.unwrap();
    let dropped = manager.lock(ns, &2_i64).acquire().await.unwrap();
    let kept_pid = holder_of(&pool, ns.id(&1_i64)).await.unwrap();
    drop(dropped);
    eventually(
        Duration::from_secs(1),
        "a dropped handle is unlocked within a second",
        || {
            let pool = pool.clone();
            async move { holders(&pool, ns.id(&2_i64)).await.is_empty() }
        },
    )
    .await;
    assert_eq!(
        holder_of(&pool, ns.id(&1_i64)).await,
        Some(kept_pid),
        "its connection stays open for the other locks"
    );

    // A wait abandoned by its caller leaves no waiter and no stuck connection.
    let holder = hold(&pool, ns, 3).await;
    let waiting = spawn_managed_acquire(&manager, ns, 3, None);
    let waiters = wait_for_waiters(&pool, ns.id(&3_i64), 1).await;
    waiting.abort();
    until_gone(&pool, ns.id(&3_i64), &waiters, "the abandoned wait leaves").await;
    assert_eq!(holders(&pool, ns.id(&3_i64)).await, [holder.pid()]);
    holder.release().await.unwrap();
    let after = manager.lock(ns, &3_i64).acquire().await.unwrap();
    after.release().await.unwrap();
    kept.release().await.unwrap();
}

#[tokio::test]
async fn past_its_bound_the_manager_says_so() {
    let pool = pool().await;
    let ns = namespace("manager:bound");
    let manager = manager(ManagerOptions::default().max_connections(1));
    let holder = hold(&pool, ns, 1).await;
    let waiting = spawn_managed_acquire(&manager, ns, 1, None);
    wait_for_waiters(&pool, ns.id(&1_i64), 1).await;
    let error = manager.lock(ns, &2_i64).acquire().await.unwrap_err();
    assert!(
        matches!(error, Error::ManagerBusy { max_connections: 1 }),
        "{error:?}"
    );
    assert!(error.is_retryable());
    holder.release().await.unwrap();
    waiting.await.unwrap().unwrap().release().await.unwrap();
    manager.close().await;
    assert!(matches!(
        manager.lock(ns, &2_i64).acquire().await,
        Err(Error::ManagerClosed)
    ));
}

#[tokio::test]
async fn a_hostile_runtime_namespace_is_sanitised_in_the_marker() {
    let pool = pool().await;
    // Such a name is refused; a raw namespace's label is not checked.
    let run = uuid::Uuid::new_v4();
    let label = Box::leak(format!("*/ DROP TABLE x; /* {run}").into_boxed_str());
    let ns: &'static Namespace = Box::leak(Box::new(Namespace::raw(run.as_u64_pair().0, label)));
    let manager = manager_with_default();
    let holder = hold(&pool, ns, 1).await;
    let waiting = spawn_managed_acquire(&manager, ns, 1, None);
    let waiter = wait_for_waiters(&pool, ns.id(&1_i64), 1).await[0];
    let query = current_query(&pool, waiter).await;
    assert!(
        query.starts_with("/* pglock ns=?? DROP TABLE x? ?? "),
        "{query}"
    );
    assert_eq!(query.matches("*/").count(), 1, "{query}");
    holder.release().await.unwrap();
    waiting.await.unwrap().unwrap().release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_loses_every_handle_and_the_manager_serves_again() {
    let server = private_server(&[]);
    let options = quick_checks();
    let manager = LockManager::new(server.url().parse().unwrap(), options);
    let ns = namespace("manager:restart");
    let mut held = Vec::new();
    for key in 0..20_i64 {
        held.push(manager.lock(ns, &key).acquire().await.unwrap());
    }
    server.restart().expect("pg_ctl restart -m fast");
    let bound = options.detection_bound() + Duration::from_secs(2);
    for handle in &mut held {
        tokio::time::timeout(bound, handle.lost())
            .await
            .expect("every handle reports the restart");
    }
    let again = manager.lock(ns, &0_i64).acquire().await.unwrap();
    let mut conn = PgConnection::connect(&server.url()).await.unwrap();
    assert_eq!(
        locks_on_conn(&mut conn, ns.id(&0_i64)).await,
        1,
        "the new lock is held on the restarted server"
    );
    again.release().await.unwrap();
}

async fn locks_on_conn(conn: &mut PgConnection, id: LockId) -> i64 {
    let (encoded, objsubid) = pg_locks::encode(id);
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM pg_locks l WHERE {} AND l.granted",
        pg_locks::MATCHES
    )))
    .bind(encoded)
    .bind(objsubid)
    .fetch_one(conn)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_does_not_wait_for_a_wait_to_end() {
    let pool = pool().await;
    let ns = namespace("manager:close-waiting");
    let manager = manager_with_default();
    let holder = hold(&pool, ns, 1).await;
    let waiting = spawn_managed_acquire(&manager, ns, 1, None);
    let waiters = wait_for_waiters(&pool, ns.id(&1_i64), 1).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), manager.close()).await;
    assert!(closed.is_ok(), "close() returns while a wait is pending");
    let waited = waiting.await.unwrap();
    assert!(
        waited.is_err(),
        "the wait ends without the lock: {waited:?}"
    );
    until_gone(&pool, ns.id(&1_i64), &waiters, "the closed wait leaves").await;
    assert_eq!(holders(&pool, ns.id(&1_i64)).await, [holder.pid()]);
    holder.release().await.unwrap();
}

#[tokio::test]
async fn a_timeout_against_a_handle_of_the_same_manager_is_a_conflict_even_at_the_bound() {
    let ns = namespace("manager:bound-timeout");
    let manager = manager(ManagerOptions::default().max_connections(1));
    let mine = manager.lock(ns, &1_i64).acquire().await.unwrap();
    let error = manager
        .lock(ns, &1_i64)
        .timeout(Duration::from_millis(100))
        .acquire()
        .await
        .unwrap_err();
    let conflict = error.as_conflict().expect("a conflict, not a busy manager");
    assert_eq!(conflict.sqlstate(), "55P03");
    assert!(conflict.source().is_none(), "no statement waited");
    assert!(manager.connections() <= 1);
    mine.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_stale_idle_connection_is_replaced_at_once() {
    let server = private_server(&[]);
    let manager = LockManager::new(server.url().parse().unwrap(), quick_checks());
    let ns = namespace("manager:restart-idle");
    let private = PgPool::connect(&server.url()).await.unwrap();
    let mut kept = manager.lock(ns, &1_i64).acquire().await.unwrap();
    // A second connection left idle: a wait that timed out.
    let holder = hold(&private, ns, 2).await;
    let outcome = manager
        .lock(ns, &2_i64)
        .timeout(Duration::from_millis(50))
        .acquire()
        .await;
    expect_conflict(outcome, ConflictCause::LockTimeout);
    holder.release().await.unwrap();
    private.close().await;
    assert_eq!(manager.connections(), 2);
    server.restart().expect("pg_ctl restart -m fast");
    tokio::time::timeout(Duration::from_secs(5), kept.lost())
        .await
        .expect("the held lock reports the restart");
    let next = manager.lock(ns, &3_i64).acquire().await;
    assert!(
        next.is_ok(),
        "the first acquire after the restart: {next:?}"
    );
}

/// The pid of `server`'s postmaster, the parent of each of its backends.
fn postmaster_pid(server: &TestServer) -> u32 {
    let pid_file = std::fs::read_to_string(server.data_dir().join("postmaster.pid"))
        .expect("read postmaster.pid");
    pid_file
        .lines()
        .next()
        .and_then(|line| line.trim().parse().ok())
        .expect("a pid on postmaster.pid's first line")
}

/// The parent of a process of this machine.
fn parent_pid(pid: i32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|error| panic!("process {pid}: {error}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("PPid:"))
        .and_then(|ppid| ppid.trim().parse().ok())
        .expect("a PPid line")
}

/// Stops a backend with SIGSTOP: its process must be of this machine, so
/// the test runs on a private server (`DATABASE_URL` may name another
/// host, where a local pid is someone else's process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_stops_answering_is_lost_within_the_bound() {
    let server = private_server(&[]);
    let pool = pool_on(&server, 1).await;
    let ns = namespace("manager:hung");
    let options = quick_checks();
    let manager = Arc::new(LockManager::new(server.url().parse().unwrap(), options));
    let mut held = manager.lock(ns, &1_i64).acquire().await.unwrap();
    let pid = holder_of(&pool, ns.id(&1_i64)).await.expect("held");
    assert_eq!(
        parent_pid(pid),
        postmaster_pid(&server),
        "the pid is a backend of the test's own server"
    );
    let signal = |name: &str| {
        std::process::Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
            .expect("kill")
    };
    assert!(signal("-STOP").success(), "stop the backend");
    let trying = {
        let manager = Arc::clone(&manager);
        tokio::spawn(async move {
            manager
                .lock(ns, &2_i64)
                .try_acquire()
                .await
                .map(|l| l.is_some())
        })
    };
    let bound = options.detection_bound() + Duration::from_secs(2);
    let lost = tokio::time::timeout(bound, held.lost()).await;
    let tried = tokio::time::timeout(Duration::from_secs(5), trying).await;
    signal("-CONT");
    assert!(lost.is_ok(), "the loss is reported within {bound:?}");
    assert!(tried.is_ok(), "a try on the stopped backend gives up");
}

#[tokio::test]
async fn an_idle_timeout_of_never_is_accepted() {
    let ns = namespace("manager:idle-max");
    let manager = manager(ManagerOptions::default().idle_timeout(Duration::MAX));
    let first = manager.lock(ns, &1_i64).try_acquire().await.unwrap();
    let second = manager.lock(ns, &2_i64).try_acquire().await.unwrap();
    assert!(first.is_some() && second.is_some());
}

/// Terminates a backend and waits until the server no longer lists it.
async fn terminate(pool: &PgPool, pid: i32) {
    terminate_backend(pool, pid).await;
    eventually(Duration::from_secs(10), "the backend is gone", || {
        let pool = pool.clone();
        async move {
            let alive: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
                    .bind(pid)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            !alive
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_a_wait_whose_connection_is_still_opening() {
    let pool = pool().await;
    let ns = namespace("manager:close-connecting");
    let manager = manager_with_default();
    let holder = hold(&pool, ns, 1).await;
    // The first connection holds a lock, so the wait needs a new one.
    let _mine = manager
        .lock(ns, &2_i64)
        .try_acquire()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(manager.connections(), 1);
    let waiting = spawn_managed_acquire(&manager, ns, 1, None);
    while manager.connections() < 2 {
        tokio::task::yield_now().await;
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), manager.close()).await;
    assert!(closed.is_ok(), "close() returns");
    let waited = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the wait ends with the close")
        .unwrap();
    assert!(matches!(waited, Err(Error::ManagerClosed)), "{waited:?}");
    holder.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_routed_to_a_cut_idle_connection_moves_to_another() {
    let pool = pool().await;
    let ns = namespace("manager:wait-on-cut");
    let manager = manager_with_default();
    let _mine = manager
        .lock(ns, &2_i64)
        .try_acquire()
        .await
        .unwrap()
        .unwrap();
    let holder = hold(&pool, ns, 1).await;
    // A wait that times out leaves its connection idle.
    let waiting = spawn_managed_acquire(&manager, ns, 1, Some(Duration::from_millis(300)));
    let idle = wait_for_waiters(&pool, ns.id(&1_i64), 1).await[0];
    assert!(waiting.await.unwrap().unwrap_err().as_conflict().is_some());
    assert_eq!(manager.connections(), 2);
    terminate(&pool, idle).await;
    let error = manager
        .lock(ns, &1_i64)
        .timeout(Duration::from_millis(300))
        .acquire()
        .await
        .unwrap_err();
    holder.release().await.unwrap();
    assert!(
        error.as_conflict().is_some(),
        "a conflict, not the cut: {error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_idle_connections_are_replaced_however_many() {
    let pool = pool().await;
    let ns = namespace("manager:cut-idle");
    let manager = manager_with_default();
    let holders = [hold(&pool, ns, 1).await, hold(&pool, ns, 2).await];
    // Two waits that time out leave two idle connections.
    let mut waits = Vec::new();
    for key in [1_i64, 2] {
        waits.push(spawn_managed_acquire(
            &manager,
            ns,
            key,
            Some(Duration::from_millis(500)),
        ));
    }
    let mut idle = wait_for_waiters(&pool, ns.id(&1_i64), 1).await;
    idle.extend(wait_for_waiters(&pool, ns.id(&2_i64), 1).await);
    for wait in waits {
        assert!(wait.await.unwrap().is_err());
    }
    for holder in holders {
        holder.release().await.unwrap();
    }
    for pid in idle {
        terminate(&pool, pid).await;
    }
    let next = manager.lock(ns, &3_i64).try_acquire().await;
    assert!(
        matches!(next, Ok(Some(_))),
        "the first try after the cut: {next:?}"
    );
}

/// A try's one poll sends it to a connection; dropped where no runtime
/// runs, the try still finishes there and its lock is given back: the
/// server's statement log shows both.
#[test]
fn a_try_dropped_outside_any_runtime_still_finishes() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = private_server(LOGGING);
    let ns = namespace("manager:no-runtime");
    let manager = runtime.block_on(async {
        LockManager::new(
            server.url().parse().unwrap(),
            ManagerOptions::default().idle_timeout(Duration::from_millis(200)),
        )
    });
    // Polled once in the runtime, then dropped outside of it.
    let mut trying = Box::pin(manager.lock(ns, &2_i64).try_acquire());
    runtime.block_on(std::future::poll_fn(|cx| {
        let _ = trying.as_mut().poll(cx);
        std::task::Poll::Ready(())
    }));
    drop(trying);
    runtime.block_on(async {
        let pool = pool_on(&server, 1).await;
        eventually(
            Duration::from_secs(10),
            "the abandoned try is given back and its connection retires",
            || {
                let pool = pool.clone();
                let connections = manager.connections();
                // Both statements logged: a connection still opening is
                // not counted, and nothing is held before the try.
                let logged = statements_with(&server, &format!("pglock ns={} ", ns.label()));
                async move {
                    logged.len() >= 2
                        && connections == 0
                        && holders(&pool, ns.id(&2_i64)).await.is_empty()
                }
            },
        )
        .await;
        let marked = statements_with(&server, &format!("pglock ns={} ", ns.label()));
        let calls: Vec<&str> = marked
            .iter()
            .map(|(_, statement)| match statement {
                s if s.contains("pg_try_advisory_lock(") => "try",
                s if s.contains("pg_advisory_unlock(") => "unlock",
                _ => "other",
            })
            .collect();
        assert_eq!(
            calls,
            ["try", "unlock"],
            "the poll sent the try: {marked:#?}"
        );
        assert_eq!(
            marked[0].0, marked[1].0,
            "the unlock ran on the try's connection"
        );
        pglock::testing::hold_lock(&pool, ns, &2_i64, pglock::Mode::Exclusive)
            .await
            .expect("another session takes the key");
    });
}

/// The manager's backend in `pg_stat_activity`: (state, whether it has a
/// transaction id or holds back vacuum with a snapshot).
async fn activity_of(pool: &PgPool, pid: i32) -> (String, bool) {
    sqlx::query_as(
        "SELECT state, backend_xid IS NOT NULL OR backend_xmin IS NOT NULL \
         FROM pg_stat_activity WHERE pid = $1",
    )
    .bind(pid)
    .fetch_one(pool)
    .await
    .expect("read pg_stat_activity")
}

/// Polls until the manager's backend `pid` is `idle`, out of any
/// transaction; panics with `what` after 10 s.
async fn until_idle(pool: &PgPool, pid: i32, what: &str) {
    eventually(Duration::from_secs(10), what, || {
        let pool = pool.clone();
        async move { activity_of(&pool, pid).await.0 == "idle" }
    })
    .await;
}

/// 1,000 locks make every try and release on that connection run in the
/// short transaction a heavy connection keeps (so that no statement pays
/// for 1,000 locks at its end); its grants and unlocks still reach every
/// other session at once, it never holds back vacuum (READ COMMITTED, even
/// when the session's default is not), and it ends by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heavy_connections_transaction_delays_no_one_and_ends_by_itself() {
    let pool = pool().await;
    let ns = namespace("manager:heavy");
    // A session default that would keep a snapshot for the whole transaction.
    let connect = connect_options().options([("default_transaction_isolation", "repeatable read")]);
    let manager = on_one_connection(connect);
    let held = acquire_all(&manager, ns, 0..1_000, 4).await;
    let pid = holder_of(&pool, ns.id(&0_i64)).await.expect("held");
    for key in 1_000..1_020_i64 {
        let id = ns.id(&key);
        let handle = manager.lock(ns, &key).acquire().await.unwrap();
        assert_eq!(
            holders(&pool, id).await,
            [pid],
            "granted for everyone to see"
        );
        handle.release().await.unwrap();
        assert!(holders(&pool, id).await.is_empty(), "released at once");
        // Between statements (a check may be running one).
        let (state, holds_back) = activity_of(&pool, pid).await;
        assert!(
            state == "active" || !holds_back,
            "no transaction id and no snapshot kept while {state}"
        );
    }
    // A key of the two-int4 space, its try opening a transaction of its own
    // (the connection is heavy).
    static PAIRS: Namespace = Namespace::named_pair("test:manager:heavy-pairs");
    until_idle(&pool, pid, "the transaction ends").await;
    let handle = manager.lock(&PAIRS, &-7_i32).acquire().await.unwrap();
    assert_eq!(holders(&pool, PAIRS.id(&-7_i32)).await, [pid]);
    handle.release().await.unwrap();
    assert!(holders(&pool, PAIRS.id(&-7_i32)).await.is_empty());
    until_idle(
        &pool,
        pid,
        "the connection leaves its transaction once quiet",
    )
    .await;
    let ids = bigint_ids(ns, 0..1_000_i64);
    assert_eq!(held_on(&pool, &ids).await, (1_000, 1));
    assert_eq!(manager.close().await, 1_000);
    drop(held);
}

/// A server that ends idle transactions after 1 ms (and, from PostgreSQL
/// 17, any transaction after 90 ms) must not end a connection that holds
/// 1,000 locks, runs streams of statements (its transactions last up to
/// 100 ms) and goes quiet between them: its transactions turn both
/// timeouts off for themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_transaction_timeouts_never_end_a_busy_connection() {
    let pool = pool().await;
    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut connect = connect_options().options([("idle_in_transaction_session_timeout", "1ms")]);
    if version >= 170_000 {
        connect = connect.options([("transaction_timeout", "90ms")]);
    }
    let manager = on_one_connection(connect);
    let ns = namespace("manager:timeouts");
    let held = acquire_all(&manager, ns, 0..1_000, 4).await;
    let pid = holder_of(&pool, ns.id(&0_i64)).await.expect("held");
    // A stream longer than the transaction timeout.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(400) {
        manager
            .lock(ns, &1_000_i64)
            .acquire()
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
    }
    for key in 1_000..1_020_i64 {
        let handle = manager.lock(ns, &key).acquire().await.unwrap();
        // Quiet time inside the transaction, longer than the timeout.
        tokio::time::sleep(Duration::from_millis(5)).await;
        handle.release().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ids = bigint_ids(ns, 0..1_000_i64);
    assert_eq!(held_on(&pool, &ids).await, (1_000, 1), "nothing was lost");
    assert_eq!(holder_of(&pool, ns.id(&0_i64)).await, Some(pid));
    assert!(held.iter().all(ManagedGuard::is_held));
    assert_eq!(manager.close().await, 1_000);
}

/// Takes locks through `manager`, after those `held` has, until the
/// server's lock table is full; that must come past 1,000 locks, on a heavy
/// connection.
async fn fill_lock_table(manager: &LockManager, ns: &Namespace, held: &mut Vec<ManagedGuard>) {
    let error = loop {
        let key = held.len() as i64;
        assert!(key < 100_000, "the lock table never filled");
        match manager.lock(ns, &key).try_acquire().await {
            Ok(Some(handle)) => held.push(handle),
            Ok(None) => panic!("key {key} is busy"),
            Err(error) => break error,
        }
    };
    assert!(matches!(error, Error::LockTableFull(_)), "{error:?}");
    assert!(
        held.len() >= 1_000,
        "{} locks: a heavy connection",
        held.len()
    );
}

/// After a failed try, the connection (backend `pid`) still serves: a
/// release and an acquire run (the first statement after the failure would
/// fail too were the connection still in the failed transaction), and
/// `pg_locks` shows every handle's lock there, nothing lost.
async fn still_in_service(
    manager: &LockManager,
    ns: &Namespace,
    pool: &PgPool,
    pid: i32,
    mut held: Vec<ManagedGuard>,
) {
    for _ in 0..10 {
        held.pop().unwrap().release().await.unwrap();
    }
    let key = held.len() as i64;
    held.push(manager.lock(ns, &key).acquire().await.unwrap());
    let ids = bigint_ids(ns, 0..held.len() as i64);
    assert_eq!(held_on(pool, &ids).await, (held.len() as i64, 1));
    assert_eq!(holder_of(pool, ns.id(&0_i64)).await, Some(pid));
    assert!(held.iter().all(ManagedGuard::is_held));
    assert_eq!(manager.close().await, held.len());
}

/// A try that fails inside a heavy connection's transaction (here: the
/// server's lock table is full) leaves the connection in service, out of
/// that transaction: the next release and acquire run, nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_try_in_a_heavy_connections_transaction_leaves_it_in_service() {
    let server = private_server(SMALL_LOCK_TABLE);
    let pool = pool_on(&server, 1).await;
    let manager = on_one_connection_without_budget(server.url().parse().unwrap());
    let ns = namespace("manager:full");
    let mut held = vec![manager.lock(ns, &0_i64).acquire().await.unwrap()];
    // Read before the table is full: this query needs room in it too.
    let pid = holder_of(&pool, ns.id(&0_i64)).await.expect("held");
    fill_lock_table(&manager, ns, &mut held).await;

    still_in_service(&manager, ns, &pool, pid, held).await;
}

/// A failed statement aborts the transaction it ran in, and an aborted
/// transaction has already undone its `SET LOCAL`s: were the heavy
/// connection's transaction the one that failed, the server's short
/// idle-in-transaction timeout would end the session (and every lock it
/// holds) before the rollback arrives. Here the way back is slow, so the
/// rollback always arrives after that timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_try_in_a_heavy_connections_transaction_outlives_a_short_idle_timeout() {
    let server = private_server(
        &[
            SMALL_LOCK_TABLE,
            &[("idle_in_transaction_session_timeout", "20ms")],
        ]
        .concat(),
    );
    let pool = pool_on(&server, 1).await;
    let proxy = Proxy::to(server.port());
    let manager = on_one_connection_without_budget(proxy.url().parse().unwrap());
    let ns = namespace("manager:full-slow");
    let mut held = vec![manager.lock(ns, &0_i64).acquire().await.unwrap()];
    let pid = holder_of(&pool, ns.id(&0_i64)).await.expect("held");
    fill_lock_table(&manager, ns, &mut held).await;

    // The table is still full: the next try fails too, now with its answer
    // (and so the rollback) coming 100 ms late.
    proxy.delay_answers(Duration::from_millis(100));
    let key = held.len() as i64;
    let tried = manager.lock(ns, &key).try_acquire().await;
    proxy.delay_answers(Duration::ZERO);
    // Had the session ended, the try would have gone on to a new
    // connection, with room in the table at once.
    assert!(
        held.iter().all(ManagedGuard::is_held),
        "the connection outlived the failed try"
    );
    assert!(matches!(tried, Err(Error::LockTableFull(_))), "{tried:?}");

    still_in_service(&manager, ns, &pool, pid, held).await;
}

/// A server that logs every statement, each line tagged with its backend's
/// pid (read by [`statements_of`]).
const LOGGING: &[(&str, &str)] = &[("log_statement", "all"), ("log_line_prefix", "%m [%p] ")];

/// A server whose lock table fills past 1,000 locks.
const SMALL_LOCK_TABLE: &[(&str, &str)] = &[
    ("max_connections", "10"),
    ("max_locks_per_transaction", "64"),
];

/// A private server that logs every statement, a pool on it, a manager of
/// one connection to it that holds keys `0..keys` of `ns` (taken by
/// `workers` tasks at once), and that connection's backend pid, once the
/// connection is out of any transaction the stream of acquisitions opened
/// (a statement that came within 2 ms of the stream would run in it, its
/// `BEGIN` before a log read that follows).
async fn logging_server_holding(
    ns: &'static Namespace,
    keys: i64,
    workers: i64,
) -> (TestServer, PgPool, Arc<LockManager>, Vec<ManagedGuard>, i32) {
    let server = private_server(LOGGING);
    let pool = pool_on(&server, 1).await;
    let manager = on_one_connection(server.url().parse().unwrap());
    let held = acquire_all(&manager, ns, 0..keys, workers).await;
    let pid = holder_of(&pool, ns.id(&0_i64)).await.expect("held");
    until_idle(&pool, pid, "the stream's transaction ends").await;
    (server, pool, manager, held, pid)
}

/// Where the server log ends now, for [`statements_of`].
fn log_end(server: &TestServer) -> u64 {
    std::fs::metadata(server.log_file())
        .expect("read the server log")
        .len()
}

/// The server log's statements after byte `from`, each with its backend's
/// pid (`log_statement = all`, `log_line_prefix = '%m [%p] '`).
fn logged_statements(server: &TestServer, from: u64) -> Vec<(i32, String)> {
    let log = std::fs::read(server.log_file()).expect("read the server log");
    String::from_utf8_lossy(&log[from as usize..])
        .lines()
        .filter_map(|line| {
            let (_, tagged) = line.split_once(" [")?;
            let (pid, statement) = tagged.split_once("] LOG:  ")?;
            Some((pid.parse().ok()?, statement.to_owned()))
        })
        .collect()
}

/// The server log's statements of backend `pid` after byte `from`.
fn statements_of(server: &TestServer, pid: i32, from: u64) -> Vec<String> {
    logged_statements(server, from)
        .into_iter()
        .filter_map(|(by, statement)| (by == pid).then_some(statement))
        .collect()
}

/// The server log's statements that contain `text`, with their backends'
/// pids.
fn statements_with(server: &TestServer, text: &str) -> Vec<(i32, String)> {
    logged_statements(server, 0)
        .into_iter()
        .filter(|(_, statement)| statement.contains(text))
        .collect()
}

/// From 1,000 locks on, every try and release on the connection runs in a
/// transaction it opened, and the last one ends by itself: read from what
/// the server executed, statement by statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heavy_connections_tries_and_releases_run_in_its_transaction() {
    let ns = namespace("manager:heavy-log");
    let (server, pool, manager, held, pid) = logging_server_holding(ns, 1_000, 4).await;
    let from = log_end(&server);
    for key in 1_000..1_020_i64 {
        let handle = manager.lock(ns, &key).acquire().await.unwrap();
        handle.release().await.unwrap();
    }
    until_idle(
        &pool,
        pid,
        "the connection leaves its transaction once quiet",
    )
    .await;

    let statements = statements_of(&server, pid, from);
    let (mut in_transaction, mut tries, mut releases) = (false, 0, 0);
    for statement in &statements {
        if statement.contains("BEGIN ISOLATION LEVEL READ COMMITTED") {
            assert!(
                !in_transaction,
                "one transaction at a time: {statements:#?}"
            );
            in_transaction = true;
        }
        if statement.ends_with("COMMIT") || statement.ends_with("ROLLBACK") {
            assert!(in_transaction, "{statements:#?}");
            in_transaction = false;
        } else if statement.contains("pg_try_advisory_lock") {
            assert!(
                in_transaction,
                "a try outside the transaction: {statements:#?}"
            );
            tries += 1;
        } else if statement.contains("pg_advisory_unlock") {
            assert!(
                in_transaction,
                "a release outside the transaction: {statements:#?}"
            );
            releases += 1;
        }
    }
    assert_eq!((tries, releases), (20, 20), "{statements:#?}");
    assert!(
        !in_transaction,
        "the last transaction ended: {statements:#?}"
    );
    assert_eq!(manager.close().await, 1_000);
    drop(held);
}

/// A lone acquire and release stay two statements: a connection opens a
/// transaction only for a stream of them (or once it is heavy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_acquisitions_run_without_a_transaction_of_their_own() {
    let ns = namespace("manager:lone");
    let (server, _pool, manager, held, pid) = logging_server_holding(ns, 10, 1).await;
    let from = log_end(&server);
    for key in 10..15_i64 {
        // Quiet time before each pair: each pair is on its own, the first
        // too (the stream's last tries may have come too late to open a
        // transaction, and soon enough to go on with the first pair).
        tokio::time::sleep(Duration::from_millis(20)).await;
        let handle = manager.lock(ns, &key).acquire().await.unwrap();
        handle.release().await.unwrap();
    }
    let statements = statements_of(&server, pid, from);
    let tries = statements
        .iter()
        .filter(|statement| statement.contains("pg_try_advisory_lock"))
        .count();
    let releases = statements
        .iter()
        .filter(|statement| statement.contains("pg_advisory_unlock"))
        .count();
    assert_eq!((tries, releases), (5, 5), "{statements:#?}");
    assert!(
        !statements
            .iter()
            .any(|statement| statement.contains("BEGIN")),
        "no transaction for lone pairs: {statements:#?}"
    );
    assert_eq!(manager.close().await, 10);
    drop(held);
}

/// A wait routed to a connection right after a stream of tries and
/// releases runs outside the stream's transaction: its settings stay its
/// own statement's, and its transaction began with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_after_a_stream_runs_in_a_transaction_of_its_own() {
    let pool = pool().await;
    let ns = namespace("manager:wait-after-stream");
    let manager = on_one_connection(connect_options());
    let holder = hold(&pool, ns, 2).await;
    for _ in 0..20 {
        manager
            .lock(ns, &1_i64)
            .acquire()
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
    }
    let waiting = spawn_managed_acquire(&manager, ns, 2, Some(Duration::from_secs(30)));
    let waiters = wait_for_waiters(&pool, ns.id(&2_i64), 1).await;
    let own: bool =
        sqlx::query_scalar("SELECT xact_start = query_start FROM pg_stat_activity WHERE pid = $1")
            .bind(waiters[0])
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(own, "the wait's transaction began with its statement");
    holder.release().await.unwrap();
    let handle = waiting.await.unwrap().unwrap();
    assert_eq!(holder_of(&pool, ns.id(&2_i64)).await, Some(waiters[0]));
    handle.release().await.unwrap();
    assert_eq!(manager.close().await, 0);
}

/// The manager's backends, found by the marker of the namespace `ns` in the
/// last statement each ran.
async fn backends_of(pool: &PgPool, ns: &Namespace) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() \
         AND strpos(query, $1) > 0 ORDER BY pid",
    )
    .bind(format!("pglock ns={} ", ns.label()))
    .fetch_all(pool)
    .await
    .expect("read pg_stat_activity")
}

/// A connection that holds nothing but keeps serving tries (a worker
/// polling for a lock held elsewhere) is in use: it stays open past the
/// idle timeout, and retires once the tries stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tries_keep_a_connection_that_holds_nothing_from_retiring() {
    let pool = pool().await;
    let ns = namespace("manager:polling");
    let idle = Duration::from_millis(600);
    let manager = manager(ManagerOptions::default().idle_timeout(idle));
    let holder = hold(&pool, ns, 1).await;
    assert!(
        manager
            .lock(ns, &1_i64)
            .try_acquire()
            .await
            .unwrap()
            .is_none()
    );
    let backends = backends_of(&pool, ns).await;
    assert_eq!(backends.len(), 1, "{backends:?}");
    // Polls for three idle timeouts, a try every 100 ms.
    let started = Instant::now();
    while started.elapsed() < idle * 3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            manager
                .lock(ns, &1_i64)
                .try_acquire()
                .await
                .unwrap()
                .is_none()
        );
    }
    assert_eq!(
        backends_of(&pool, ns).await,
        backends,
        "the same connection served every try"
    );
    eventually(
        Duration::from_secs(10),
        "the connection retires once the tries stop",
        || {
            let connections = manager.connections();
            async move { connections == 0 }
        },
    )
    .await;
    holder.release().await.unwrap();
}

/// `connections()` counts the connections open now, not one still
/// connecting: here to a listener that accepts and never answers.
#[tokio::test]
async fn a_connection_still_opening_is_not_counted_as_open() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let manager = manager_for(
        format!("postgres://pglock@127.0.0.1:{port}/none")
            .parse()
            .unwrap(),
        ManagerOptions::default()
            .checks(CheckOptions::default().check_timeout(Duration::from_secs(30))),
    );
    let ns = namespace("manager:opening");
    let trying = tokio::spawn({
        let manager = Arc::clone(&manager);
        async move {
            manager
                .lock(ns, &1_i64)
                .try_acquire()
                .await
                .map(|l| l.is_some())
        }
    });
    let (_socket, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the manager connects")
        .unwrap();
    assert_eq!(manager.connections(), 0, "still opening: not open");
    trying.abort();
}
