//! Fencing tokens: a number that grows with each acquisition, across
//! restarts and crashes, that a protected resource checks so that a holder
//! who lost its lock and does not know it yet can't write after the next
//! holder. Each test runs on a private server, which it restarts or
//! crashes.

mod support;

use std::time::Duration;

use pglock::testing::TestServer;
use pglock::{CheckOptions, Error, FencingToken, LockManager, ManagerOptions, Mode, Namespace};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sqlx::{Connection, Executor};
use support::*;

static FENCED: Namespace = Namespace::named("test:fencing");

/// An exclusive session lock on key 1 of `ns` that asks for a token.
fn fenced(ns: &Namespace) -> pglock::SessionLock<'_> {
    ns.session_lock(&1_i64).with_fencing_token()
}

async fn connect(server: &TestServer) -> PgConnection {
    PgConnection::connect(&server.url()).await.unwrap()
}

/// A token through a session guard, released at once.
async fn session_token(server: &TestServer) -> FencingToken {
    let guard = fenced(&FENCED)
        .acquire(connect(server).await)
        .await
        .unwrap();
    let token = guard.fencing_token().expect("asked for");
    guard.release().await.unwrap();
    token
}

/// A token through a lease, released at once.
async fn lease_token(server: &TestServer) -> FencingToken {
    let lease = fenced(&FENCED)
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
    // The WAL writer waits 10 s between its rounds: what a crash keeps is
    // what a commit flushed itself.
    let server = private_server(&[("wal_writer_delay", "10s")]);
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
    // A server of its own, without autovacuum: nothing else spends
    // transaction ids on it.
    let server = private_server(&[("autovacuum", "off")]);
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

/// A role that may not write the token's logical message.
async fn role_without_messages(server: &TestServer) -> PgConnectOptions {
    let mut admin = connect(server).await;
    sqlx::raw_sql(
        "CREATE ROLE fenceless LOGIN; \
         DO $$ DECLARE f regprocedure; BEGIN \
           FOR f IN SELECT oid::regprocedure FROM pg_proc WHERE proname = 'pg_logical_emit_message' LOOP \
             EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f); \
           END LOOP; END $$",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    let options: PgConnectOptions = server.url().parse().unwrap();
    options.username("fenceless")
}

/// When the server refuses the token, no lock is left: a session guard's
/// connection is closed; the manager gives the lock back, keeps its
/// connection, and serves a request without a token there.
#[tokio::test]
async fn a_token_the_server_refuses_leaves_no_lock_behind() {
    let server = private_server(&[]);
    let pool = pool_on(&server, 3).await;
    let fenceless = role_without_messages(&server).await;
    let id = FENCED.id(&1_i64);

    let refused = fenced(&FENCED)
        .acquire(PgConnection::connect_with(&fenceless).await.unwrap())
        .await;
    assert!(matches!(refused, Err(Error::Database(_))), "{refused:?}");
    until_unlocked(&pool, id).await;

    let manager = LockManager::new(fenceless, ManagerOptions::default().max_connections(1));
    let tried = manager
        .lock(&FENCED, &1_i64)
        .with_fencing_token()
        .try_acquire()
        .await;
    assert!(matches!(tried, Err(Error::Database(_))), "{tried:?}");
    assert_eq!(holders(&pool, id).await, Vec::<i32>::new());
    let plain = manager.lock(&FENCED, &1_i64).try_acquire().await.unwrap();
    let guard = plain.expect("the connection still serves");
    assert_eq!(guard.fencing_token(), None);
    assert_eq!(holders(&pool, id).await.len(), 1);
    guard.release().await.unwrap();

    // A token after a wait, refused the same way.
    let holder = hold(&pool, &FENCED, 1).await;
    let waiting = tokio::spawn(async move {
        manager
            .lock(&FENCED, &1_i64)
            .with_fencing_token()
            .acquire()
            .await
            .map(|_| ())
    });
    wait_for_waiters(&pool, id, 1).await;
    holder.release().await.unwrap();
    let waited = waiting.await.unwrap();
    assert!(matches!(waited, Err(Error::Database(_))), "{waited:?}");
    assert_eq!(holders(&pool, id).await, Vec::<i32>::new());
}

/// A token on a connection inside a transaction would be that
/// transaction's id, handed out before the grant, and its commit would
/// commit the caller's work: refused, nothing committed, no lock held.
#[tokio::test]
async fn a_token_inside_a_transaction_is_refused_and_commits_nothing() {
    let pool = pool().await;
    let ns = namespace("fencing_in_transaction");
    let table = fresh_table(&pool, "fenced_tx", "id int").await;
    let mut conn = pool.acquire().await.unwrap().detach();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN; INSERT INTO {table} VALUES (1)"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let refused = fenced(ns).acquire(conn).await;
    assert!(
        matches!(refused, Err(Error::FencingToken { .. })),
        "{refused:?}"
    );
    until_unlocked(&pool, ns.id(&1_i64)).await;
    assert_eq!(
        count_rows(&pool, &table).await,
        0,
        "the caller's work was not committed"
    );
}

/// Two shared holders at once would each fence the other out: refused
/// before anything is taken.
#[tokio::test]
async fn a_token_for_a_shared_lock_is_refused() {
    let pool = pool().await;
    let ns = namespace("fencing_shared");
    let refused = ns
        .session_lock(&1_i64)
        .with_mode(Mode::Shared)
        .with_fencing_token()
        .acquire(pool.acquire().await.unwrap())
        .await;
    assert!(
        matches!(refused, Err(Error::FencingToken { .. })),
        "{refused:?}"
    );
    let manager = LockManager::new(
        pglock::testing::database_url().unwrap().parse().unwrap(),
        ManagerOptions::default(),
    );
    let refused = manager
        .lock(ns, &1_i64)
        .shared()
        .with_fencing_token()
        .try_acquire()
        .await;
    assert!(
        matches!(refused, Err(Error::FencingToken { .. })),
        "{refused:?}"
    );
    assert_eq!(holders(&pool, ns.id(&1_i64)).await, Vec::<i32>::new());
}
