//! A transaction begun already holding its lock (`XactLock::begin`,
//! `XactLockSet::begin`, and `run`, which uses them): the lock statement and
//! `BEGIN` in one message, with every guarantee of `acquire`.

mod support;

use std::time::Duration;

use pglock::{ConflictCause, Error, LockFamily, XactLockSet};
use sqlx::postgres::PgPool;
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use support::*;

/// A pool of one connection whose session sets `lock_timeout` to
/// `setting`: what `begin` finds and must leave as it was.
async fn one_connection_with_lock_timeout(setting: &str) -> (PgPool, i32) {
    let pool = pool_of(1).await;
    let mut conn = pool.acquire().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET lock_timeout = '{setting}'"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    let pid = backend_pid(&mut conn).await;
    drop(conn);
    settled(&pool).await;
    (pool, pid)
}

/// The session of the pool's only connection, once it is back: the same
/// backend `pid`, in no transaction (idle, not in an aborted transaction
/// block), with `lock_timeout` still `setting`, and no advisory lock.
async fn back_clean(pool: &PgPool, pid: i32, setting: &str) {
    let mut observer = PgConnection::connect_with(&pool.connect_options())
        .await
        .unwrap();
    let mut conn = tokio::time::timeout(Duration::from_secs(15), pool.acquire())
        .await
        .expect("the connection came back to the pool")
        .unwrap();
    assert_eq!(backend_pid(&mut conn).await, pid, "the same connection");
    assert_eq!(lock_timeout(&mut conn).await, setting);
    let state: String = sqlx::query_scalar("SELECT state FROM pg_stat_activity WHERE pid = $1")
        .bind(pid)
        .fetch_one(&mut observer)
        .await
        .unwrap();
    // The observer reads the state the session had before this query.
    assert_eq!(state, "idle", "no transaction left open");
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(held, 0, "no advisory lock left");
    drop(conn);
    settled(pool).await;
}

/// The transaction's own view of `lock_timeout`.
async fn lock_timeout_in(tx: &mut Transaction<'static, Postgres>) -> String {
    lock_timeout(tx).await
}

#[tokio::test]
async fn the_transaction_holds_its_lock_until_it_ends() {
    let pool = pool().await;
    let (ns, id) = fresh_key("begin_holds", 1);

    let mut tx = ns.lock(&1_i64).begin(&pool).await.unwrap();
    let pid = backend_pid(&mut tx).await;
    assert_eq!(
        locks_on(&pool, id).await,
        vec![(pid, "ExclusiveLock".to_owned(), true)]
    );
    // A transaction sqlx knows of: a nested `begin` is a savepoint, whose
    // rollback keeps the lock, and the commit ends it.
    let mut savepoint = tx.begin().await.unwrap();
    assert_eq!(backend_pid(&mut savepoint).await, pid);
    savepoint.rollback().await.unwrap();
    assert_eq!(holders(&pool, id).await, vec![pid]);
    tx.commit().await.unwrap();
    assert!(locks_on(&pool, id).await.is_empty());

    let mut tx = ns.lock(&1_i64).shared().begin(&pool).await.unwrap();
    let pid = backend_pid(&mut tx).await;
    assert_eq!(
        locks_on(&pool, id).await,
        vec![(pid, "ShareLock".to_owned(), true)]
    );
    tx.rollback().await.unwrap();
    assert!(locks_on(&pool, id).await.is_empty());

    // Through a family, and ended by a drop.
    static USERS: LockFamily<i64> = LockFamily::named("test:begin:users");
    let user = USERS.namespace().id(&42);
    let tx = USERS.lock(&42).begin(&pool).await.unwrap();
    assert_eq!(holders(&pool, user).await.len(), 1);
    drop(tx);
    until_unlocked(&pool, user).await;
}

#[tokio::test]
async fn a_wait_restores_the_exact_lock_timeout_of_the_session() {
    for setting in ["1min", "0", "2500ms"] {
        let (single, pid) = one_connection_with_lock_timeout(setting).await;
        let observer = pool().await;
        let (ns, id) = fresh_key("begin_restores", 1);
        let holder = hold(&observer, ns, 1).await;

        let request = ns.lock(&1_i64).timeout(Duration::from_secs(30));
        let waiter =
            tokio::spawn(async move { request.begin(&single).await.map(|tx| (tx, single)) });
        assert_eq!(wait_for_waiters(&observer, id, 1).await, vec![pid]);
        waits_in_the_begin_message(&observer, pid).await;
        holder.release().await.unwrap();
        let (mut tx, single) = waiter.await.unwrap().unwrap();

        assert_eq!(
            lock_timeout_in(&mut tx).await,
            setting,
            "inside the transaction"
        );
        assert_eq!(holders(&observer, id).await, vec![pid]);
        tx.commit().await.unwrap();
        back_clean(&single, pid, setting).await;
    }
}

