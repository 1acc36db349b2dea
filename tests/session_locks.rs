//! Session locks that own their connection, leases, and the pool helper.

mod support;

use std::time::Duration;

use pglock::{CheckOptions, ConflictCause, Error, Mode, SessionTry};
use sqlx::Connection;
use support::*;

#[tokio::test]
async fn a_session_lock_is_held_exactly_while_its_guard_lives_despite_pool_traffic() {
    let pool = pool().await;
    let ns = namespace("pooled_session_lock");
    let id = ns.id(&"integrity-hash-retry");
    let mut guard = take_session_lock(&pool, ns.session_lock(&"integrity-hash-retry")).await;
    let guard_pid = backend_pid(guard.connection()).await;

    // The job's work runs through the pool, on other connections.
    let mut workers = Vec::new();
    for _ in 0..8 {
        let pool = pool.clone();
        workers.push(tokio::spawn(async move {
            for _ in 0..25 {
                sqlx::query("SELECT pg_sleep(0.001)")
                    .execute(&pool)
                    .await
                    .unwrap();
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(
        holders(&pool, id).await,
        vec![guard_pid],
        "held by the guard's connection"
    );

    let mut connection = guard.release().await.unwrap();
    assert!(
        holders(&pool, id).await.is_empty(),
        "no backend holds it after release"
    );
    assert_eq!(
        backend_pid(&mut connection).await,
        guard_pid,
        "the same connection comes back"
    );
}

#[tokio::test]
async fn a_guard_dropped_without_release_frees_the_lock_and_the_pool_keeps_serving() {
    let pool = pool().await;
    let (ns, id) = fresh_key("dropped_guard", 1);
    let guard = take_session_lock(&pool, ns.session_lock(&1_i64)).await;
    assert_eq!(holders(&pool, id).await.len(), 1);
    drop(guard);
    until_unlocked(&pool, id).await;
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(one, 1);
}

#[tokio::test]
async fn a_cancelled_acquisition_leaves_no_waiter_and_no_lock_behind() {
    let pool = pool().await;
    let (ns, id) = fresh_key("cancelled_acquire", 1);
    let holder = take_session_lock(&pool, ns.session_lock(&1_i64)).await;

    let waiter_pool = pool.clone();
    let waiter = tokio::spawn(async move {
        let conn = waiter_pool.acquire().await.unwrap();
        ns.session_lock(&1_i64).acquire(conn).await
    });
    let waiters = wait_for_waiters(&pool, id, 1).await;
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());

    // The server notices the closed connection and abandons the wait.
    until_gone(&pool, id, &waiters, "the abandoned wait leaves").await;
    holder.release().await.unwrap();
    until_unlocked(&pool, id).await;
}

#[tokio::test]
async fn a_panicking_holder_leaves_no_lock_behind() {
    let pool = pool().await;
    let (ns, id) = fresh_key("panicking_holder", 1);
    let task_pool = pool.clone();
    let task = tokio::spawn(async move {
        let _guard = ns
            .session_lock(&1_i64)
            .acquire(task_pool.acquire().await.unwrap())
            .await
            .unwrap();
        panic!("the job failed while holding its lock");
    });
    assert!(task.await.unwrap_err().is_panic());
    until_unlocked(&pool, id).await;
    ns.session_lock(&1_i64)
        .no_wait()
        .acquire(pool.acquire().await.unwrap())
        .await
        .expect("free again")
        .release()
        .await
        .unwrap();
}

#[tokio::test]
async fn session_locks_exclude_wait_time_out_and_give_busy_connections_back() {
    let pool = pool().await;
    let ns = namespace("session_modes");
    let holder = take_session_lock(&pool, ns.session_lock(&1_i64).shared()).await;
    let second_reader = ns
        .session_lock(&1_i64)
        .shared()
        .no_wait()
        .acquire(pool.acquire().await.unwrap())
        .await
        .expect("shared holders coexist");

    match ns
        .session_lock(&1_i64)
        .try_acquire(pool.acquire().await.unwrap())
        .await
        .unwrap()
    {
        SessionTry::Busy(mut conn) => {
            let pid = backend_pid(&mut conn).await;
            assert!(!holders(&pool, ns.id(&1_i64)).await.contains(&pid));
        }
        SessionTry::Acquired(_) => panic!("an exclusive lock can't join shared holders"),
    }
    let error = ns
        .session_lock(&1_i64)
        .no_wait()
        .acquire(pool.acquire().await.unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Busy(ref lock) if lock.mode() == Mode::Exclusive
        ),
        "{error:?}"
    );

    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SET lock_timeout = '1min'")
        .execute(&mut *conn)
        .await
        .unwrap();
    let error = ns
        .session_lock(&1_i64)
        .timeout(Duration::from_millis(100))
        .acquire(conn)
        .await
        .unwrap_err();
    assert_eq!(
        error.as_conflict().unwrap().cause(),
        ConflictCause::LockTimeout
    );

    holder.release().await.unwrap();
    second_reader.release().await.unwrap();
}

#[tokio::test]
async fn a_capped_session_wait_restores_the_session_settings() {
    let pool = pool().await;
    let (ns, id) = fresh_key("session_restore", 1);
    let holder = hold_until_awaited(&pool, id).await;
    let mut conn = pool.acquire().await.unwrap().detach();
    sqlx::query("SET lock_timeout = '10s'")
        .execute(&mut conn)
        .await
        .unwrap();
    let mut guard = ns
        .session_lock(&1_i64)
        .timeout(Duration::from_secs(5))
        .acquire(conn)
        .await
        .unwrap();
    holder.await.unwrap();
    assert_eq!(lock_timeout(guard.connection()).await, "10s");
    let check: String =
        sqlx::query_scalar("SELECT current_setting('client_connection_check_interval')")
            .fetch_one(guard.connection())
            .await
            .unwrap();
    assert_eq!(check, "0");
    guard.release().await.unwrap();
}

#[tokio::test]
async fn a_terminated_backend_is_reported_as_a_lost_lease_and_a_waiter_takes_over() {
    let pool = pool().await;
    let ns = namespace("lease_terminated");
    let id = ns.id(&"leader");
    let options = CheckOptions::default()
        .check_every(Duration::from_millis(100))
        .check_timeout(Duration::from_secs(2));
    let mut lease = ns
        .session_lock(&"leader")
        .acquire_lease(pool.acquire().await.unwrap(), options)
        .await
        .unwrap();
    let leader_pid = holders(&pool, id).await[0];
    assert!(lease.is_held());

    let follower_pool = pool.clone();
    let follower = tokio::spawn(async move {
        ns.session_lock(&"leader")
            .acquire_lease(follower_pool.acquire().await.unwrap(), options)
            .await
    });
    wait_for_waiters(&pool, id, 1).await;

    terminate_backend(&pool, leader_pid).await;

    let lost = tokio::time::timeout(options.detection_bound() * 3, lease.lost())
        .await
        .expect("the loss is reported within the bound");
    assert_eq!(lost.lock().id(), id);
    assert!(!lease.is_held());
    assert!(matches!(lease.release().await, Err(Error::LockLost(_))));

    let follower_lease = follower.await.unwrap().expect("the follower takes over");
    let new_holders = holders(&pool, id).await;
    assert_eq!(new_holders.len(), 1);
    assert_ne!(new_holders[0], leader_pid);
    follower_lease.release().await.unwrap();
    assert!(holders(&pool, id).await.is_empty());
}

#[tokio::test]
async fn the_pool_helper_commits_on_success_and_rolls_back_on_error_or_panic() {
    let pool = pool().await;
    let ns = namespace("pool_helper");
    let table = fresh_table(&pool, "pool_helper", "v text").await;
    let insert = format!("INSERT INTO {table} VALUES ($1)");
    let id = ns.id(&1_i64);

    let observer = pool.clone();
    let insert_committed = insert.clone();
    let pid = ns
        .lock(&1_i64)
        .run(&pool, |tx| {
            Box::pin(async move {
                sqlx::query(sqlx::AssertSqlSafe(insert_committed))
                    .bind("committed")
                    .execute(&mut **tx)
                    .await?;
                let pid = backend_pid(tx).await;
                assert_eq!(
                    holders(&observer, id).await,
                    vec![pid],
                    "the lock is held while the work runs"
                );
                Ok::<_, Error>(pid)
            })
        })
        .await
        .unwrap();
    assert!(
        !holders(&pool, id).await.contains(&pid),
        "the lock ended with the commit"
    );

    let insert_failed = insert.clone();
    let failed: Result<(), Error> = ns
        .lock(&1_i64)
        .run(&pool, |tx| {
            Box::pin(async move {
                sqlx::query(sqlx::AssertSqlSafe(insert_failed))
                    .bind("failed")
                    .execute(&mut **tx)
                    .await?;
                Err(Error::Standby)
            })
        })
        .await;
    assert!(matches!(failed, Err(Error::Standby)));

    let pool_for_panic = pool.clone();
    let insert_for_panic = insert;
    let panicked = tokio::spawn(async move {
        ns.lock(&1_i64)
            .run(&pool_for_panic, |tx| {
                Box::pin(async move {
                    sqlx::query(sqlx::AssertSqlSafe(insert_for_panic))
                        .bind("panicked")
                        .execute(&mut **tx)
                        .await?;
                    if tx.is_in_transaction() {
                        panic!("the work panicked");
                    }
                    Ok::<(), Error>(())
                })
            })
            .await
    })
    .await;
    assert!(panicked.unwrap_err().is_panic());
    assert!(
        holders(&pool, id).await.is_empty(),
        "rolled back before the panic went on"
    );

    let rows: Vec<String> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT v FROM {table}")))
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows, vec!["committed".to_owned()]);
}

#[tokio::test]
async fn inspection_shows_a_holder_and_two_waiters_decoded() {
    let pool = pool().await;
    let (ns, id) = fresh_key("inspect", 77);
    let mut holder = pool.begin().await.unwrap();
    ns.lock(&77_i64)
        .shared()
        .acquire(&mut holder)
        .await
        .unwrap();
    let holder_pid = backend_pid(&mut holder).await;

    let mut waiters = Vec::new();
    for mode in [Mode::Exclusive, Mode::Exclusive] {
        let waiter_pool = pool.clone();
        waiters.push(tokio::spawn(async move {
            let mut tx = waiter_pool.begin().await.unwrap();
            ns.lock(&77_i64)
                .with_mode(mode)
                .timeout(Duration::from_secs(30))
                .acquire(&mut tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }));
        // One at a time, so the second waits behind the first.
        wait_for_waiters(&pool, id, waiters.len()).await;
    }

    let inspection = pglock::inspect(&pool).await.unwrap();
    let rows: Vec<_> = inspection
        .locks()
        .iter()
        .filter(|lock| lock.id() == id)
        .collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows[0].granted());
    assert_eq!(rows[0].pid(), holder_pid);
    assert_eq!(rows[0].mode(), Some(Mode::Shared));
    assert_eq!(
        rows[0].namespace(),
        Some(ns.label()),
        "a holder gets its waiters' namespace"
    );
    let first_waiter = rows[1].pid();
    for waiter in &rows[1..] {
        assert!(!waiter.granted());
        assert_eq!(waiter.mode(), Some(Mode::Exclusive));
        assert_eq!(waiter.namespace(), Some(ns.label()));
        assert!(waiter.waited().is_some());
        assert!(waiter.blocked_by().contains(&holder_pid), "{waiter:?}");
    }
    assert!(
        rows[2].blocked_by().contains(&first_waiter),
        "queued behind the first waiter"
    );
    assert!(inspection.queries_visible());

    holder.commit().await.unwrap();
    for waiter in waiters {
        waiter.await.unwrap();
    }
}

#[tokio::test]
async fn inspection_works_without_superuser_and_says_what_it_cannot_see() {
    let pool = pool().await;
    let ns = namespace("inspect_unprivileged");
    let role = format!("inspector_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {role} LOGIN")))
        .execute(&pool)
        .await
        .unwrap();
    let id = ns.id(&1_i64);
    let mut holder = pool.begin().await.unwrap();
    ns.lock(&1_i64).acquire(&mut holder).await.unwrap();
    let waiter_pool = pool.clone();
    let waiter = tokio::spawn(async move {
        let mut tx = waiter_pool.begin().await.unwrap();
        ns.lock(&1_i64).acquire(&mut tx).await.unwrap();
    });
    wait_for_waiters(&pool, id, 1).await;

    let mut unprivileged = pool.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("SET LOCAL ROLE {role}")))
        .execute(&mut *unprivileged)
        .await
        .unwrap();
    let inspection = pglock::inspect(&mut *unprivileged).await.unwrap();
    assert!(!inspection.queries_visible());
    let rows: Vec<_> = inspection
        .locks()
        .iter()
        .filter(|lock| lock.id() == id)
        .collect();
    assert_eq!(
        rows.len(),
        2,
        "locks are listed even when queries are hidden"
    );
    assert!(rows.iter().all(|lock| lock.namespace().is_none()));
    unprivileged.rollback().await.unwrap();

    holder.commit().await.unwrap();
    waiter.await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE {role}")))
        .execute(&pool)
        .await
        .unwrap();
}
