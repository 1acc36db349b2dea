//! Faults while locks are held and awaited: each party gets a typed error or
//! proceeds, no lock is left behind, and the pool serves new work.

mod support;

use std::time::Duration;

use pglock::{CheckOptions, Error, Namespace};
use support::*;

#[tokio::test]
async fn a_holder_terminated_mid_critical_section_fails_typed_and_the_waiter_proceeds() {
    let pool = pool().await;
    let (ns, id) = fresh_key("terminated_holder", 1);
    let mut holder = holding_transaction(&pool, ns, 1).await;
    let holder_pid = backend_pid(&mut holder).await;

    let waiter = spawn_xact_acquire(&pool, ns.lock(&1_i64).timeout(Duration::from_secs(30)));
    wait_for_waiters(&pool, id, 1).await;

    terminate_backend(&pool, holder_pid).await;
    // The holder learns at its next statement, as a typed error.
    let error = ns.lock(&2_i64).acquire(&mut holder).await.unwrap_err();
    assert!(matches!(error, Error::Database(_)), "{error:?}");
    drop(holder);

    let acquired = waiter.await.unwrap().expect("the waiter proceeds");
    assert!(acquired.was_contended());
    assert!(locks_on(&pool, id).await.is_empty());
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(one, 1, "the pool serves new work");
}

static RESTART: Namespace = Namespace::named("test:faults:restart");

#[tokio::test]
async fn a_server_restart_gives_holder_and_waiter_typed_errors_and_the_pool_recovers() {
    // This test restarts its server, so it never uses a shared one.
    let server = private_server(&[]);
    let pool = pool_on(&server, 4).await;
    let id = RESTART.id(&1_i64);

    let mut holder = pool.begin().await.unwrap();
    RESTART.lock(&1_i64).acquire(&mut holder).await.unwrap();
    let waiter = spawn_xact_acquire(&pool, RESTART.lock(&1_i64));
    wait_for_waiters(&pool, id, 1).await;
    let session_lock = RESTART
        .session_lock(&2_i64)
        .acquire_lease(
            pool.acquire().await.unwrap(),
            CheckOptions::default().check_every(Duration::from_millis(100)),
        )
        .await
        .unwrap();

    server.restart().expect("pg_ctl restart -m fast");

    let waiter_error = waiter.await.unwrap().unwrap_err();
    assert!(
        matches!(waiter_error, Error::Database(_)),
        "{waiter_error:?}"
    );
    let holder_error = RESTART.lock(&3_i64).acquire(&mut holder).await.unwrap_err();
    assert!(
        matches!(holder_error, Error::Database(_)),
        "{holder_error:?}"
    );
    drop(holder);
    let mut lease = session_lock;
    let lost = tokio::time::timeout(Duration::from_secs(30), lease.lost())
        .await
        .expect("the lease reports the restart");
    assert_eq!(lost.lock().id(), RESTART.id(&2_i64));

    // The pool replaces its dead connections and serves again.
    eventually(Duration::from_secs(30), "the pool serves again", || async {
        match pool.begin().await {
            Ok(mut tx) => RESTART
                .lock(&1_i64)
                .no_wait()
                .acquire(&mut tx)
                .await
                .is_ok(),
            Err(_) => false,
        }
    })
    .await;
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(held, 0, "nothing survives the restart");
}

#[pglock::advisory_lock(ns = "test:faults:panic", key = key, timeout = "30s")]
async fn panics_while_locked(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    key: i64,
) -> Result<(), pglock::Error> {
    if key >= 0 {
        panic!("the critical section failed");
    }
    Ok(())
}

#[tokio::test]
async fn a_panic_inside_an_annotated_function_leaves_no_lock_and_the_pool_serves() {
    let pool = pool().await;
    let key = i64::from(uuid::Uuid::new_v4().as_u64_pair().0 as u32);
    let id = Namespace::named("test:faults:panic").id(&key);
    let task_pool = pool.clone();
    let task = tokio::spawn(async move {
        let mut tx = task_pool.begin().await.unwrap();
        panics_while_locked(&mut tx, key).await
    });
    assert!(task.await.unwrap_err().is_panic());

    // The dropped transaction rolls back when its connection goes back to
    // the pool, and the lock goes with it.
    until_unlocked(&pool, id).await;
    let mut tx = pool.begin().await.unwrap();
    Namespace::named("test:faults:panic")
        .lock(&key)
        .no_wait()
        .acquire(&mut tx)
        .await
        .expect("the key is free again");
}

/// The proxy's black hole: a connection through it goes silent in both
/// directions, and neither side is closed, until the proxy heals; then the
/// statement held in it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_connection_forwards_nothing_and_closes_nothing_until_healed() {
    use sqlx::Connection;

    let server = private_server(&[]);
    let direct = pool_on(&server, 1).await;
    let proxy = support::proxy::Proxy::to(server.port());
    let mut through = sqlx::PgConnection::connect(&proxy.url()).await.unwrap();
    let pid = backend_pid(&mut through).await;

    proxy.black_hole();
    let asking = tokio::spawn(async move {
        let answer = sqlx::raw_sql("SELECT 'through the black hole'")
            .fetch_one(&mut through)
            .await
            .map(|row| sqlx::Row::get::<String, _>(&row, 0));
        (answer, through)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !asking.is_finished(),
        "no answer and no error while black-holed"
    );
    let (state, query): (String, String) =
        sqlx::query_as("SELECT state, query FROM pg_stat_activity WHERE pid = $1")
            .bind(pid)
            .fetch_one(&direct)
            .await
            .expect("the backend is still connected");
    assert_eq!(state, "idle", "the statement never reached the server");
    assert!(!query.contains("black hole"), "{query}");

    proxy.heal();
    let (answer, _through) = tokio::time::timeout(Duration::from_secs(10), asking)
        .await
        .expect("the held statement runs once healed")
        .unwrap();
    assert_eq!(answer.unwrap(), "through the black hole");
}