#[tokio::test]
async fn the_cap_ends_a_wait_that_no_setting_would() {
    // No limit of the session's own: only the cap ends this wait.
    let (single, pid) = one_connection_with_lock_timeout("0").await;
    let observer = pool().await;
    let (ns, id) = fresh_key("begin_cap", 1);
    let holder = hold(&observer, ns, 1).await;

    let request = ns.lock(&1_i64).timeout(Duration::from_millis(50));
    let outcome = tokio::time::timeout(Duration::from_secs(20), request.begin(&single))
        .await
        .expect("the cap ended the wait");
    let conflict = expect_conflict(outcome, ConflictCause::LockTimeout);
    assert_eq!(conflict.lock().id(), id);
    assert!(conflict.waited() >= Duration::from_millis(50), "{conflict}");
    assert!(conflict.source().is_some(), "the server's error");
    back_clean(&single, pid, "0").await;
    assert_eq!(holders(&observer, id).await, vec![holder.pid()]);
    holder.release().await.unwrap();
}

#[tokio::test]
async fn a_stricter_setting_of_the_session_is_kept() {
    let (single, pid) = one_connection_with_lock_timeout("20ms").await;
    let observer = pool().await;
    let (ns, _) = fresh_key("begin_stricter", 1);
    let holder = hold(&observer, ns, 1).await;

    // The session's 20 ms, not the request's 60 s, ends the wait.
    let request = ns.lock(&1_i64).timeout(Duration::from_secs(60));
    let outcome = tokio::time::timeout(Duration::from_secs(20), request.begin(&single))
        .await
        .expect("the session's stricter setting ended the wait");
    expect_conflict(outcome, ConflictCause::LockTimeout);
    back_clean(&single, pid, "20ms").await;
    holder.release().await.unwrap();
}

