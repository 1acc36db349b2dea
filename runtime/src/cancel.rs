//! Cancelling the server-side wait of an abandoned acquisition.
//!
//! When the future of a transaction-scoped acquisition is dropped while it
//! waits (a `select!` that took another branch, an aborted task, a request
//! timeout), the server goes on waiting. The connection stays behind that
//! wait: sqlx's pool checks a returned connection before reusing it, and the
//! check waits for the server, so the connection is out of service, and its
//! backend keeps its place in the lock's queue (where it blocks later shared
//! requests if it asked for an exclusive lock), until the lock is granted.
//! With no timeout that may be never.
//!
//! A session lock's connection belongs to the acquisition and is closed with
//! it; its wait statement makes the server notice that within a second. A
//! transaction's connection belongs to the caller, so the wait can only be
//! ended from outside: by `pg_cancel_backend` on another connection, which
//! pglock opens with the options of a pool registered with
//! [`cancel_abandoned_waits`].
//!
//! The cancelled wait fails like any statement, so the abandoned transaction
//! is aborted (even a savepoint wait's: nobody is left to roll back to the
//! savepoint); when it is dropped it rolls back, and its connection goes back
//! into service or, if the pool's check finds it unusable, is replaced.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::LockId;

/// Where to open the connection that cancels: the registered pools'
/// options. A connection of its own, not one of the pool's: the pool may be
/// saturated by the very waits being abandoned, and a connection opened by
/// the cancel's runtime must not be handed to the pool's other users.
static SERVERS: Mutex<Vec<Arc<PgConnectOptions>>> = Mutex::new(Vec::new());

/// Lets pglock cancel the server-side wait of an acquisition whose future
/// was dropped, on a connection it opens with `pool`'s options. Call it once per pool at
/// start-up; without it, an abandoned wait keeps its connection until the
/// lock is granted or the wait times out (and a warning says so).
///
/// The cancel is aimed precisely: only the backend that the abandoned
/// acquisition ran on, and only while it still waits for that lock.
///
/// ```no_run
/// # async fn run() -> Result<(), sqlx::Error> {
/// let pool = sqlx::PgPool::connect("postgres://localhost/app").await?;
/// pglock_runtime::cancel_abandoned_waits(&pool);
/// # Ok(()) }
/// ```
pub fn cancel_abandoned_waits(pool: &PgPool) {
    // One pool per server and role is enough; pools made again and again
    // (per test, say) must not pile up.
    let options = pool.connect_options();
    let url = options.to_url_lossy();
    let mut servers = SERVERS.lock().unwrap_or_else(PoisonError::into_inner);
    servers.retain(|known| known.to_url_lossy() != url);
    servers.push(options);
}

/// Armed while a transaction-scoped wait is in flight; if the future is
/// dropped before the wait returns, the drop cancels the wait.
pub(crate) struct AbandonGuard<'a> {
    pub(crate) pid: i32,
    pub(crate) id: LockId,
    pub(crate) namespace: &'a str,
    pub(crate) armed: bool,
}

impl Drop for AbandonGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let servers = SERVERS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let runtime = tokio::runtime::Handle::try_current();
        match (servers.is_empty(), runtime) {
            (false, Ok(runtime)) => {
                tracing::info!(
                    target: "pglock",
                    namespace = self.namespace,
                    key = %self.id,
                    pid = self.pid,
                    "lock acquisition abandoned while waiting; cancelling the server-side wait"
                );
                runtime.spawn(cancel_wait(servers, self.pid, self.id));
            }
            _ => tracing::warn!(
                target: "pglock",
                namespace = self.namespace,
                key = %self.id,
                pid = self.pid,
                "lock acquisition abandoned while waiting; its connection stays behind the \
                 server-side wait until the lock is granted or times out \
                 (register the pool with pglock::cancel_abandoned_waits to cancel such waits)"
            ),
        }
    }
}

/// Cancels `pid` if, at this instant, it waits for `id`: the check and the
/// cancel are one statement, so a backend that got its lock and went on to
/// other work is never cancelled.
const CANCEL_IF_WAITING: &str = "SELECT pg_catalog.pg_cancel_backend(l.pid) \
     FROM pg_catalog.pg_locks l \
     WHERE l.pid = $1 AND l.locktype = 'advisory' AND NOT l.granted \
       AND CASE WHEN $2::int8 IS NOT NULL \
                THEN l.objsubid = 1 AND ((l.classid::int8 << 32) | l.objid::int8) = $2::int8 \
                ELSE l.objsubid = 2 AND l.classid::int8 = ($3::int8 & 4294967295) \
                     AND l.objid::int8 = ($4::int8 & 4294967295) END";

/// Whether `pid` still runs one of pglock's statements: the abandoned wait
/// may not have reached the server yet.
const STILL_BUSY: &str = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity \
     WHERE pid = $1 AND state = 'active' AND starts_with(query, '/* pglock '))";

async fn cancel_wait(servers: Vec<Arc<PgConnectOptions>>, pid: i32, id: LockId) {
    let (bigint, class, object) = match id {
        LockId::BigInt(id) => (Some(id), None, None),
        LockId::Pair(class, object) => (None, Some(i64::from(class)), Some(i64::from(object))),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    for server in servers {
        let mut conn = match server.connect().await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(target: "pglock", pid, %error, "could not connect to cancel an abandoned lock wait");
                continue;
            }
        };
        loop {
            let cancelled: Result<Vec<bool>, sqlx::Error> = sqlx::query_scalar(CANCEL_IF_WAITING)
                .bind(pid)
                .bind(bigint)
                .bind(class)
                .bind(object)
                .fetch_all(&mut conn)
                .await;
            let busy = match cancelled {
                Ok(cancelled) if !cancelled.is_empty() => {
                    let _ = conn.close().await;
                    return;
                }
                Ok(_) => {
                    sqlx::query_scalar::<_, bool>(STILL_BUSY)
                        .bind(pid)
                        .fetch_one(&mut conn)
                        .await
                }
                Err(error) => Err(error),
            };
            match busy {
                Ok(true) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                // Not (or no longer) waiting on this server.
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(target: "pglock", pid, %error, "could not cancel an abandoned lock wait");
                    break;
                }
            }
        }
        let _ = conn.close().await;
    }
}
