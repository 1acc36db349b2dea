//! Fencing tokens: a number that grows with each acquisition, across
//! restarts and crashes, that a protected resource checks so that a holder
//! who lost its lock and does not know it yet can't write after the next
//! holder. Each test runs on a private server, which it restarts or
//! crashes.

mod support;

use std::time::Duration;

use pglock::testing::TestServer;
use pglock::{CheckOptions, FencingToken, LockManager, ManagerOptions, Namespace};
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Connection, Executor};
use support::*;

static FENCED: Namespace = Namespace::named("test:fencing");

async fn connect(server: &TestServer) -> PgConnection {
    PgConnection::connect(&server.url()).await.unwrap()
}

/// A token through a session guard, released at once.
async fn session_token(server: &TestServer) -> FencingToken {
    let guard = FENCED
        .session_lock(&1_i64)
        .with_fencing_token()
        .acquire(connect(server).await)
        .await
        .unwrap();
    let token = guard.fencing_token().expect("asked for");
    guard.release().await.unwrap();
    token
}

/// A token through a lease, released at once.
async fn lease_token(server: &TestServer) -> FencingToken {
    let lease = FENCED
        .session_lock(&1_i64)
        .with_fencing_token()
        .acquire_lease(connect(server).await, CheckOptions::default())
        .await
        .unwrap();
    let token = lease.fencing_token().expect("asked for");
    lease.release().await.unwrap();
    token
}

/// A token through a lock manager: one from a try, one from a wait behind
/// another session.
async fn managed_tokens(server: &TestServer, pool: &PgPool) -> [FencingToken; 2] {
    let manager = LockManager::new(server.url().parse().unwrap(), ManagerOptions::default());
    let tried = manager
        .lock(&FENCED, &1_i64)
        .with_fencing_token()
        .try_acquire()
        .await
        .unwrap()
        .expect("free");
    let first = tried.fencing_token().expect("asked for");
    tried.release().await.unwrap();

    let holder = hold(pool, &FENCED, 1).await;
    let waiting = tokio::spawn({
        let server_url = server.url();
        async move {
            let manager = LockManager::new(server_url.parse().unwrap(), ManagerOptions::default());
            let guard = manager
                .lock(&FENCED, &1_i64)
                .with_fencing_token()
                .acquire()
                .await
                .unwrap();
            let token = guard.fencing_token().expect("asked for");
            guard.release().await.unwrap();
            token
        }
    });
    wait_for_waiters(pool, FENCED.id(&1_i64), 1).await;
    holder.release().await.unwrap();
    let second = waiting.await.unwrap();
    manager.close().await;
    [first, second]
}

#[tokio::test]
async fn tokens_grow_with_every_acquisition_across_a_restart_and_a_crash() {
    let server = private_server(&[]);
    let pool = pool_on(&server, 2).await;

    let mut tokens = vec![session_token(&server).await, lease_token(&server).await];
    tokens.extend(managed_tokens(&server, &pool).await);
    pool.close().await;

    server.restart().unwrap();
    tokens.push(session_token(&server).await);

    // Crashed right after the token: no checkpoint, no time for a
    // background write; what the token's commit made durable is all.
    tokens.push(session_token(&server).await);
    server.crash().unwrap();
    server.restart().unwrap();
    tokens.push(session_token(&server).await);
    tokens.push(lease_token(&server).await);

    let pool = pool_on(&server, 2).await;
    tokens.extend(managed_tokens(&server, &pool).await);
    println!("fencing tokens: {tokens:?}");
    assert!(
        tokens.windows(2).all(|pair| pair[0] < pair[1]),
        "every token is greater than every one before: {tokens:?}"
    );
}

#[tokio::test]
async fn a_token_is_only_taken_when_asked_for() {
    // A server of its own: no other test spends transaction ids on it.
    let server = private_server(&[]);
    let pool = pool_on(&server, 1).await;
    let ns = namespace("fencing_not_asked");
    let mut conn = pool.acquire().await.unwrap().detach();
    let before: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::int8")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let guard = ns.session_lock(&1_i64).acquire(conn).await.unwrap();
    assert_eq!(guard.fencing_token(), None);
    let mut conn = guard.release().await.unwrap();
    // No transaction id was spent on the way.
    let after: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::int8")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(after, before + 1);
}

/// The pattern the token is for: the resource keeps the newest token it
/// has seen and refuses a write with an older one. The old holder's
/// backend is terminated; it has not noticed yet (its lease still reads
/// held) when the new holder, granted the freed lock, writes; then the old
/// holder's write is refused.
#[tokio::test]
async fn a_holder_that_lost_its_lock_unnoticed_is_refused_by_the_resource() {
    let pool = pool().await;
    let ns = namespace("fencing_resource");
    let table = fresh_table(
        &pool,
        "fenced",
        "id int PRIMARY KEY, body text, fence int8 NOT NULL",
    )
    .await;
    pool.execute(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} VALUES (1, 'initial', 0)"
    )))
    .await
    .unwrap();
    let write = |body: &'static str, token: FencingToken| {
        let pool = pool.clone();
        let sql = format!("UPDATE {table} SET body = $1, fence = $2 WHERE id = 1 AND fence <= $2");
        async move {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(body)
                .bind(token.as_i64())
                .execute(&pool)
                .await
                .unwrap()
                .rows_affected()
        }
    };

    // The old holder checks its connection only every minute.
    let old = ns
        .session_lock(&1_i64)
        .with_fencing_token()
        .acquire_lease(
            pool.acquire().await.unwrap(),
            CheckOptions::default().check_every(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let old_token = old.fencing_token().unwrap();
    assert_eq!(write("old holder, first", old_token).await, 1);
    let old_pid = holders(&pool, ns.id(&1_i64)).await[0];
    terminate_backend(&pool, old_pid).await;

    let new = ns
        .session_lock(&1_i64)
        .with_fencing_token()
        .timeout(Duration::from_secs(10))
        .acquire(pool.acquire().await.unwrap())
        .await
        .unwrap();
    let new_token = new.fencing_token().unwrap();
    assert!(new_token > old_token);
    assert_eq!(write("new holder", new_token).await, 1);

    assert!(old.is_held(), "the old holder has not noticed yet");
    assert_eq!(
        write("old holder, late", old_token).await,
        0,
        "the late write is refused"
    );
    let body: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT body FROM {table} WHERE id = 1"
    )))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(body, "new holder");
    new.release().await.unwrap();
}
