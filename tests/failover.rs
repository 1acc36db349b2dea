//! Failover: a primary with a streaming standby; the primary stops at once
//! (`pg_ctl stop -m immediate`) and the standby is promoted. Every holder
//! learns its loss within its bound, and a lock manager, a leader and a
//! pool serve again on the promoted server. The host lists put the standby
//! first, so that connecting only to the primary is what makes them work
//! before the failover.
//!
//! Each test starts its own servers, `DATABASE_URL` or not, and prints its
//! times (`cargo test --test failover -- --nocapture`).

mod support;

use std::time::{Duration, Instant};

use pglock::testing::TestServer;
use pglock::{
    CheckOptions, Error, HoldState, HostAnswer, LockManager, ManagerOptions, connect_primary,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::*;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Checks every 250 ms that may take 1 s: a loss is reported within 1.25 s.
fn checks() -> CheckOptions {
    CheckOptions::default()
        .check_every(Duration::from_millis(250))
        .check_timeout(Duration::from_secs(1))
}

/// The standby first, then the primary: before the failover only the
/// second is a primary, after it only the first.
fn standby_first(primary: &TestServer, standby: &TestServer) -> [PgConnectOptions; 2] {
    [connect_options_of(standby), connect_options_of(primary)]
}

/// A primary and its standby, the host list with the standby first, and a
/// fresh namespace for `test`.
fn standby_first_cluster(
    test: &str,
) -> (
    TestServer,
    TestServer,
    [PgConnectOptions; 2],
    &'static pglock::Namespace,
) {
    let (primary, standby) = primary_and_standby();
    let hosts = standby_first(&primary, &standby);
    (primary, standby, hosts, namespace(test))
}

/// When the failover's steps happened.
struct Failover {
    /// Before `pg_ctl stop -m immediate` ran.
    began: Instant,
    /// When it returned: the old primary is gone.
    crashed: Instant,
    /// When `pg_ctl promote -w` returned: the standby accepts writes.
    promoted: Instant,
}

/// Crashes the primary, then promotes the standby. Blocks this worker
/// thread only: the holders' checks go on running on the other.
fn fail_over(primary: &TestServer, standby: &TestServer) -> Failover {
    tokio::task::block_in_place(|| {
        let began = Instant::now();
        primary.crash().expect("pg_ctl stop -m immediate");
        let crashed = Instant::now();
        standby.promote().expect("pg_ctl promote");
        Failover {
            began,
            crashed,
            promoted: Instant::now(),
        }
    })
}

/// When `state` first says the lock is lost, seen by a task of its own.
fn time_of_loss(mut state: watch::Receiver<HoldState>) -> JoinHandle<Instant> {
    tokio::spawn(async move {
        state
            .wait_for(|state| matches!(state, HoldState::Lost(_)))
            .await
            .expect("the loss is published");
        Instant::now()
    })
}

fn millis(duration: Duration) -> u128 {
    duration.as_millis()
}

impl Failover {
    /// Asserts that a loss seen at `reported` came within `bound` of the old
    /// primary's end, and prints when.
    async fn assert_reported(&self, holder: &str, reported: JoinHandle<Instant>, bound: Duration) {
        let reported = tokio::time::timeout(bound + Duration::from_secs(30), reported)
            .await
            .unwrap_or_else(|_| panic!("{holder} never reported its loss"))
            .expect("the watcher ends");
        let after_crash = reported.saturating_duration_since(self.crashed);
        println!(
            "failover: {holder} reported its loss {} ms after the crash began, {} ms after \
             pg_ctl stop returned (bound {} ms)",
            millis(reported.saturating_duration_since(self.began)),
            millis(after_crash),
            millis(bound),
        );
        // A second of allowance for a busy machine's timers, as in
        // tests/partitions.rs.
        assert!(
            after_crash <= bound + Duration::from_secs(1),
            "{holder} reported its loss {after_crash:?} after the crash, beyond its bound {bound:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lease_and_managed_guard_reports_the_failover_within_its_detection_bound() {
    let (primary, standby, hosts, ns) = standby_first_cluster("failover_loss");
    let lease = ns
        .session_lock(&1_i64)
        .acquire_lease(connect_primary(&hosts).await.unwrap(), checks())
        .await
        .expect("a lease on the primary");
    // Two guards on two connections of the manager: one tried, one granted
    // after a wait behind another session.
    let options = ManagerOptions::default().checks(checks());
    let manager = std::sync::Arc::new(LockManager::with_hosts(hosts, options).unwrap());
    let tried = take_free(&manager, ns, 2).await;
    let primary_pool = pool_on(&primary, 2).await;
    let holder = hold(&primary_pool, ns, 3).await;
    let waiting = spawn_managed_acquire(&manager, ns, 3, None);
    wait_for_waiters(&primary_pool, ns.id(&3_i64), 1).await;
    holder.release().await.unwrap();
    let waited = waiting.await.unwrap().expect("granted after the wait");
    assert_eq!(
        manager.connections(),
        2,
        "a wait has a connection of its own"
    );
    primary_pool.close().await;

    let lease_lost = time_of_loss(lease.watch());
    let tried_lost = time_of_loss(tried.watch());
    let waited_lost = time_of_loss(waited.watch());
    let failover = fail_over(&primary, &standby);

    let bound = checks().detection_bound();
    failover.assert_reported("a lease", lease_lost, bound).await;
    let bound = options.detection_bound();
    failover
        .assert_reported("a managed guard (tried)", tried_lost, bound)
        .await;
    failover
        .assert_reported("a managed guard (waited)", waited_lost, bound)
        .await;
    assert!(!lease.is_held() && !tried.is_held() && !waited.is_held());
    for released in [tried.release().await, waited.release().await] {
        assert!(matches!(released, Err(Error::LockLost(_))), "{released:?}");
    }
    assert!(matches!(lease.release().await, Err(Error::LockLost(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_guard_released_after_the_failover_says_lock_lost() {
    let (primary, standby, hosts, ns) = standby_first_cluster("failover_session_guard");
    let guard = ns
        .session_lock(&1_i64)
        .acquire(connect_primary(&hosts).await.unwrap())
        .await
        .expect("a session lock on the primary");

    fail_over(&primary, &standby);

    // The lock ended with the old primary's session: the release says so,
    // rather than reporting the broken connection as a database error.
    match guard.release().await {
        Err(Error::LockLost(lock)) => assert_eq!(lock.id(), ns.id(&1_i64)),
        other => panic!("expected Error::LockLost, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_connects_only_to_the_primary_and_serves_again_on_the_promoted_one() {
    let (primary, standby) = primary_and_standby();
    let ns = namespace("failover_manager");
    let id = ns.id(&1_i64);
    let options = ManagerOptions::default().checks(checks());
    let manager = LockManager::with_hosts(standby_first(&primary, &standby), options).unwrap();
    let mut guard = manager
        .lock(ns, &1_i64)
        .try_acquire()
        .await
        .expect("the standby is passed over")
        .expect("free");
    let primary_pool = pool_on(&primary, 1).await;
    assert_eq!(
        holders(&primary_pool, id).await.len(),
        1,
        "held on the primary"
    );
    primary_pool.close().await;

    let failover = fail_over(&primary, &standby);
    let lost = tokio::time::timeout(Duration::from_secs(30), guard.lost())
        .await
        .expect("the guard reports its loss");
    assert_eq!(lost.lock().id(), id);

    // The same manager, no restart: its next request goes to the promoted
    // server.
    // The guard reads lost a moment before the manager forgets its claim
    // (never the other way round): until then a try finds the lock busy.
    let asked = Instant::now();
    let deadline = asked + Duration::from_secs(10);
    let regained = loop {
        let tried = manager
            .lock(ns, &1_i64)
            .try_acquire()
            .await
            .expect("served by the promoted server");
        if let Some(guard) = tried {
            break guard;
        }
        assert!(
            Instant::now() < deadline,
            "the lock is free on the promoted server"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let granted = Instant::now();
    println!(
        "failover: the manager granted its first lock on the promoted server {} ms after \
         pg_ctl promote returned ({} ms after the crash began; the request itself took {} ms)",
        millis(granted.saturating_duration_since(failover.promoted)),
        millis(granted.saturating_duration_since(failover.began)),
        millis(granted.saturating_duration_since(asked)),
    );
    let promoted_pool = pool_on(&standby, 1).await;
    assert_eq!(
        holders(&promoted_pool, id).await.len(),
        1,
        "held on the promoted server"
    );
    regained.release().await.unwrap();
    until_unlocked(&promoted_pool, id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_reacquired_through_connect_primary_leads_on_the_promoted_server() {
    let (primary, standby, hosts, ns) = standby_first_cluster("failover_leader");
    let id = ns.id(&"leader");
    let mut lease = ns
        .session_lock(&"leader")
        .acquire_lease(connect_primary(&hosts).await.unwrap(), checks())
        .await
        .expect("the standby is passed over");

    let failover = fail_over(&primary, &standby);
    tokio::time::timeout(Duration::from_secs(30), lease.lost())
        .await
        .expect("the lease reports its loss");

    // The leader's next round: the same host list, now led by the standby.
    let connection = connect_primary(&hosts).await.expect("the promoted server");
    let lease = ns
        .session_lock(&"leader")
        .acquire_lease(connection, checks())
        .await
        .expect("leads again");
    println!(
        "failover: a leader leads again {} ms after pg_ctl promote returned",
        millis(failover.promoted.elapsed())
    );
    let promoted_pool = pool_on(&standby, 1).await;
    assert_eq!(holders(&promoted_pool, id).await.len(), 1);
    assert!(lease.is_held());
    lease.release().await.unwrap();
    until_unlocked(&promoted_pool, id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_no_host_is_a_primary_connecting_fails_typed_naming_each_host_and_its_answer() {
    let (primary, standby) = primary_and_standby();
    let read_only = connect_options_of(&primary).options([("default_transaction_read_only", "on")]);
    let error = connect_primary(&[connect_options_of(&standby), read_only])
        .await
        .expect_err("a standby and a read-only session");
    let Error::NoPrimary { tried } = &error else {
        panic!("expected Error::NoPrimary, got {error:?}");
    };
    let answers: Vec<_> = tried.iter().map(|host| host.answer().clone()).collect();
    assert_eq!(answers, [HostAnswer::Standby, HostAnswer::ReadOnly]);
    assert_eq!(tried[0].port(), standby.port());
    assert_eq!(tried[1].port(), primary.port());

    // The primary is gone and the standby not promoted yet: mid-failover.
    tokio::task::block_in_place(|| primary.crash().expect("pg_ctl stop -m immediate"));
    let hosts = standby_first(&primary, &standby);
    let manager = LockManager::with_hosts(hosts.clone(), ManagerOptions::default()).unwrap();
    let ns = namespace("failover_no_primary");
    for error in [
        connect_primary(&hosts).await.expect_err("no primary"),
        manager
            .lock(ns, &1_i64)
            .try_acquire()
            .await
            .expect_err("no primary"),
    ] {
        let Error::NoPrimary { tried } = &error else {
            panic!("expected Error::NoPrimary, got {error:?}");
        };
        assert_eq!(tried.len(), 2, "{error}");
        assert_eq!(*tried[0].answer(), HostAnswer::Standby, "{error}");
        assert!(
            matches!(tried[1].answer(), HostAnswer::Unreachable(_)),
            "{error}"
        );
        assert!(error.is_retryable(), "a promotion can end it");
        let text = error.to_string();
        for port in [standby.port(), primary.port()] {
            assert!(
                text.contains(&format!(":{port} ")),
                "names each host: {text}"
            );
        }
        println!("failover: mid-failover: {text}");
    }
}

#[tokio::test]
async fn an_empty_host_list_is_a_typed_error() {
    let error = connect_primary(&[]).await.expect_err("no hosts");
    assert!(matches!(error, Error::NoHosts), "{error:?}");
    assert!(!error.is_retryable(), "configuration, not a failover");
    let manager = LockManager::with_hosts([], ManagerOptions::default());
    assert!(matches!(manager, Err(Error::NoHosts)), "{manager:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_locks_through_a_pool_work_again_once_the_pool_reaches_the_promoted_server() {
    let (primary, standby) = primary_and_standby();
    let ns = namespace("failover_pool");
    let id = ns.id(&1_i64);
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(connect_options_of(&primary))
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    ns.lock(&1_i64).acquire(&mut tx).await.unwrap();
    tx.commit().await.unwrap();

    let failover = fail_over(&primary, &standby);
    // sqlx's pool connects to the one host of its options: the old primary.
    // It drops its broken connections, and new ones fail.
    assert!(pool.begin().await.is_err(), "the old primary is gone");

    // What a failover hook does: point the pool at the new primary.
    pool.set_connect_options(connect_options_of(&standby));
    let mut tx = pool
        .begin()
        .await
        .expect("a connection to the promoted server");
    ns.lock(&1_i64)
        .acquire(&mut tx)
        .await
        .expect("a transaction lock on the promoted server");
    println!(
        "failover: a pool pointed at the promoted server took a transaction lock {} ms after \
         pg_ctl promote returned",
        millis(failover.promoted.elapsed())
    );
    let promoted_pool = pool_on(&standby, 1).await;
    assert_eq!(holders(&promoted_pool, id).await.len(), 1);
    tx.commit().await.unwrap();
    until_unlocked(&promoted_pool, id).await;
}
