//! Many session locks on a few connections.
//!
//! A session lock of [`SessionLock`](crate::SessionLock) owns a whole
//! connection, which is a backend process on the server and a slot of
//! `max_connections`. A [`LockManager`] holds many session locks over a few
//! connections of its own:
//!
//! - a lock is first tried, without waiting, on a connection that already
//!   holds locks; statements on one connection run strictly one at a time;
//! - a lone try (nothing else in flight) goes to the light connection, the
//!   one that holds the fewest locks, which streams of tries leave alone:
//!   the server walks a backend's whole lock table at the end of each
//!   statement outside a transaction, so a lock taken now and then costs
//!   least there;
//! - a lock that must be waited for waits on a connection that holds
//!   nothing else (an idle one, or a new one within the bound); once the
//!   lock is granted, that connection serves tries like the others;
//! - PostgreSQL grants a session lock again to a backend that holds it, so
//!   the manager keeps a table of the locks its guards hold and never sends
//!   a request to a connection where the server would grant it by mistake:
//!   two exclusive guards of one manager exclude each other exactly as two
//!   processes do (shared guards may share);
//! - each connection is checked by one heartbeat, however many locks it
//!   holds, and a connection that fails makes exactly its own guards
//!   report the loss.
//!
//! # Rooms
//!
//! - `mod.rs`: [`LockManager`], and what every room shares (`Inner`, the
//!   ids of connections and guards).
//! - `options.rs`: [`ManagerOptions`], [`LockBudget`], [`LockTable`].
//! - `request.rs`: [`ManagedLock`], a request: try, in-process wait,
//!   server wait.
//! - `guard.rs`: [`ManagedGuard`], a held lock (or a semaphore's permit).
//! - `semaphore.rs`: [`ManagedSemaphore`], a request for a permit: the
//!   permits tried one by one, then one server-side wait for any of them.
//! - `table.rs`: what the manager knows under one lock: connections as
//!   routing sees them, claims, in-process exclusion, routing.
//! - `connection.rs`: one connection, and the one way to reach it: callers'
//!   tries and releases, and the commands its task runs.
//! - `session.rs`: a connection's PostgreSQL session: its states, its short
//!   transaction, its fencing tokens.
//! - `task.rs`: a connection's task: the waits, the heartbeat, the commits,
//!   the idle close, the close.
//! - `batch.rs`: when tries and releases run in a short transaction.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sqlx::postgres::PgConnectOptions;
use tokio::sync::{Notify, oneshot};

use crate::contract::id::LockId;
use crate::contract::mode::Mode;
use crate::error::Error;
use crate::front::primary::Hosts;

mod batch;
mod connection;
mod guard;
mod options;
mod request;
mod semaphore;
mod session;
mod table;
mod task;

pub use guard::ManagedGuard;
pub use options::{LockBudget, LockTable, ManagerOptions};
pub use request::ManagedLock;
pub use semaphore::ManagedSemaphore;

use connection::Command;
use table::Table;

/// One of a manager's connections, as its table and its guards name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct ConnectionId(u64);

impl ConnectionId {
    /// The number events name the connection by.
    fn get(self) -> u64 {
        self.0
    }
}

/// One request's claim, and then the guard that holds its lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct GuardId(u64);

/// Many session locks held over a few connections.
///
/// ```no_run
/// use pglock_runtime::{LockManager, ManagerOptions, Namespace};
///
/// static PARTITIONS: Namespace = Namespace::named("ingest:partition");
///
/// # async fn run() -> Result<(), pglock_runtime::Error> {
/// let options: sqlx::postgres::PgConnectOptions = "postgres://localhost/app".parse()?;
/// let manager = LockManager::new(options, ManagerOptions::default());
/// let mut led = Vec::new();
/// for partition in 0..300_i64 {
///     // One try per partition; at most 8 connections hold them all.
///     if let Some(lock) = manager.lock(&PARTITIONS, &partition).try_acquire().await? {
///         led.push(lock);
///     }
/// }
/// println!("leading {} partitions", led.len());
/// let released = manager.close().await;
/// # Ok(()) }
/// ```
///
/// Dropping the manager releases every lock it holds, in the background, as
/// [`LockManager::close`] does. Needs a tokio runtime.
pub struct LockManager {
    inner: Arc<Inner>,
}

/// What the manager's rooms share.
struct Inner {
    hosts: Hosts,
    options: ManagerOptions,
    table: Mutex<Table>,
    /// Told whenever a claim is given back (a granted lock's once its
    /// connection has unlocked it), for requests that wait for a lock a
    /// guard of this manager holds.
    released: Notify,
    /// Told when the manager closes, for the waits on its connections.
    closing: Notify,
}

