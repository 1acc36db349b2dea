//! The lock manager's light connection: a lone acquisition goes to the
//! connection that holds the fewest locks, where its statements' ends walk
//! the fewest. Which backend holds what is read from `pg_locks`.

mod support;

use std::sync::Arc;

use pglock::{LockManager, ManagedGuard, ManagerOptions, Namespace, pg_locks};
use sqlx::postgres::PgPool;
use support::*;

fn manager(max_connections: usize) -> Arc<LockManager> {
    Arc::new(LockManager::new(
        connect_options(),
        ManagerOptions::default().max_connections(max_connections),
    ))
}

/// The advisory locks of `ns`'s keys `keys` granted to `pid`.
async fn held_by(pool: &PgPool, pid: i32, ns: &Namespace, keys: std::ops::Range<i64>) -> i64 {
    let ids: Vec<i64> = keys
        .map(|key| ns.id(&key).bigint().expect("a bigint namespace"))
        .collect();
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM pg_locks l JOIN unnest($1::int8[]) AS k(id) \
         ON {} = k.id AND l.objsubid = 1 \
         WHERE l.locktype = 'advisory' AND l.granted AND l.pid = $2",
        pg_locks::ENCODED
    )))
    .bind(ids)
    .bind(pid)
    .fetch_one(pool)
    .await
    .expect("read pg_locks")
}

/// One connection holding `heavy` locks (keys `0..heavy`), and a second
/// one, opened for a wait, holding the one lock it waited for (key
/// `heavy`): returns the guards and the two backends' pids.
async fn heavy_and_light(
    pool: &PgPool,
    manager: &Arc<LockManager>,
    ns: &'static Namespace,
    heavy: i64,
) -> (Vec<ManagedGuard>, i32, i32) {
    let mut guards = Vec::new();
    // One at a time: each is a lone try, and there is one connection.
    for key in 0..heavy {
        guards.push(manager.lock(ns, &key).acquire().await.expect("a free key"));
    }
    let heavy_pid = holders(pool, ns.id(&0_i64)).await[0];
    assert_eq!(held_by(pool, heavy_pid, ns, 0..heavy).await, heavy);
    // A wait goes to a connection that holds nothing: a second one opens.
    let holder = hold(pool, ns, heavy).await;
    let waiting = spawn_managed_acquire(manager, ns, heavy, None);
    let light_pid = wait_for_waiters(pool, ns.id(&heavy), 1).await[0];
    assert_ne!(light_pid, heavy_pid);
    holder.release().await.expect("release the outside holder");
    guards.push(waiting.await.expect("the wait").expect("granted"));
    assert_eq!(holders(pool, ns.id(&heavy)).await, vec![light_pid]);
    (guards, heavy_pid, light_pid)
}

#[tokio::test]
async fn a_lone_lock_goes_to_the_connection_that_holds_the_fewest() {
    let pool = pool().await;
    let ns = namespace("manager:light:lone");
    let manager = manager(4);
    let heavy = 40;
    let (guards, heavy_pid, light_pid) = heavy_and_light(&pool, &manager, ns, heavy).await;
    assert_eq!(manager.connections(), 2);

    // Nothing is in flight: the lone acquisition lands on the connection
    // that holds one lock, not on the one that holds forty.
    let lone = heavy + 1;
    for _ in 0..3 {
        let guard = manager.lock(ns, &lone).acquire().await.expect("a free key");
        assert_eq!(holders(&pool, ns.id(&lone)).await, vec![light_pid]);
        guard.release().await.expect("released");
        assert!(holders(&pool, ns.id(&lone)).await.is_empty());
    }
    assert_eq!(held_by(&pool, heavy_pid, ns, 0..heavy).await, heavy);
    assert_eq!(held_by(&pool, light_pid, ns, heavy..heavy + 1).await, 1);
    assert_eq!(manager.connections(), 2, "no connection opened for it");
    for guard in guards {
        guard.release().await.expect("released");
    }
    manager.close().await;
}

#[tokio::test]
async fn the_light_connection_still_excludes_and_the_heavy_one_serves_its_own_lock() {
    let pool = pool().await;
    let ns = namespace("manager:light:exclusion");
    let manager = manager(4);
    let heavy = 10;
    let (guards, heavy_pid, light_pid) = heavy_and_light(&pool, &manager, ns, heavy).await;

    // A key held on the heavy connection is busy to the manager's own
    // request, which goes nowhere the server would grant it again.
    assert!(
        manager
            .lock(ns, &0_i64)
            .try_acquire()
            .await
            .expect("a try")
            .is_none()
    );
    assert_eq!(holders(&pool, ns.id(&0_i64)).await, vec![heavy_pid]);

    // The lone lock on the light connection excludes another session.
    let lone = heavy + 1;
    let guard = manager.lock(ns, &lone).acquire().await.expect("a free key");
    assert_eq!(holders(&pool, ns.id(&lone)).await, vec![light_pid]);
    let mut other = pool.acquire().await.expect("a connection");
    let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(ns.id(&lone).bigint().expect("a bigint namespace"))
        .fetch_one(&mut *other)
        .await
        .expect("a try");
    assert!(!taken, "the lone lock is held");
    guard.release().await.expect("released");
    for guard in guards {
        guard.release().await.expect("released");
    }
    manager.close().await;
}
