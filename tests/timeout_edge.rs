//! The timeout's edge: PostgreSQL can grant a lock and still fail the wait
//! with the error of a lock timeout or a cancel that fired in between. A
//! session lock survives that error; on a connection the lock manager keeps
//! in service it would stay held for no handle, and every later request of
//! the manager would re-enter it while everyone else waits. The manager
//! checks after every failed request and gives such a lock back.

mod support;

use std::sync::Arc;
use std::time::Duration;

use pglock::testing::{ServerOptions, TestServer, hold_lock, wait_for_waiter};
use pglock::{ConflictCause, Error, LockManager, ManagerOptions, Mode};
use sqlx::postgres::{PgPool, PgPoolOptions};
use support::capture::{Captured, capture};
use support::*;

const GIVEN_BACK: &str = "advisory lock was granted as its request failed; given back";

fn given_back(events: &[Captured]) -> usize {
    events
        .iter()
        .filter(|event| event.fields.get("message").map(String::as_str) == Some(GIVEN_BACK))
        .count()
}

async fn private_pool(server: &TestServer) -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .connect(&server.url())
        .await
        .expect("connect to the private server")
}

fn signal(name: &str, pid: i32) {
    let status = std::process::Command::new("kill")
        .args([name, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {name} {pid}");
}

async fn is_alive(pool: &PgPool, pid: i32) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
        .bind(pid)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Arranged deterministically: the manager's waiting backend is stopped,
/// the holder releases (the server grants the lock to the stopped waiter),
/// a cancel is sent, and the backend resumes: its wait fails with 57014
/// while its session holds the lock. The manager gives the lock back and
/// keeps the connection: another session takes the lock at once.
///
/// On a private server of the kit's, so that its backends are processes of
/// this machine the test may signal.
#[tokio::test]
async fn a_lock_granted_as_its_wait_is_cancelled_is_given_back() {
    let server = TestServer::start(ServerOptions::new()).expect("a private server");
    let pool = private_pool(&server).await;
    let ns = namespace("edge:cancel");
    let manager = Arc::new(LockManager::new(
        server.url().parse().unwrap(),
        ManagerOptions::default().max_connections(1),
    ));
    let (events, _guard) = capture();

    let holder = hold_lock(&pool, ns, &1_i64, Mode::Exclusive).await.unwrap();
    let waiting = tokio::spawn({
        let manager = Arc::clone(&manager);
        async move { manager.lock(ns, &1_i64).acquire().await }
    });
    let waiter = wait_for_waiter(&pool, ns, Duration::from_secs(30))
        .await
        .unwrap()
        .expect("the manager waits on the server");

    signal("-STOP", waiter);
    holder.release().await.unwrap();
    // Granted while the waiter is stopped: the grant is the releaser's work.
    eventually(
        Duration::from_secs(10),
        "the stopped waiter is granted",
        || {
            let pool = pool.clone();
            async move { holders(&pool, ns.id(&1_i64)).await == [waiter] }
        },
    )
    .await;
    let cancelled: bool = sqlx::query_scalar("SELECT pg_cancel_backend($1)")
        .bind(waiter)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(cancelled);
    signal("-CONT", waiter);

    let error = waiting.await.unwrap().unwrap_err();
    let Error::Conflict(conflict) = &error else {
        panic!("a conflict, not {error:?}")
    };
    assert_eq!(conflict.cause(), ConflictCause::StatementTimeoutOrCancel);
    assert_eq!(
        holders(&pool, ns.id(&1_i64)).await,
        Vec::<i32>::new(),
        "the lock granted at the edge was given back"
    );
    assert!(
        is_alive(&pool, waiter).await,
        "the connection stays in service"
    );
    assert_eq!(given_back(&events.events()), 1, "one event says so");

    // Another session takes it; the manager's next request waits its turn
    // instead of re-entering an orphaned lock.
    let other = hold_lock(&pool, ns, &1_i64, Mode::Exclusive).await.unwrap();
    let tried = manager.lock(ns, &1_i64).try_acquire().await.unwrap();
    assert!(tried.is_none(), "the manager no longer holds it");
    other.release().await.unwrap();
    let lock = manager.lock(ns, &1_i64).try_acquire().await.unwrap();
    assert!(lock.is_some());
    assert_eq!(holders(&pool, ns.id(&1_i64)).await, [waiter]);
}

/// Provoked at random: a holder takes and releases the lock every 1 to 4
/// ms while the manager asks for it with 1 to 4 ms timeouts. However
/// often the edge is hit (the events count it), no lock is left on the
/// manager's backends once every handle is released, and the holder never
/// waits out a manager that holds nothing.
#[tokio::test]
async fn no_lock_outlives_its_failed_waits_under_a_racing_holder() {
    let pool = pool().await;
    let ns = namespace("edge:race");
    let manager = Arc::new(LockManager::new(
        pglock::testing::database_url().unwrap().parse().unwrap(),
        ManagerOptions::default().max_connections(2),
    ));
    let (events, _guard) = capture();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let racer = tokio::spawn({
        let pool = pool.clone();
        let stop = Arc::clone(&stop);
        async move {
            let mut conn = pool.acquire().await.unwrap();
            let mut round = 0_u64;
            let mut timeouts = 0_u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                round += 1;
                // A plain session lock with a 2 s lock_timeout: were the
                // manager to keep an orphan, this would time out.
                let taken = sqlx::query(
                    "SELECT set_config('lock_timeout', '2s', false), pg_advisory_lock($1)",
                )
                .bind(ns.id(&1_i64).bigint().unwrap())
                .execute(&mut *conn)
                .await;
                if taken.is_err() {
                    timeouts += 1;
                    continue;
                }
                tokio::time::sleep(Duration::from_micros(1_000 + round % 3_000)).await;
                sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(ns.id(&1_i64).bigint().unwrap())
                    .execute(&mut *conn)
                    .await
                    .unwrap();
            }
            timeouts
        }
    });

    let (mut acquired, mut conflicts) = (0_u32, 0_u32);
    for round in 0..3_000_u64 {
        let timeout = Duration::from_micros(1_000 + (round * 7_919) % 3_000);
        match manager.lock(ns, &1_i64).timeout(timeout).acquire().await {
            Ok(lock) => {
                acquired += 1;
                lock.release().await.unwrap();
            }
            Err(Error::Conflict(_)) => conflicts += 1,
            Err(other) => panic!("round {round}: {other:?}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let racer_timeouts = racer.await.unwrap();

    // Every handle was released and the racer unlocked its last: nobody
    // holds the lock, unless a failed wait left it on the manager.
    let left = holders(&pool, ns.id(&1_i64)).await;
    let hits = given_back(&events.events());
    println!(
        "timeout edge: {acquired} acquired, {conflicts} conflicts, {hits} granted at the edge and given back"
    );
    assert_eq!(left, Vec::<i32>::new(), "no lock outlives its failed wait");
    assert_eq!(
        racer_timeouts, 0,
        "the racing holder never waited out an orphan"
    );
    assert!(conflicts > 0 && acquired > 0, "the lock was contended");
    manager.close().await;
}
