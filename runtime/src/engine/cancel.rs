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
//! The cancel finds the waiting backend by its pid when an earlier statement
//! of the acquisition returned it (a try that found the lock busy), and
//! otherwise by the wait's ticket: a shared lock on a number of this
//! process's, which the statement that tries and waits at once takes just
//! before it waits (sqlx keeps the pid it learns at connect time to itself,
//! and asking for it would cost the round trip that statement saves).
//!
//! The cancelled wait fails like any statement, so the abandoned transaction
//! is aborted (even a savepoint wait's: nobody is left to roll back to the
//! savepoint); when it is dropped it rolls back, and its connection goes back
//! into service or, if the pool's check finds it unusable, is replaced.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection};
use sqlx::query::QueryScalar;
use sqlx::{ConnectOptions, Connection, PgPool, Postgres};

use crate::contract::id::LockId;
use crate::engine::events;
use crate::identity::LockIdentity;
use crate::sql::{marker, pg_locks};

/// Where to open the connection that cancels: the registered pools'
/// options. A connection of its own, not one of the pool's: the pool may be
/// saturated by the very waits being abandoned, and a connection opened by
/// the cancel's runtime must not be handed to the pool's other users.
static SERVERS: Mutex<Vec<Arc<PgConnectOptions>>> = Mutex::new(Vec::new());

/// Whether this process has warned that an abandoned wait found no
/// registered pool: the fix is one call at start-up, so it is said once.
static WARNED_UNREGISTERED: AtomicBool = AtomicBool::new(false);

/// Lets pglock cancel the server-side wait of an acquisition whose future
/// was dropped, on a connection it opens with `pool`'s options. Call it once
/// per pool at start-up; without it, an abandoned wait keeps its connection
/// until the lock is granted or the wait times out (and the first one in the
/// process says so in a warning).
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

/// How the cancel finds the backend of an abandoned wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitingBackend {
    /// Its pid, returned by an earlier statement of the acquisition.
    Pid(i32),
    /// The number of the ticket its statement takes before it waits
    /// ([`pg_locks::ticket`]).
    Ticket(u32),
}

/// The number of a new wait ticket: one no other wait of this process holds
/// (until 2^32 more waits have begun), and that another process holds with
/// a chance of one in 2^32, as the numbers start at a random point of each
/// process.
pub(crate) fn new_ticket() -> u32 {
    static FIRST: LazyLock<u32> =
        LazyLock::new(|| RandomState::new().hash_one(std::process::id()) as u32);
    static NEXT: AtomicU32 = AtomicU32::new(0);
    FIRST.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
}

impl WaitingBackend {
    /// Binds what finds the backend: the pid, or the ticket's id.
    fn bind<'q, O>(
        self,
        query: QueryScalar<'q, Postgres, O, PgArguments>,
    ) -> QueryScalar<'q, Postgres, O, PgArguments> {
        match self {
            WaitingBackend::Pid(pid) => query.bind(pid),
            WaitingBackend::Ticket(number) => {
                query.bind(pg_locks::encode(pg_locks::ticket(number)).0)
            }
        }
    }

    /// The pid, when it is known.
    fn pid(self) -> Option<i32> {
        match self {
            WaitingBackend::Pid(pid) => Some(pid),
            WaitingBackend::Ticket(_) => None,
        }
    }
}

/// Armed while a transaction-scoped wait is in flight; if the future is
/// dropped before the wait returns, the drop cancels the wait.
pub(crate) struct AbandonGuard<'a> {
    pub(crate) backend: WaitingBackend,
    pub(crate) lock: &'a LockIdentity,
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
            (true, _) => {
                let first = !WARNED_UNREGISTERED.swap(true, Ordering::Relaxed);
                events::wait_abandoned_unregistered(self.lock, self.backend.pid(), first);
            }
            (false, Ok(runtime)) => {
                events::wait_abandoned(self.lock, self.backend.pid());
                runtime.spawn(cancel_wait(servers, self.backend, self.lock.id()));
            }
            (false, Err(_)) => {
                events::wait_abandoned_without_runtime(self.lock, self.backend.pid());
            }
        }
    }
}