#[tokio::test]
async fn a_busy_lock_not_waited_for_is_busy_and_leaves_the_connection_clean() {
    let (single, pid) = one_connection_with_lock_timeout("1min").await;
    let observer = pool().await;
    let (ns, id) = fresh_key("begin_no_wait", 1);
    let holder = hold(&observer, ns, 1).await;

    match ns.lock(&1_i64).no_wait().begin(&single).await {
        Err(Error::Busy(lock)) => assert_eq!(lock.id(), id),
        other => panic!("expected Error::Busy, got {other:?}"),
    }
    back_clean(&single, pid, "1min").await;
    holder.release().await.unwrap();

    let tx = ns.lock(&1_i64).no_wait().begin(&single).await.unwrap();
    assert_eq!(holders(&observer, id).await, vec![pid]);
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn an_abandoned_wait_is_cancelled_on_the_server() {
    let observer = cancelling_pool().await;
    let single = warm_pool(1).await;
    let (ns, id) = fresh_key("begin_abandoned", 1);
    let holder = hold(&observer, ns, 1).await;

    for attempt in 0..2 {
        // No timeout: only a cancel ends this wait before the holder's end.
        let request = ns.lock(&1_i64);
        let pool = single.clone();
        let waiter = tokio::spawn(async move { request.begin(&pool).await.map(drop) });
        let waiters = wait_for_waiters(&observer, id, 1).await;
        waits_in_the_begin_message(&observer, waiters[0]).await;
        waiter.abort();
        assert!(waiter.await.unwrap_err().is_cancelled());
        let what = format!("attempt {attempt}: the abandoned wait is cancelled");
        until_gone(&observer, id, &waiters, &what).await;
        // The pool's only connection serves again.
        let mut tx = tokio::time::timeout(Duration::from_secs(15), single.begin())
            .await
            .expect("the pool has a connection again")
            .unwrap();
        assert!(!ns.lock(&1_i64).try_acquire(&mut tx).await.unwrap());
        tx.rollback().await.unwrap();
        settled(&single).await;
    }
    assert_eq!(holders(&observer, id).await, vec![holder.pid()]);
    holder.release().await.unwrap();
}

#[tokio::test]
async fn an_abandoned_wait_granted_before_its_cancel_leaves_no_transaction() {
    let observer = cancelling_pool().await;
    let (single, pid) = one_connection_with_lock_timeout("1min").await;
    let (ns, id) = fresh_key("begin_abandoned_granted", 1);
    let holder = hold(&observer, ns, 1).await;

    // No timeout: the message waits until the holder's end.
    let mut waiter = Box::pin(ns.lock(&1_i64).begin(&single));
    let waiters = tokio::select! {
        outcome = &mut waiter => panic!("the lock is held, yet: {outcome:?}"),
        waiters = wait_for_waiters(&observer, id, 1) => waiters,
    };
    assert_eq!(waiters, vec![pid]);
    waits_in_the_begin_message(&observer, pid).await;
    // The holder's end grants the lock to the message, whose `BEGIN` then
    // opens the transaction; the future is not polled to see it, and is
    // dropped: nobody will ever commit or roll back that transaction.
    holder.release().await.unwrap();
    eventually(
        Duration::from_secs(15),
        "the message took the lock",
        || async { holders(&observer, id).await == waiters },
    )
    .await;
    drop(waiter);
    until_gone(
        &observer,
        id,
        &waiters,
        "the abandoned transaction gave its lock back",
    )
    .await;
    back_clean(&single, pid, "1min").await;
}

#[tokio::test]
async fn a_set_is_taken_whole_or_not_at_all() {
    let (single, pid) = one_connection_with_lock_timeout("1min").await;
    let observer = pool().await;
    let ns = namespace("begin_set");
    let ids: Vec<_> = [1_i64, 2, 3].iter().map(|key| ns.id(key)).collect();

    let tx = ns.lock_many([3_i64, 1, 2]).begin(&single).await.unwrap();
    for id in &ids {
        assert_eq!(holders(&observer, *id).await, vec![pid], "{id}");
    }
    tx.commit().await.unwrap();

    let holder = hold(&observer, ns, 2).await;
    match ns.lock_many([1_i64, 2, 3]).no_wait().begin(&single).await {
        Err(Error::Busy(lock)) => assert_eq!(lock.id(), ids[1]),
        other => panic!("expected Error::Busy on key 2, got {other:?}"),
    }
    back_clean(&single, pid, "1min").await;
    assert!(
        locks_on(&observer, ids[0]).await.is_empty(),
        "key 1 given back"
    );

    let request = XactLockSet::new()
        .exclusive(ns, &3_i64)
        .exclusive(ns, &1_i64)
        .exclusive(ns, &2_i64)
        .timeout(Duration::from_secs(30));
    let waiter_pool = single.clone();
    let waiter = tokio::spawn(async move { request.begin(&waiter_pool).await });
    assert_eq!(wait_for_waiters(&observer, ids[1], 1).await, vec![pid]);
    holder.release().await.unwrap();
    let mut tx = waiter.await.unwrap().unwrap();
    for id in &ids {
        assert_eq!(holders(&observer, *id).await, vec![pid], "{id}");
    }
    assert_eq!(lock_timeout_in(&mut tx).await, "1min");
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn a_hot_standby_is_refused_and_left_clean() {
    let (primary, standby) = primary_and_standby();
    let pool = pool_on(&standby, 1).await;
    let ns = namespace("begin_standby");
    let mut conn = pool.acquire().await.unwrap();
    let pid = backend_pid(&mut conn).await;
    drop(conn);

    // Key 3 found busy once (on the primary: the same id): its next
    // acquisitions send the message that tries and waits.
    let primary_pool = pool_on(&primary, 2).await;
    find_busy_once(&primary_pool, ns, 3).await;
    let refusals = [
        ns.lock(&3_i64)
            .timeout(Duration::from_secs(1))
            .begin(&pool)
            .await
            .map(drop),
        ns.lock(&3_i64).begin(&pool).await.map(drop),
        ns.lock(&1_i64).begin(&pool).await.map(drop),
        ns.lock(&1_i64)
            .timeout(Duration::from_secs(1))
            .begin(&pool)
            .await
            .map(drop),
        ns.lock(&1_i64).no_wait().begin(&pool).await.map(drop),
        ns.lock_many([1_i64, 2]).begin(&pool).await.map(drop),
        ns.lock(&1_i64)
            .run(&pool, |_| Box::pin(async { Ok::<_, Error>(()) }))
            .await,
    ];
    for (index, refusal) in refusals.into_iter().enumerate() {
        assert!(
            matches!(refusal, Err(Error::Standby)),
            "{index}: {refusal:?}"
        );
    }
    back_clean(&pool, pid, "0").await;
}

#[tokio::test]
async fn a_set_of_pairs_and_ids_in_two_namespaces_keeps_each_mode() {
    // A label that would end the marker's comment and inject a statement,
    // were it written into the message as given (a raw namespace's label is
    // not refused at compile time: it is sanitised).
    static PAIRS: pglock::Namespace =
        pglock::Namespace::raw_pair(0x7465_7374, "begin:pairs */ SELECT 1/0; -- '");
    let (single, pid) = one_connection_with_lock_timeout("1min").await;
    let observer = pool().await;
    let ids = namespace("begin_mixed_set");
    let set = || {
        XactLockSet::new()
            .exclusive(&PAIRS, &5_i64)
            .shared(&PAIRS, &-3_i64)
            .shared(ids, &2_i64)
            .exclusive(ids, &1_i64)
    };
    let expected = [
        (PAIRS.id(&5_i64), "ExclusiveLock"),
        (PAIRS.id(&-3_i64), "ShareLock"),
        (ids.id(&2_i64), "ShareLock"),
        (ids.id(&1_i64), "ExclusiveLock"),
    ];

    // A shared holder of a shared key does not stand in the way.
    let sharer = pglock::testing::hold_lock(&observer, &PAIRS, &-3_i64, pglock::Mode::Shared)
        .await
        .unwrap();
    let tx = set().begin(&single).await.unwrap();
    for (id, mode) in expected {
        let mine: Vec<_> = locks_on(&observer, id)
            .await
            .into_iter()
            .filter(|(holder, _, _)| *holder == pid)
            .collect();
        assert_eq!(mine, vec![(pid, mode.to_owned(), true)], "{id}");
    }
    tx.commit().await.unwrap();
    sharer.release().await.unwrap();

    // A busy pair key is told by its id; nothing of the set is kept.
    let holder = pglock::testing::hold_lock(&observer, &PAIRS, &5_i64, pglock::Mode::Exclusive)
        .await
        .unwrap();
    match set().no_wait().begin(&single).await {
        Err(Error::Busy(lock)) => assert_eq!(lock.id(), PAIRS.id(&5_i64)),
        other => panic!("expected Error::Busy on the pair key 5, got {other:?}"),
    }
    back_clean(&single, pid, "1min").await;
    holder.release().await.unwrap();
}

#[tokio::test]
async fn a_statement_timeout_of_the_session_ends_the_wait_as_a_typed_conflict() {
    let (single, pid) = one_connection_with_lock_timeout("0").await;
    let mut conn = single.acquire().await.unwrap();
    sqlx::raw_sql("SET statement_timeout = '30ms'")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    settled(&single).await;
    let observer = pool().await;
    let (ns, id) = fresh_key("begin_statement_timeout", 1);
    let holder = hold(&observer, ns, 1).await;

    // Found free lately (the message that tries, then the one that waits),
    // then found busy lately (the one message that tries and waits).
    for attempt in 0..2 {
        let request = ns.lock(&1_i64).timeout(Duration::from_secs(60));
        let outcome = tokio::time::timeout(Duration::from_secs(20), request.begin(&single))
            .await
            .expect("the session's statement_timeout ended the wait");
        let conflict = expect_conflict(outcome, ConflictCause::StatementTimeoutOrCancel);
        assert_eq!(conflict.lock().id(), id, "attempt {attempt}");
        back_clean(&single, pid, "0").await;
    }
    assert_eq!(holders(&observer, id).await, vec![holder.pid()]);
    holder.release().await.unwrap();
}

#[tokio::test]
async fn a_lock_freed_between_the_try_and_the_wait_is_taken_by_the_second_message() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let observer = pool().await;
    let (ns, id) = fresh_key("begin_freed_between", 1);
    let holder = Arc::new(tokio::sync::Mutex::new(Some(hold(&observer, ns, 1).await)));
    // The times the pool hands out its idle connection, and the one at which
    // the holder gives the lock back first.
    let (handed_out, release_at) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (freeing, counted, at) = (holder.clone(), handed_out.clone(), release_at.clone());
    let single = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::raw_sql("SET lock_timeout = '1min'")
                    .execute(conn)
                    .await
                    .map(drop)
            })
        })
        .before_acquire(move |_, _| {
            let (freeing, counted, at) = (freeing.clone(), counted.clone(), at.clone());
            Box::pin(async move {
                let time = counted.fetch_add(1, Ordering::SeqCst) + 1;
                if time == at.load(Ordering::SeqCst) {
                    let holder = freeing.lock().await.take().expect("still held");
                    holder.release().await.unwrap();
                }
                Ok(true)
            })
        })
        .connect_with((*observer.connect_options()).clone())
        .await
        .unwrap();
    let mut conn = single.acquire().await.unwrap();
    let pid = backend_pid(&mut conn).await;
    drop(conn);
    settled(&single).await;

    // The first message (the try) finds the lock busy; the holder gives it
    // back when the pool hands the connection out for the second one, the
    // message that tries and waits, which takes it at once.
    let before = handed_out.load(Ordering::SeqCst);
    release_at.store(before + 2, Ordering::SeqCst);
    let mut tx = ns
        .lock(&1_i64)
        .timeout(Duration::from_secs(30))
        .begin(&single)
        .await
        .unwrap();
    assert_eq!(
        handed_out.load(Ordering::SeqCst),
        before + 2,
        "two messages"
    );
    assert!(holder.lock().await.is_none(), "freed in between");
    assert_eq!(backend_pid(&mut tx).await, pid);
    assert_eq!(holders(&observer, id).await, vec![pid]);
    assert_eq!(lock_timeout_in(&mut tx).await, "1min");
    tx.commit().await.unwrap();
    back_clean(&single, pid, "1min").await;
}
