//! The round trips of a transaction begun already holding its lock,
//! counted on the wire by a proxy (one ReadyForQuery per round trip): in a
//! test process of their own, because which message is sent for a lock
//! depends on the locks this process found busy lately.

mod support;

use std::time::Duration;

use pglock::testing::TestServer;
use pglock::{Error, Namespace};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use support::proxy::Proxy;
use support::*;

/// A pool of one connection through a proxy that counts round trips, to a
/// private server; the connection idle, and the statements the test counts
/// already prepared on it (a statement's first use prepares it: a round
/// trip more, once per connection). `test_before_acquire`: whether the pool
/// checks a connection with a round trip of its own before handing it out
/// (sqlx's default).
async fn counted_pool(proxy: &Proxy, ns: &Namespace, test_before_acquire: bool) -> PgPool {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(test_before_acquire)
        .connect(&proxy.url())
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    ns.lock(&0_i64).acquire(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    settled(&pool).await;
    pool
}

/// A private server, the proxy that counts round trips to it, a fresh
/// namespace for `test` and a [`counted_pool`] through the proxy.
async fn counted(
    test: &str,
    test_before_acquire: bool,
) -> (TestServer, Proxy, &'static Namespace, PgPool) {
    let server = private_server(&[]);
    let proxy = Proxy::to(server.port());
    let ns = namespace(test);
    let pool = counted_pool(&proxy, ns, test_before_acquire).await;
    (server, proxy, ns, pool)
}

/// The bare pattern: `pool.begin()`, then the lock on `key` acquired in
/// the transaction.
async fn begin_then_lock(
    pool: &PgPool,
    ns: &Namespace,
    key: i64,
) -> Transaction<'static, Postgres> {
    let mut tx = pool.begin().await.unwrap();
    ns.lock(&key).acquire(&mut tx).await.unwrap();
    tx
}

/// The round trips `f` costs through `proxy`.
async fn round_trips<F: std::future::Future>(proxy: &Proxy, f: F) -> (usize, F::Output) {
    let before = proxy.round_trips();
    let output = f.await;
    (proxy.round_trips() - before, output)
}

#[tokio::test]
async fn begin_and_lock_cost_one_round_trip_where_the_bare_pattern_costs_two() {
    let (server, proxy, ns, pool) = counted("begin_round_trips", false).await;

    let (trips, tx) = round_trips(&proxy, ns.lock(&1_i64).begin(&pool)).await;
    assert_eq!(trips, 1, "begin with the lock");
    tx.unwrap().commit().await.unwrap();

    settled(&pool).await;
    let (trips, tx) = round_trips(&proxy, begin_then_lock(&pool, ns, 2)).await;
    assert_eq!(trips, 2, "pool.begin() and acquire");
    tx.commit().await.unwrap();

    settled(&pool).await;
    let (trips, tx) = round_trips(&proxy, ns.lock_many([3_i64, 4, 5]).begin(&pool)).await;
    assert_eq!(trips, 1, "begin with a set");
    tx.unwrap().commit().await.unwrap();

    // `run`: the lock with BEGIN, then the work's statement (a simple
    // query: nothing to prepare), then COMMIT.
    settled(&pool).await;
    let (trips, done) = round_trips(
        &proxy,
        ns.lock(&6_i64).run(&pool, |tx| {
            Box::pin(async move {
                sqlx::raw_sql("SELECT 1").execute(&mut **tx).await?;
                Ok::<_, Error>(())
            })
        }),
    )
    .await;
    done.unwrap();
    assert_eq!(trips, 3, "run: lock and BEGIN, the work, COMMIT");

    // A busy lock: found busy by the first message, it is waited for in a
    // second (on this pool of one, after sqlx's check of the connection the
    // first gave back: three, as `pool.begin()`, a try and a wait); found
    // busy lately, the one message tries, waits and begins.
    let observer = pool_on(&server, 2).await;
    let (busy_ns, id) = fresh_key("begin_round_trips_busy", 7);
    for (first_time, expected) in [(true, 3), (false, 1)] {
        let holder = hold(&observer, busy_ns, 7).await;
        settled(&pool).await;
        let before = proxy.round_trips();
        let waiter_pool = pool.clone();
        let waiter = tokio::spawn(async move { busy_ns.lock(&7_i64).begin(&waiter_pool).await });
        wait_for_waiters(&observer, id, 1).await;
        holder.release().await.unwrap();
        let tx = waiter.await.unwrap().unwrap();
        let trips = proxy.round_trips() - before;
        assert_eq!(trips, expected, "a busy lock, first time: {first_time}");
        tx.commit().await.unwrap();
    }
}

#[tokio::test]
async fn a_pool_that_checks_its_connections_checks_them_for_both() {
    let (_server, proxy, ns, pool) = counted("begin_round_trips_checked", true).await;

    let (trips, tx) = round_trips(&proxy, ns.lock(&1_i64).begin(&pool)).await;
    assert_eq!(trips, 2, "the pool's check, then begin with the lock");
    tx.unwrap().commit().await.unwrap();

    settled(&pool).await;
    let (trips, tx) = round_trips(&proxy, begin_then_lock(&pool, ns, 2)).await;
    assert_eq!(trips, 3, "the pool's check, BEGIN, acquire");
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_begin_dropped_while_its_answer_is_on_the_way_leaves_no_transaction() {
    let (server, proxy, ns, pool) = counted("begin_dropped_answer", false).await;
    let observer = pool_on(&server, 1).await;
    let id = ns.id(&1_i64);

    // The cheap message (the try and `BEGIN`) runs on the server, which then
    // holds the lock in a transaction; its answer is held back on the way.
    proxy.delay_answers(Duration::from_secs(2));
    let mut begun = Box::pin(ns.lock(&1_i64).begin(&pool));
    let pid = tokio::select! {
        outcome = &mut begun => panic!("answered before the delay: {outcome:?}"),
        pid = async {
            loop {
                if let [pid] = holders(&observer, id).await[..] {
                    break pid;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        } => pid,
    };
    // Nobody is left to end that transaction.
    drop(begun);
    proxy.delay_answers(Duration::ZERO);
    until_unlocked(&observer, id).await;

    // The pool's connection is idle again, in no transaction, and serves.
    eventually(
        Duration::from_secs(15),
        "the connection is idle",
        || async {
            let state: Option<String> =
                sqlx::query_scalar("SELECT state FROM pg_stat_activity WHERE pid = $1")
                    .bind(pid)
                    .fetch_optional(&observer)
                    .await
                    .unwrap();
            state.as_deref() == Some("idle")
        },
    )
    .await;
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(backend_pid(&mut conn).await, pid);
}