impl Inner {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Chooses the connection for a request and claims its lock there; see
    /// [`Table::route`]. The table is locked for the choice alone.
    /// Waits while the budget waits for the server's table to be read.
    async fn route(
        self: &Arc<Self>,
        id: LockId,
        mode: Mode,
        purpose: table::Purpose,
        claim: &mut table::ClaimGuard<'_>,
    ) -> Result<table::Route, Error> {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let route = {
                let mut table = self.table();
                table.route(self, id, mode, purpose, claim)
            };
            match route {
                Ok(table::Route::AwaitTable) => {
                    // Told when the table is read or a claim is given back;
                    // bounded, so that no wake-up can be missed for good.
                    let bound = self.options.checks.timeout();
                    let _ = tokio::time::timeout(bound, released).await;
                }
                route => return route,
            }
        }
    }

    /// Whether a guard of this manager holds or claims `id` in a mode that
    /// excludes `mode`.
    fn held_here(&self, id: LockId, mode: Mode) -> bool {
        self.table().held_here(id, mode)
    }

    /// Gives back a guard's claim; `false` when it had none any more (its
    /// connection was lost or closed).
    fn forget(&self, guard: GuardId) -> bool {
        let forgotten = self.table().forget(guard);
        // A granted lock is still on the server, and in the budget, until
        // its connection has unlocked it: its waiters are told then
        // ([`Inner::unheld`]), so that their try finds it free and within
        // the budget.
        if forgotten == Some(false) {
            self.released.notify_waiters();
        }
        forgotten.is_some()
    }

    /// A lock granted on `connection` was unlocked (or found gone) there:
    /// it leaves the budget, and requests that wait for it try again.
    fn unheld(&self, connection: ConnectionId) {
        self.table().unheld(connection);
        self.released.notify_waiters();
    }

    /// Removes a connection and every claim on it.
    fn remove_connection(&self, id: ConnectionId) {
        self.table().remove(id);
        self.released.notify_waiters();
    }

    /// Marks the manager closed and asks every connection to release its
    /// locks and close.
    fn close_all(&self) -> Vec<oneshot::Receiver<usize>> {
        let mut table = self.table();
        table.closed = true;
        self.closing.notify_waiters();
        table
            .connections
            .values()
            .filter_map(|entry| {
                let (reply, answer) = oneshot::channel();
                entry.connection.send(Command::Close { reply }).ok()?;
                Some(answer)
            })
            .collect()
    }
}

impl LockManager {
    /// A manager that connects with `connect`; it opens connections when
    /// locks are asked for, not before.
    pub fn new(connect: PgConnectOptions, options: ManagerOptions) -> Self {
        Self::connecting_to(Hosts::one(connect), options)
    }

    /// A manager that connects to the primary among `hosts`: every
    /// connection it opens, the first and those after a loss, goes to the
    /// first host, in order, that is a primary accepting writes (as libpq's
    /// `target_session_attrs=read-write`; see
    /// [`connect_primary`](crate::connect_primary)). After a failover, its
    /// guards report their loss within the
    /// [detection bound](ManagerOptions::detection_bound), and its next
    /// requests are served by the promoted server, without a new manager.
    /// Each host gets the checks' timeout to connect and answer.
    ///
    /// ```no_run
    /// use pglock_runtime::{Error, LockManager, ManagerOptions, Namespace};
    ///
    /// static PARTITIONS: Namespace = Namespace::named("ingest:partition");
    ///
    /// # async fn run() -> Result<(), Error> {
    /// let manager = LockManager::with_hosts(
    ///     [
    ///         "postgres://app@db-a/app".parse()?,
    ///         "postgres://app@db-b/app".parse()?,
    ///     ],
    ///     ManagerOptions::default(),
    /// )?;
    /// match manager.lock(&PARTITIONS, &7_i64).try_acquire().await {
    ///     Ok(Some(guard)) => { /* lead partition 7 until guard.lost() */ }
    ///     Ok(None) => { /* another worker leads it */ }
    ///     // Mid-failover: no host is the primary yet; retryable.
    ///     Err(error @ Error::NoPrimary { .. }) => eprintln!("{error}"),
    ///     Err(error) => return Err(error),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NoHosts`] when `hosts` is empty.
    pub fn with_hosts(
        hosts: impl IntoIterator<Item = PgConnectOptions>,
        options: ManagerOptions,
    ) -> Result<Self, Error> {
        Ok(Self::connecting_to(Hosts::primary_of(hosts)?, options))
    }

    fn connecting_to(hosts: Hosts, options: ManagerOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                hosts,
                options,
                table: Mutex::new(Table::default()),
                released: Notify::new(),
                closing: Notify::new(),
            }),
        }
    }

    /// The server's lock table, as the manager last read it when a
    /// connection opened; `None` before its first connection.
    pub fn lock_table(&self) -> Option<LockTable> {
        self.inner.table().lock_table
    }

    /// The connections open now (not those still connecting).
    pub fn connections(&self) -> usize {
        self.inner.table().open_connections()
    }

    /// Releases every lock the manager holds and closes its connections;
    /// returns how many locks were released. Guards report their lock as
    /// lost (a leader learns it leads no more), and their
    /// [`release`](ManagedGuard::release) succeeds at once. New requests
    /// fail with [`Error::ManagerClosed`].
    pub async fn close(&self) -> usize {
        let mut released = 0;
        for reply in self.inner.close_all() {
            released += reply.await.unwrap_or(0);
        }
        released
    }
}

impl Drop for LockManager {
    fn drop(&mut self) {
        drop(self.inner.close_all());
    }
}

impl fmt::Debug for LockManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.inner.table();
        f.debug_struct("LockManager")
            .field("connections", &table.connections.len())
            .field("locks", &table.claimed())
            .field("lock_table", &table.lock_table)
            .field("closed", &table.closed)
            .finish()
    }
}