/// Cancels the abandoned wait from a connection of its own. Each round of
/// statements runs in a transaction: through a transaction pooler
/// (PgBouncer in transaction mode) a statement outside one may be prepared
/// on one backend and run on another, where it does not exist.
async fn cancel_wait(servers: Vec<Arc<PgConnectOptions>>, backend: WaitingBackend, id: LockId) {
    let (encoded, objsubid) = pg_locks::encode(id);
    let deadline = Instant::now() + Duration::from_secs(5);
    for server in servers {
        let mut conn = match server.connect().await {
            Ok(conn) => conn,
            Err(error) => {
                events::cancel_connect_failed(backend.pid(), &error);
                continue;
            }
        };
        let outcome = match backend {
            WaitingBackend::Pid(pid) => {
                cancel_by_pid(&mut conn, pid, encoded, objsubid, deadline).await
            }
            WaitingBackend::Ticket(_) => {
                cancel_by_ticket(&mut conn, backend, encoded, objsubid, deadline).await
            }
        };
        match outcome {
            Ok(true) => {
                let _ = conn.close().await;
                return;
            }
            Ok(false) => {}
            Err(error) => events::cancel_failed(backend.pid(), &error),
        }
        let _ = conn.close().await;
    }
}

/// Cancels the statement backend `pid` runs while it waits for the lock;
/// `Ok(true)` once that statement is over, `Ok(false)` when it ran nothing
/// of pglock's here. The cancel is repeated while the same statement (told
/// by its start) runs on: a statement that loops over several waits (a
/// semaphore's) may see a cancel that arrives as one of its own lock
/// timeouts fires reported as that timeout, and go on waiting. Each repeat
/// is aimed at that statement only (the check of its start and the cancel
/// are one statement): the backend, given back to its owner, may already
/// run the next one, waiting for the same lock.
async fn cancel_by_pid(
    conn: &mut PgConnection,
    pid: i32,
    encoded: i64,
    objsubid: i16,
    deadline: Instant,
) -> Result<bool, sqlx::Error> {
    let mut statement: Option<String> = None;
    loop {
        // Once the abandoned statement is known, only it is cancelled: the
        // backend's next statement may wait for the same lock. In a
        // transaction: see `cancel_wait`.
        let mut tx = conn.begin().await?;
        let cancelled: Option<(Option<String>, bool)> = sqlx::query_as(pg_locks::CANCEL_IF_WAITING)
            .bind(encoded)
            .bind(objsubid)
            .bind(pid)
            .bind(statement.as_deref())
            .fetch_optional(&mut *tx)
            .await?;
        if statement.is_none() {
            statement = cancelled.and_then(|(started, _)| started);
        }
        let running: Option<String> = sqlx::query_scalar(marker::RUNNING_SINCE)
            .bind(pid)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        match (&statement, running) {
            // Not (or no longer) running here.
            (None, None) => return Ok(false),
            (Some(_), None) => return Ok(true),
            (Some(abandoned), Some(running)) if *abandoned != running => return Ok(true),
            (Some(_), Some(_)) => {}
            (None, Some(running)) => statement = Some(running),
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        // The abandoned wait may not have reached the lock yet.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Cancels the backend that holds the ticket while it waits for the lock;
/// `Ok(true)` once cancelled, `Ok(false)` when it does not run here.
async fn cancel_by_ticket(
    conn: &mut PgConnection,
    backend: WaitingBackend,
    encoded: i64,
    objsubid: i16,
    deadline: Instant,
) -> Result<bool, sqlx::Error> {
    loop {
        // In a transaction: see `cancel_wait`.
        let mut tx = conn.begin().await?;
        let cancelled: Vec<bool> = backend
            .bind(
                sqlx::query_scalar(pg_locks::CANCEL_IF_TICKET_WAITING)
                    .bind(encoded)
                    .bind(objsubid),
            )
            .fetch_all(&mut *tx)
            .await?;
        // The abandoned wait may not have reached the lock yet.
        let running = cancelled.is_empty()
            && backend
                .bind(sqlx::query_scalar(pg_locks::TICKET_STILL_RUNNING))
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        if !cancelled.is_empty() {
            return Ok(true);
        }
        if !running || Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
