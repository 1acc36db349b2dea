//! Many session locks on a few connections.
//!
//! A session lock of [`SessionLock`](crate::SessionLock) owns a whole
//! connection, which is a backend process on the server and a slot of
//! `max_connections`. A [`LockManager`] holds many session locks over a few
//! connections of its own:
//!
//! - a lock is first tried, without waiting, on a connection that already
//!   holds locks; statements on one connection run strictly one at a time;
//! - a lock that must be waited for waits on a connection that holds
//!   nothing else (an idle one, or a new one within the bound); once the
//!   lock is granted, that connection serves tries like the others;
//! - PostgreSQL grants a session lock again to a backend that holds it, so
//!   the manager keeps a table of the locks its handles hold and never sends
//!   a request to a connection where the server would grant it by mistake:
//!   two exclusive handles of one manager exclude each other exactly as two
//!   processes do (shared handles may share);
//! - each connection is checked by one heartbeat, however many locks it
//!   holds, and a connection that fails makes exactly its own handles
//!   report the loss.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::contract::family::NamespaceFor;
use crate::contract::id::LockId;
use crate::contract::key::LockKey;
use crate::contract::mode::Mode;
use crate::engine::events;
use crate::engine::measure::{self, HoldMeter, Outcome};
use crate::engine::wait::{Wait, Waiter, reported_wait};
use crate::error::Error;
use crate::front::lease::{LeaseLost, LeaseOptions, LeaseState, until_lost};
use crate::identity::LockIdentity;
use crate::sql::pg_locks;
use crate::sql::statements::{Scope, TryStatus, bind_id, session_wait_sql};

mod batch;

use batch::{Due, Open};

/// How a [`LockManager`] uses its connections.
///
/// ```
/// use std::time::Duration;
/// use pglock_runtime::{LeaseOptions, ManagerOptions};
///
/// let options = ManagerOptions::default()
///     .max_connections(4)
///     .checks(LeaseOptions::default().check_every(Duration::from_secs(1)));
/// assert_eq!(options.detection_bound(), Duration::from_secs(6));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ManagerOptions {
    max_connections: usize,
    idle_timeout: Duration,
    checks: LeaseOptions,
    lock_budget: LockBudget,
}

impl Default for ManagerOptions {
    /// At most 8 connections; a connection that holds no lock closes after
    /// 30 s; checks as [`LeaseOptions::default`]; a budget of a quarter of
    /// the server's lock table ([`LockBudget::default`]).
    fn default() -> Self {
        Self {
            max_connections: 8,
            idle_timeout: Duration::from_secs(30),
            checks: LeaseOptions::default(),
            lock_budget: LockBudget::default(),
        }
    }
}

/// How many locks a [`LockManager`] may hold at once.
///
/// PostgreSQL keeps advisory locks in the shared lock table that every
/// session's ordinary locks use too: room for
/// `max_locks_per_transaction × (max_connections + max_prepared_transactions)`
/// locks (6,400 on a stock server), with some slack from spare shared
/// memory. Once it is full, every statement that needs a lock fails with
/// `out of shared memory`, and so does every new connection, for every
/// application and role, until locks are released. A manager never takes
/// the table for itself: a request beyond its budget fails at once with
/// [`Error::LockBudget`], and nothing it holds is affected.
///
/// ```
/// use pglock_runtime::{LockBudget, LockTable, ManagerOptions};
///
/// let stock = LockTable::new(64, 100, 0);
/// assert_eq!(stock.entries(), 6_400);
/// assert_eq!(LockBudget::default().locks(Some(stock)), Some(1_600));
/// let options = ManagerOptions::default().lock_budget(LockBudget::Locks(20_000));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockBudget {
    /// A share of the server's lock table, in percent (1 to 100), learned
    /// when the manager connects. The default, 25: PostgreSQL sizes the
    /// table so that every session may hold `max_locks_per_transaction`
    /// locks, and guarantees no more; four managers at the default together
    /// stay within that guaranteed size, and the slack above it stays free
    /// for every other session's ordinary locks and new connections.
    TableShare(u8),
    /// At most this many locks, whatever the server's table.
    Locks(usize),
}

impl Default for LockBudget {
    fn default() -> Self {
        LockBudget::TableShare(25)
    }
}

impl LockBudget {
    /// The number of locks this budget allows on a server whose table is
    /// `table`; `None` for a share of a table not known yet.
    pub fn locks(&self, table: Option<LockTable>) -> Option<usize> {
        match *self {
            LockBudget::Locks(locks) => Some(locks),
            LockBudget::TableShare(percent) => {
                let percent = u64::from(percent.clamp(1, 100));
                let share = table?.entries() * percent / 100;
                Some(usize::try_from(share.max(1)).unwrap_or(usize::MAX))
            }
        }
    }
}

/// The size of a server's shared lock table, from the settings that fix
/// it, as a [`LockManager`] reads them when it connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockTable {
    max_locks_per_transaction: u32,
    max_connections: u32,
    max_prepared_transactions: u32,
}

impl LockTable {
    /// The table of a server with these settings.
    pub const fn new(
        max_locks_per_transaction: u32,
        max_connections: u32,
        max_prepared_transactions: u32,
    ) -> Self {
        Self {
            max_locks_per_transaction,
            max_connections,
            max_prepared_transactions,
        }
    }

    /// The locks PostgreSQL guarantees room for:
    /// `max_locks_per_transaction × (max_connections + max_prepared_transactions)`.
    pub const fn entries(&self) -> u64 {
        self.max_locks_per_transaction as u64
            * (self.max_connections as u64 + self.max_prepared_transactions as u64)
    }

    /// The server's `max_locks_per_transaction`.
    pub const fn max_locks_per_transaction(&self) -> u32 {
        self.max_locks_per_transaction
    }

    /// The server's `max_connections`.
    pub const fn max_connections(&self) -> u32 {
        self.max_connections
    }

    /// The server's `max_prepared_transactions`.
    pub const fn max_prepared_transactions(&self) -> u32 {
        self.max_prepared_transactions
    }
}

impl fmt::Display for LockTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} entries = max_locks_per_transaction {} × (max_connections {} + max_prepared_transactions {})",
            self.entries(),
            self.max_locks_per_transaction,
            self.max_connections,
            self.max_prepared_transactions
        )
    }
}

impl ManagerOptions {
    /// The most connections the manager opens at once (at least 1). Every
    /// wait takes a connection of its own until its lock is granted.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// How long a connection that holds no lock, and has run no try or
    /// release, stays open.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How each connection is checked: one check per connection, whatever
    /// the number of locks it holds.
    pub fn checks(mut self, checks: LeaseOptions) -> Self {
        self.checks = checks;
        self
    }

    /// How many locks the manager may hold at once; see [`LockBudget`].
    pub fn lock_budget(mut self, budget: LockBudget) -> Self {
        self.lock_budget = budget;
        self
    }

    /// The longest time between the loss of a connection and its handles'
    /// report of it.
    pub fn detection_bound(&self) -> Duration {
        self.checks.detection_bound()
    }
}

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
/// let released = manager.close().await?;
/// # Ok(()) }
/// ```
///
/// Dropping the manager releases every lock it holds, in the background, as
/// [`LockManager::close`] does. Needs a tokio runtime.
pub struct LockManager {
    inner: Arc<Inner>,
}

struct Inner {
    connect: PgConnectOptions,
    options: ManagerOptions,
    state: Mutex<State>,
    /// Told whenever a claim is given back, for requests that wait for a
    /// lock a handle of this manager holds.
    released: Notify,
    /// Told when the manager closes, for the waits on its connections.
    closing: Notify,
}

/// What the manager knows, under one lock: its connections, and which
/// handle claims which lock on which connection.
#[derive(Default)]
struct State {
    closed: bool,
    next: u64,
    slots: HashMap<u64, Slot>,
    claims: HashMap<LockId, Vec<Claim>>,
    /// Which lock each claiming handle claims.
    handles: HashMap<u64, LockId>,
    /// The server's lock table, as the last connection opened read it.
    table: Option<LockTable>,
}

/// One connection, as the manager routes requests to it.
struct Slot {
    conn: Arc<Backend>,
    /// Tries and waits sent and not yet answered.
    in_flight: usize,
    /// Locks granted to handles on this connection.
    held: usize,
    /// A wait runs on it: nothing else may be sent until it ends.
    waiting: bool,
}

/// A handle's claim on a lock: taken before its statement is sent, so that
/// no other request of this manager can reach a connection where the server
/// would grant the lock twice.
#[derive(Clone, Copy, Debug)]
struct Claim {
    handle: u64,
    slot: u64,
    mode: Mode,
    granted: bool,
}

/// What a connection's task is asked to do.
enum Command {
    /// Wait for a lock; on success, keep `holding` for the handle.
    Wait {
        sql: String,
        holding: Holding,
        reply: oneshot::Sender<Result<(), sqlx::Error>>,
    },
    /// Unlock a dropped handle's lock, if it holds one here.
    Unlock { handle: u64 },
    /// Release every lock and close.
    Close { reply: oneshot::Sender<usize> },
}

/// One of the manager's connections. Callers run their tries and releases on it
/// themselves, and its task runs the rest (waits, checks, the unlocks of
/// dropped handles, the idle close, the close); the mutex around it runs
/// one statement at a time.
struct Backend {
    pg: Arc<tokio::sync::Mutex<Pg>>,
    /// The locks granted here, changed only with `pg` locked, so that a
    /// check never sees the one without the other.
    held: Mutex<HashMap<u64, Holding>>,
    /// Told when a lock is granted here, so that the task starts checking.
    granted: Notify,
    /// Told when a transaction opens here, so that the task commits it.
    batch_opened: Notify,
    /// Set once the connection is lost, closed or retired.
    gone: std::sync::atomic::AtomicBool,
    commands: mpsc::UnboundedSender<Command>,
    /// The runtime of the connection's task, which also finishes the
    /// statements of callers that stopped waiting.
    runtime: tokio::runtime::Handle,
}

/// The state of a connection.
enum Pg {
    /// Not connected yet: the first statement connects.
    New,
    Open(Open),
    /// Lost, closed or retired.
    Gone,
}

/// What a connection keeps of a lock it holds for a handle.
struct Holding {
    handle: u64,
    lock: LockIdentity,
    unlock_sql: Arc<str>,
    state: watch::Sender<LeaseState>,
    /// Counts the lock as held from its grant until this is dropped.
    meter: Option<HoldMeter>,
}

impl Holding {
    /// Unlocks on `conn`: `Ok(false)` when the session held nothing.
    async fn unlock(&self, conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
        bind_id(
            sqlx::query(AssertSqlSafe(self.unlock_sql.clone())),
            self.lock.id(),
        )
        .fetch_one(conn)
        .await?
        .try_get(0)
    }

    /// Gives back a lock taken for a caller that left, within `bound`; the
    /// reason the connection is unusable when that fails.
    async fn give_back(&self, conn: &mut PgConnection, bound: Duration) -> Result<(), String> {
        match tokio::time::timeout(bound, self.unlock(conn)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("the connection failed: {error}")),
            Err(_) => Err(format!("an unlock did not answer within {bound:?}")),
        }
    }

    /// After a request failed on a connection that stays in service: gives
    /// back the lock if the server granted it all the same, and says
    /// whether it did. PostgreSQL can grant a lock and still raise the
    /// error of a lock timeout or a cancel that fired in between (the timer
    /// goes off after the grant but before it is disarmed); a session lock
    /// outlives that error, and would stay on this connection for no
    /// handle, re-entered by the next request and excluding everyone else.
    /// Only for a connection on which no other handle holds the same lock:
    /// `pg_locks` shows one row however many times a session took it.
    async fn give_back_if_granted(
        &self,
        conn: &mut PgConnection,
        bound: Duration,
    ) -> Result<bool, String> {
        let (encoded, objsubid) = pg_locks::encode(self.lock.id());
        let held = sqlx::query_scalar::<_, bool>(pg_locks::HELD_BY_THIS_SESSION)
            .bind(encoded)
            .bind(objsubid)
            .bind(pg_locks::mode_name(self.lock.mode()))
            .fetch_one(&mut *conn);
        match tokio::time::timeout(bound, held).await {
            Ok(Ok(false)) => Ok(false),
            Ok(Ok(true)) => self.give_back(conn, bound).await.map(|()| true),
            Ok(Err(error)) => Err(format!("the connection failed: {error}")),
            Err(_) => Err(format!("a check did not answer within {bound:?}")),
        }
    }

    /// Tells the handle its lock is gone; `counted`: a loss, not a close.
    fn lose(&self, reason: &str, counted: bool) {
        if counted {
            measure::acquisition(self.lock.label(), self.lock.mode(), Outcome::Lost);
        }
        let lost = LeaseLost::new(self.lock.clone(), reason.to_owned());
        let _ = self.state.send(LeaseState::Lost(lost));
    }
}

/// How busy a connection is, as routing sees it.
#[derive(Clone, Copy, Debug)]
struct Load {
    slot: u64,
    /// Tries and waits sent and not yet answered.
    in_flight: usize,
    /// Locks granted on it.
    held: usize,
    waiting: bool,
}

/// The connection a try goes to, among `open` connections (the bound:
/// `max`), never one that runs a wait. Below the bound: one with fewer than
/// two statements queued, holding locks first (one that holds none stays
/// free for waits while another will do), then the least busy; `None` when
/// every one has a statement queued, for a new one to open. At the bound:
/// one that holds locks however busy, so that the last that hold none stay
/// free for waits, then the least busy.
fn try_target(connections: impl Iterator<Item = Load>, open: usize, max: usize) -> Option<u64> {
    let at_bound = open >= max;
    connections
        .filter(|load| !load.waiting)
        .min_by_key(|load| {
            (
                !at_bound && load.in_flight >= 2,
                load.held == 0,
                load.in_flight,
                load.slot,
            )
        })
        .filter(|load| load.in_flight < 2 || at_bound)
        .map(|load| load.slot)
}

/// Where a request goes.
enum Route {
    /// Run it on this connection.
    Slot(u64, Arc<Backend>),
    /// A handle of this manager holds or claims the lock in a mode that
    /// excludes it.
    HeldHere,
}

impl LockManager {
    /// A manager that connects with `connect`; it opens connections when
    /// locks are asked for, not before.
    pub fn new(connect: PgConnectOptions, options: ManagerOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                connect,
                options,
                state: Mutex::new(State::default()),
                released: Notify::new(),
                closing: Notify::new(),
            }),
        }
    }

    /// A lock on `key` in `namespace` (a [`Namespace`](crate::Namespace),
    /// or a [`LockFamily`](crate::LockFamily) of the key's type), to
    /// configure and then acquire.
    ///
    /// ```no_run
    /// # async fn run(manager: &pglock_runtime::LockManager) -> Result<(), pglock_runtime::Error> {
    /// use std::time::Duration;
    /// static TENANTS: pglock_runtime::LockFamily<i64> = pglock_runtime::LockFamily::named("tenant:job");
    /// let lock = manager.lock(&TENANTS, &42).timeout(Duration::from_secs(5)).acquire().await?;
    /// // ... tenant 42's singleton job ...
    /// lock.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn lock<'a, K, N>(&'a self, namespace: &'a N, key: &K) -> ManagedRequest<'a>
    where
        K: LockKey + ?Sized,
        N: NamespaceFor<K> + ?Sized,
    {
        let namespace = namespace.namespace();
        ManagedRequest {
            manager: self,
            lock: Waiter {
                namespace,
                id: namespace.id(key),
                mode: Mode::Exclusive,
            },
            wait: Wait::Unbounded,
        }
    }

    /// The server's lock table, as the manager last read it when a
    /// connection opened; `None` before its first connection.
    pub fn lock_table(&self) -> Option<LockTable> {
        self.inner.state().table
    }

    /// The connections open now.
    pub fn connections(&self) -> usize {
        self.inner.state().slots.len()
    }

    /// Releases every lock the manager holds and closes its connections;
    /// returns how many locks were released. Handles report their lock as
    /// lost (a leader learns it leads no more), and their
    /// [`release`](ManagedLock::release) succeeds at once. New requests
    /// fail with [`Error::ManagerClosed`].
    pub async fn close(&self) -> Result<usize, Error> {
        let slots = self.inner.close_all();
        let mut released = 0;
        for reply in slots {
            released += reply.await.unwrap_or(0);
        }
        Ok(released)
    }
}

impl Drop for LockManager {
    fn drop(&mut self) {
        drop(self.inner.close_all());
    }
}

impl fmt::Debug for LockManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state();
        f.debug_struct("LockManager")
            .field("connections", &state.slots.len())
            .field("locks", &state.claims.len())
            .field("table", &state.table)
            .field("closed", &state.closed)
            .finish()
    }
}

/// A lock to take through a [`LockManager`]: made by
/// [`LockManager::lock`], configured, then acquired.
#[derive(Clone, Copy)]
#[must_use = "a lock request does nothing until it is acquired"]
pub struct ManagedRequest<'a> {
    manager: &'a LockManager,
    lock: Waiter<'a>,
    wait: Wait,
}

impl ManagedRequest<'_> {
    request_options!();

    /// Takes the lock, waiting as configured: a try on a connection that
    /// holds locks, then, if the lock is busy, a wait on a connection of its
    /// own.
    ///
    /// # Errors
    ///
    /// [`Error::Busy`] after `no_wait`, [`Error::Conflict`] when a wait ends
    /// without the lock, [`Error::LockBudget`] when the manager holds as
    /// many locks as its budget allows, [`Error::ManagerBusy`] when every connection the
    /// bound allows is waiting, [`Error::ManagerClosed`], [`Error::Standby`],
    /// [`Error::InvalidTimeout`] and [`Error::Database`].
    pub async fn acquire(self) -> Result<ManagedLock, Error> {
        let cap_ms = self.wait.cap_ms()?;
        if let Some(lock) = self.try_once().await? {
            self.count(Outcome::Acquired);
            return Ok(lock);
        }
        if self.wait.is_no_wait() {
            return Err(self.lock.busy(self.wait));
        }
        self.wait_for(cap_ms).await
    }

    /// Tries the lock once: the handle when it is free, `None` when someone
    /// (another process, or a handle of this manager) holds it.
    pub async fn try_acquire(self) -> Result<Option<ManagedLock>, Error> {
        let lock = self.try_once().await?;
        match lock {
            Some(_) => self.count(Outcome::Acquired),
            None => events::not_waiting(&self.lock.identity()),
        }
        Ok(lock)
    }

    fn count(&self, outcome: Outcome) {
        measure::acquisition(self.lock.namespace.shared_label(), self.lock.mode, outcome);
    }

    /// One try; again on another connection while the one chosen turns out
    /// to be gone (a server restart, idle connections cut): a connection
    /// that failed holds nothing any more. At most once per connection the
    /// bound allows, and once more on a new one.
    async fn try_once(&self) -> Result<Option<ManagedLock>, Error> {
        let mut attempts = self.manager.inner.options.max_connections + 1;
        loop {
            attempts -= 1;
            match self.try_on_a_connection().await {
                Err((_, true)) if attempts > 0 => continue,
                outcome => return outcome.map_err(|(error, _)| error),
            }
        }
    }

    /// One try; an error says whether its connection was lost.
    async fn try_on_a_connection(&self) -> Result<Option<ManagedLock>, (Error, bool)> {
        let inner = &self.manager.inner;
        let mut claim = ClaimGuard::new(inner);
        let route = inner
            .route(self.lock.id, self.lock.mode, Purpose::Try, &mut claim)
            .map_err(|error| (error, false))?;
        let Route::Slot(slot, conn) = route else {
            return Ok(None);
        };
        let (holding, state) = self.holding(claim.handle);
        let sql = self
            .lock
            .namespace
            .statements()
            .try_lock(Scope::Session, self.lock.mode);
        let id = self.lock.id;
        let status = FinishOnDrop::new(&conn.runtime, {
            let inner = Arc::clone(inner);
            let conn = Arc::clone(&conn);
            async move { conn.try_lock(&inner, slot, sql, id, holding).await }
        })
        .await
        .map_err(|error| {
            let lost = !inner.state().slots.contains_key(&slot);
            (error, lost)
        });
        if !matches!(status, Ok(TryStatus::Acquired)) {
            // Answered, and not granted: nothing to give back.
            claim.answered();
        }
        match status? {
            TryStatus::Acquired => Ok(Some(claim.into_handle(slot, self.lock.identity(), state))),
            TryStatus::Busy { .. } => Ok(None),
            TryStatus::Standby => Err((Error::Standby, false)),
        }
    }

    /// Waits for a busy lock. While a handle of this manager holds it, the
    /// wait is in-process and takes no connection; then the lock is tried
    /// again, and if another session holds it, the wait goes to the server
    /// on a connection of its own. A timeout bounds both parts together.
    async fn wait_for(&self, cap_ms: Option<u32>) -> Result<ManagedLock, Error> {
        let inner = &self.manager.inner;
        let lock = self.lock.identity();
        let started = Instant::now();
        let deadline = cap_ms.map(|ms| started + Duration::from_millis(ms.into()));
        reported_wait(&lock, cap_ms, async {
            loop {
                let released = inner.released.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                let past_deadline = deadline.is_some_and(|deadline| Instant::now() >= deadline);
                let held_here = inner.held_here(self.lock.id, self.lock.mode);
                if held_here && past_deadline {
                    return Err(Error::timed_out_in_process(&lock, started.elapsed()));
                }
                if held_here {
                    match deadline {
                        Some(deadline) => {
                            let _ = tokio::time::timeout_at(deadline.into(), released).await;
                        }
                        None => released.await,
                    }
                    if let Some(handle) = self.try_once().await? {
                        return Ok(handle);
                    }
                    continue;
                }
                // The remaining time, never less than the smallest cap: once
                // the deadline has passed, the server reports the conflict.
                let remaining_ms = deadline.map(|deadline| {
                    let left = deadline.saturating_duration_since(Instant::now());
                    left.as_millis().clamp(1, i32::MAX as u128) as u32
                });
                return self.wait_on_server(remaining_ms, started).await;
            }
        })
        .await
    }

    /// A wait on a connection of its own; on another one if the first turns
    /// out to be gone before the wait could start (an idle connection cut).
    async fn wait_on_server(
        &self,
        cap_ms: Option<u32>,
        started: Instant,
    ) -> Result<ManagedLock, Error> {
        match self.wait_on_a_connection(cap_ms, started).await {
            Err((_, true)) => self
                .wait_on_a_connection(cap_ms, started)
                .await
                .map_err(|(error, _)| error),
            outcome => outcome.map_err(|(error, _)| error),
        }
    }

    /// One wait; an error says whether its connection was lost.
    async fn wait_on_a_connection(
        &self,
        cap_ms: Option<u32>,
        started: Instant,
    ) -> Result<ManagedLock, (Error, bool)> {
        let inner = &self.manager.inner;
        let mut claim = ClaimGuard::new(inner);
        let Route::Slot(slot, _) = inner
            .route(self.lock.id, self.lock.mode, Purpose::Wait, &mut claim)
            .map_err(|error| (error, false))?
        else {
            unreachable!("a wait gets a connection of its own, or an error");
        };
        let lock = self.lock.identity();
        let (holding, state) = self.holding(claim.handle);
        let statements = self.lock.namespace.statements();
        let sql = session_wait_sql(statements.marker(), self.lock.id, self.lock.mode, cap_ms);
        let (reply, answer) = oneshot::channel();
        claim
            .send(Command::Wait {
                sql,
                holding,
                reply,
            })
            .map_err(|error| (error, true))?;
        match answer.await {
            Ok(Ok(())) => Ok(claim.into_handle(slot, lock, state)),
            Ok(Err(error)) => {
                let lost = !inner.state().slots.contains_key(&slot);
                Err((Error::from_wait(error, &lock, started.elapsed()), lost))
            }
            // The connection's task ended without an answer: the manager
            // closed, or the connection could not be opened.
            Err(_) if inner.state().closed => Err((Error::ManagerClosed, false)),
            Err(_) => Err((connection_gone(), true)),
        }
    }

    fn holding(&self, handle: u64) -> (Holding, watch::Receiver<LeaseState>) {
        let (state_tx, state) = watch::channel(LeaseState::Held);
        let holding = Holding {
            handle,
            lock: self.lock.identity(),
            unlock_sql: self.lock.namespace.statements().unlock(self.lock.mode),
            state: state_tx,
            meter: None,
        };
        (holding, state)
    }
}

impl fmt::Debug for ManagedRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedRequest")
            .field("lock", &self.lock.identity())
            .field("wait", &self.wait)
            .finish()
    }
}

/// A session lock held through a [`LockManager`].
///
/// [`ManagedLock::release`] unlocks it on its connection. A handle dropped
/// without release is unlocked in the background at once; its connection
/// stays open for the other locks it holds. [`ManagedLock::lost`] and
/// [`ManagedLock::watch`] say when the connection, and so the lock, was
/// lost, as a [`Lease`](crate::Lease) does.
pub struct ManagedLock {
    inner: Arc<Inner>,
    lock: LockIdentity,
    handle: u64,
    slot: u64,
    conn: Arc<Backend>,
    state: watch::Receiver<LeaseState>,
    released: bool,
}

impl ManagedLock {
    /// The lock held.
    pub fn lock(&self) -> &LockIdentity {
        &self.lock
    }

    /// Whether the lock is still held, as of the last check of its
    /// connection.
    pub fn is_held(&self) -> bool {
        matches!(*self.state.borrow(), LeaseState::Held)
    }

    /// Resolves when the lock is lost; use it in a `select!` beside the
    /// holder's work.
    pub async fn lost(&mut self) -> LeaseLost {
        until_lost(&mut self.state, &self.lock).await
    }

    /// A receiver of the lock's state.
    pub fn watch(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Unlocks on the lock's connection. Fails with [`Error::LockLost`] when
    /// the connection was lost, or the unlock found nothing to release.
    /// After [`LockManager::close`], which released it already, succeeds.
    pub async fn release(mut self) -> Result<(), Error> {
        self.released = true;
        if !self.inner.forget(self.handle) {
            return self.already_gone();
        }
        let (inner, conn, handle) = (Arc::clone(&self.inner), Arc::clone(&self.conn), self.handle);
        let slot = self.slot;
        let released = FinishOnDrop::new(&self.conn.runtime, async move {
            conn.unlock(&inner, slot, handle).await
        })
        .await;
        match released {
            Ok(()) => Ok(()),
            Err(_) => self.already_gone(),
        }
    }

    fn already_gone(&self) -> Result<(), Error> {
        if self.inner.state().closed {
            Ok(())
        } else {
            Err(Error::LockLost(self.lock.clone()))
        }
    }
}

impl Drop for ManagedLock {
    fn drop(&mut self) {
        if self.released || !self.inner.forget(self.handle) {
            return;
        }
        events::managed_lock_dropped(&self.lock);
        let _ = self.conn.commands.send(Command::Unlock {
            handle: self.handle,
        });
    }
}

impl fmt::Debug for ManagedLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedLock")
            .field("lock", &self.lock)
            .field("connection", &self.slot)
            .field("state", &*self.state.borrow())
            .finish()
    }
}

/// Why a request needs a connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A try: any connection that may not grant the lock by mistake.
    Try,
    /// A wait: a connection that holds nothing and runs nothing.
    Wait,
}

/// A claim taken for a request, given back unless the request succeeds,
/// so that a dropped acquisition leaves nothing behind: its claim is
/// forgotten, and the connection, which may have taken the lock meanwhile,
/// is told to unlock it.
struct ClaimGuard<'a> {
    inner: &'a Arc<Inner>,
    handle: u64,
    conn: Option<Arc<Backend>>,
    /// The connection answered, without granting: no unlock to send.
    answered: bool,
}

impl<'a> ClaimGuard<'a> {
    fn new(inner: &'a Arc<Inner>) -> Self {
        let handle = inner.state().next_id();
        Self {
            inner,
            handle,
            conn: None,
            answered: false,
        }
    }

    fn answered(&mut self) {
        self.answered = true;
    }

    fn send(&self, command: Command) -> Result<(), Error> {
        let conn = self.conn.as_ref().expect("a routed claim");
        conn.commands.send(command).map_err(|_| connection_gone())
    }

    fn into_handle(
        mut self,
        slot: u64,
        lock: LockIdentity,
        state: watch::Receiver<LeaseState>,
    ) -> ManagedLock {
        let conn = self.conn.take().expect("a routed claim");
        let handle = ManagedLock {
            inner: Arc::clone(self.inner),
            lock,
            handle: self.handle,
            slot,
            conn,
            state,
            released: false,
        };
        std::mem::forget(self);
        handle
    }
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        self.inner.forget(self.handle);
        if let Some(conn) = self.conn.as_ref().filter(|_| !self.answered) {
            let _ = conn.commands.send(Command::Unlock {
                handle: self.handle,
            });
        }
    }
}

/// Runs a future that uses a connection to its end, even when the caller
/// stops waiting for it: dropped early, the rest runs as a task of its own,
/// so a statement's outcome is never lost (a lock taken for a caller that
/// is gone is given back at once).
struct FinishOnDrop<T: Send + 'static> {
    future: Option<std::pin::Pin<Box<dyn Future<Output = T> + Send>>>,
    /// The manager's runtime, which finishes the future: it may be dropped
    /// where no runtime is current.
    runtime: tokio::runtime::Handle,
}

impl<T: Send + 'static> FinishOnDrop<T> {
    fn new(
        runtime: &tokio::runtime::Handle,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Self {
        Self {
            future: Some(Box::pin(future)),
            runtime: runtime.clone(),
        }
    }
}

impl<T: Send + 'static> Future for FinishOnDrop<T> {
    type Output = T;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<T> {
        let future = self.future.as_mut().expect("polled after completion");
        let output = std::task::ready!(future.as_mut().poll(cx));
        self.future = None;
        std::task::Poll::Ready(output)
    }
}

impl<T: Send + 'static> Drop for FinishOnDrop<T> {
    fn drop(&mut self) {
        if let Some(future) = self.future.take() {
            self.runtime.spawn(future);
        }
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Chooses the connection for a request and claims the lock on it.
    ///
    /// A try goes where [`try_target`] says; a new connection opens (within
    /// the bound) when every one has a statement queued. It never goes where the server
    /// would grant the lock a second time: a lock this manager holds or
    /// claims in a mode that excludes the request is busy at once. A wait
    /// goes to a connection that holds nothing and runs nothing, where it
    /// waits for its lock behind any holder, this manager's own included.
    fn route(
        self: &Arc<Self>,
        id: LockId,
        mode: Mode,
        purpose: Purpose,
        claim: &mut ClaimGuard<'_>,
    ) -> Result<Route, Error> {
        let mut state = self.state();
        if state.closed {
            return Err(Error::ManagerClosed);
        }
        if purpose == Purpose::Try && state.held_here(id, mode) {
            return Ok(Route::HeldHere);
        }
        if let Some(budget) = self.options.lock_budget.locks(state.table)
            && state.locks_in_use() >= budget
        {
            return Err(Error::LockBudget {
                budget,
                table: state.table,
            });
        }
        let max = self.options.max_connections;
        let chosen = match purpose {
            Purpose::Try => try_target(
                state.slots.iter().map(|(slot, connection)| Load {
                    slot: *slot,
                    in_flight: connection.in_flight,
                    held: connection.held,
                    waiting: connection.waiting,
                }),
                state.slots.len(),
                max,
            ),
            Purpose::Wait => state
                .slots
                .iter()
                .filter(|(_, connection)| {
                    !connection.waiting && connection.held == 0 && connection.in_flight == 0
                })
                .map(|(slot, _)| *slot)
                .min(),
        };
        let slot = match chosen {
            Some(slot) => slot,
            None if state.slots.len() < max => state.open(self)?,
            None => {
                return Err(Error::ManagerBusy {
                    max_connections: max,
                });
            }
        };
        let connection = state.slots.get_mut(&slot).expect("the chosen connection");
        connection.in_flight += 1;
        connection.waiting = purpose == Purpose::Wait;
        let conn = Arc::clone(&connection.conn);
        claim.conn = Some(Arc::clone(&conn));
        state.claims.entry(id).or_default().push(Claim {
            handle: claim.handle,
            slot,
            mode,
            granted: false,
        });
        state.handles.insert(claim.handle, id);
        Ok(Route::Slot(slot, conn))
    }

    /// Whether a handle of this manager holds or claims `id` in a mode that
    /// excludes `mode`.
    fn held_here(&self, id: LockId, mode: Mode) -> bool {
        self.state().held_here(id, mode)
    }

    /// Gives back a handle's claim; `false` when it had none any more (its
    /// connection was lost or closed).
    fn forget(&self, handle: u64) -> bool {
        let forgotten = self.state().forget(handle);
        if forgotten {
            self.released.notify_waiters();
        }
        forgotten
    }

    /// Removes a connection and every claim on it.
    fn remove_slot(&self, slot: u64) {
        self.state().remove_slot(slot);
        self.released.notify_waiters();
    }

    /// Marks the manager closed and asks every connection to release its
    /// locks and close.
    fn close_all(&self) -> Vec<oneshot::Receiver<usize>> {
        let mut state = self.state();
        state.closed = true;
        self.closing.notify_waiters();
        state
            .slots
            .values()
            .filter_map(|connection| {
                let (reply, answer) = oneshot::channel();
                connection
                    .conn
                    .commands
                    .send(Command::Close { reply })
                    .ok()?;
                Some(answer)
            })
            .collect()
    }
}

impl State {
    fn next_id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Opens a connection: its task connects, then serves its commands.
    fn open(&mut self, inner: &Arc<Inner>) -> Result<u64, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::Database(sqlx::Error::Configuration(
                "the lock manager needs a tokio runtime".into(),
            ))
        })?;
        let slot = self.next_id();
        let (commands, receiver) = mpsc::unbounded_channel();
        let conn = Arc::new(Backend {
            pg: Arc::new(tokio::sync::Mutex::new(Pg::New)),
            held: Mutex::new(HashMap::new()),
            granted: Notify::new(),
            batch_opened: Notify::new(),
            gone: std::sync::atomic::AtomicBool::new(false),
            commands,
            runtime: runtime.clone(),
        });
        self.slots.insert(
            slot,
            Slot {
                conn: Arc::clone(&conn),
                in_flight: 0,
                held: 0,
                waiting: false,
            },
        );
        runtime.spawn(run_connection(Arc::clone(inner), slot, conn, receiver));
        Ok(slot)
    }

    /// A try or a wait on `slot` was answered; `granted` is the handle it
    /// took a lock for. Returns whether that handle still claims the lock
    /// (its caller may have given up meanwhile: then the lock is to be
    /// given back at once).
    fn answered(&mut self, slot: u64, granted: Option<u64>) -> bool {
        let claimed = granted.is_some_and(|handle| {
            let claim = self.handles.get(&handle).and_then(|id| {
                self.claims
                    .get_mut(id)?
                    .iter_mut()
                    .find(|claim| claim.handle == handle)
            });
            claim.map(|claim| claim.granted = true).is_some()
        });
        if let Some(connection) = self.slots.get_mut(&slot) {
            connection.in_flight = connection.in_flight.saturating_sub(1);
            connection.waiting = false;
            connection.held += usize::from(claimed);
        }
        claimed
    }

    /// The locks the manager's connections hold or ask for: granted (and
    /// not unlocked yet) or in flight. What counts against the budget.
    fn locks_in_use(&self) -> usize {
        self.slots
            .values()
            .map(|connection| connection.held + connection.in_flight)
            .sum()
    }

    /// A lock granted on `slot` was unlocked (or found gone) there.
    fn unheld(&mut self, slot: u64) {
        if let Some(connection) = self.slots.get_mut(&slot) {
            connection.held = connection.held.saturating_sub(1);
        }
    }

    fn held_here(&self, id: LockId, mode: Mode) -> bool {
        self.claims.get(&id).is_some_and(|claims| {
            claims
                .iter()
                .any(|other| mode == Mode::Exclusive || other.mode == Mode::Exclusive)
        })
    }

    /// Gives back a handle's claim; `false` when it had none.
    fn forget(&mut self, handle: u64) -> bool {
        let Some(id) = self.handles.remove(&handle) else {
            return false;
        };
        let Some(claims) = self.claims.get_mut(&id) else {
            return false;
        };
        let Some(index) = claims.iter().position(|claim| claim.handle == handle) else {
            return false;
        };
        claims.swap_remove(index);
        if claims.is_empty() {
            self.claims.remove(&id);
        }
        // A granted lock stays counted on its connection until the
        // connection has unlocked it: no wait may be routed there before.
        true
    }

    /// Removes a connection and every claim on it.
    fn remove_slot(&mut self, slot: u64) {
        self.slots.remove(&slot);
        let handles = &mut self.handles;
        self.claims.retain(|_, claims| {
            claims.retain(|claim| {
                let keep = claim.slot != slot;
                if !keep {
                    handles.remove(&claim.handle);
                }
                keep
            });
            !claims.is_empty()
        });
    }

    /// Retires an idle connection: only if nothing was routed to it since.
    fn retire(&mut self, slot: u64) -> bool {
        let idle = self.slots.get(&slot).is_some_and(|connection| {
            connection.held == 0 && connection.in_flight == 0 && !connection.waiting
        });
        if idle {
            self.slots.remove(&slot);
        }
        idle
    }
}

fn connection_gone() -> Error {
    Error::Database(sqlx::Error::WorkerCrashed)
}

/// `start + by`, or far in the future when that overflows.
fn later(start: tokio::time::Instant, by: Duration) -> tokio::time::Instant {
    start
        .checked_add(by)
        .unwrap_or_else(|| start + Duration::from_secs(60 * 60 * 24 * 365 * 30))
}

impl Backend {
    /// The open connection, connecting it first if it is new.
    async fn open<'a>(
        &self,
        pg: &'a mut Pg,
        inner: &Inner,
        slot: u64,
    ) -> Result<&'a mut Open, Error> {
        if let Pg::New = pg {
            let bound = inner.options.checks.timeout();
            let connected = tokio::time::timeout(bound, inner.connect.connect())
                .await
                .unwrap_or_else(|_| {
                    Err(sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no connection within {bound:?}"),
                    )))
                });
            let connected = match connected {
                Ok(mut conn) => match tokio::time::timeout(bound, read_lock_table(&mut conn)).await
                {
                    Ok(Ok(table)) => {
                        inner.state().table = Some(table);
                        Ok(conn)
                    }
                    Ok(Err(error)) => Err(error),
                    Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the lock table's size was not read within {bound:?}"),
                    ))),
                },
                Err(error) => Err(error),
            };
            match connected {
                Ok(conn) => *pg = Pg::Open(Open::new(conn)),
                Err(error) => {
                    events::manager_connection_failed(slot, &error);
                    self.lose(inner, slot, pg, "the connection could not be opened", true);
                    return Err(Error::from_sqlx(error));
                }
            }
        }
        match pg {
            Pg::Open(conn) => Ok(conn),
            _ if inner.state().closed => Err(Error::ManagerClosed),
            _ => Err(connection_gone()),
        }
    }

    /// Tries a lock for a handle (whose caller may be gone by the answer)
    /// and keeps it when granted.
    async fn try_lock(
        self: Arc<Self>,
        inner: &Inner,
        slot: u64,
        sql: Arc<str>,
        id: LockId,
        holding: Holding,
    ) -> Result<TryStatus, Error> {
        let mut pg = Arc::clone(&self.pg).lock_owned().await;
        let bound = inner.options.checks.timeout();
        let conn = match self.open(&mut pg, inner, slot).await {
            Ok(conn) => conn,
            Err(error) => {
                inner.state().answered(slot, None);
                return Err(error);
            }
        };
        let held = self.held().len();
        if let Err(reason) = conn.before_statement(held, bound, &self.batch_opened).await {
            inner.state().answered(slot, None);
            self.lose(inner, slot, &mut pg, &reason, true);
            return Err(connection_gone());
        }
        let tried = tokio::time::timeout(
            bound,
            bind_id(sqlx::query(AssertSqlSafe(sql)), id).fetch_one(conn.conn()),
        )
        .await;
        conn.after_statement();
        let status = match tried {
            Ok(Ok(row)) => row.try_get::<i32, _>(0).map(TryStatus::from_code),
            Ok(Err(error)) => Err(error),
            Err(_) => {
                inner.state().answered(slot, None);
                let reason = format!("a try did not answer within {bound:?}");
                self.lose(inner, slot, &mut pg, &reason, true);
                return Err(connection_gone());
            }
        };
        let status = match status {
            Ok(status) => status,
            Err(error) => {
                inner.state().answered(slot, None);
                // A try does not wait, but a statement timeout or a cancel
                // can still end it after its grant. When another handle
                // holds the same lock here, the server's one row can't tell
                // the two grants apart: the connection is given up instead.
                let shares = self
                    .held()
                    .values()
                    .any(|other| other.lock.id() == id && other.lock.mode() == holding.lock.mode());
                let kept = match broken(conn, &error, bound).await {
                    Some(reason) => Err(reason),
                    None if !may_follow_a_grant(&error) => Ok(false),
                    None if shares => Err(format!(
                        "a try failed ({error}) where the lock is held for another handle: \
                         whether the server granted it again can't be told"
                    )),
                    None => holding.give_back_if_granted(conn.conn(), bound).await,
                };
                match kept {
                    Ok(true) => events::granted_despite_error(&holding.lock, &error),
                    Ok(false) => {}
                    Err(reason) => self.lose(inner, slot, &mut pg, &reason, true),
                }
                return Err(Error::from_sqlx(error));
            }
        };
        let granted = status == TryStatus::Acquired;
        if inner
            .state()
            .answered(slot, granted.then_some(holding.handle))
        {
            self.hold(holding);
        } else if granted {
            // Taken for a caller that gave up: given back before anything
            // else runs on this connection.
            if let Err(reason) = holding.give_back(conn.conn(), bound).await {
                self.lose(inner, slot, &mut pg, &reason, true);
            }
        }
        Ok(status)
    }

    /// Unlocks a handle's lock; `Err(LockLost)` when the connection is gone
    /// or the session held nothing.
    async fn unlock(&self, inner: &Inner, slot: u64, handle: u64) -> Result<(), Error> {
        let mut pg = self.pg.lock().await;
        let Pg::Open(conn) = &mut *pg else {
            return Err(connection_gone());
        };
        let Some(holding) = self.held().remove(&handle) else {
            // Lost or closed before; or, for a dropped acquisition, never
            // granted here.
            return Err(connection_gone());
        };
        let bound = inner.options.checks.timeout();
        let held = self.held().len() + 1;
        let unlocked = match conn.before_statement(held, bound, &self.batch_opened).await {
            Ok(()) => {
                let unlocked = tokio::time::timeout(bound, holding.unlock(conn.conn())).await;
                conn.after_statement();
                unlocked.map_err(|_| format!("an unlock did not answer within {bound:?}"))
            }
            Err(reason) => Err(reason),
        };
        inner.state().unheld(slot);
        let reason = match unlocked {
            Ok(Ok(true)) => return Ok(()),
            // The session does not hold what it took: it is not the session
            // that took it (a transaction pooler).
            Ok(Ok(false)) => "an unlock found the lock gone".to_owned(),
            Ok(Err(error)) => format!("the connection failed: {error}"),
            Err(reason) => reason,
        };
        measure::acquisition(holding.lock.label(), holding.lock.mode(), Outcome::Lost);
        self.lose(inner, slot, &mut pg, &reason, true);
        Err(Error::LockLost(holding.lock.clone()))
    }

    fn held(&self) -> MutexGuard<'_, HashMap<u64, Holding>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps a granted lock, counted as held from now.
    fn hold(&self, mut holding: Holding) {
        holding.meter = Some(HoldMeter::start(&holding.lock));
        self.held().insert(holding.handle, holding);
        self.granted.notify_one();
    }

    /// The connection is gone: its handles learn so first, then the manager
    /// forgets it (so a new request never finds its locks free while a
    /// handle still reads held). `counted`: a loss, not a close.
    fn lose(&self, inner: &Inner, slot: u64, pg: &mut Pg, reason: &str, counted: bool) {
        *pg = Pg::Gone;
        self.gone.store(true, std::sync::atomic::Ordering::Release);
        let held = std::mem::take(&mut *self.held());
        if counted && !held.is_empty() {
            events::manager_connection_lost(slot, held.len(), reason);
        }
        for holding in held.values() {
            holding.lose(reason, counted);
        }
        inner.remove_slot(slot);
    }
}

/// The size of the server's lock table, read when a connection opens.
async fn read_lock_table(conn: &mut PgConnection) -> Result<LockTable, sqlx::Error> {
    let (locks, connections, prepared): (i32, i32, i32) =
        sqlx::query_as(pg_locks::LOCK_TABLE).fetch_one(conn).await?;
    let setting = |value: i32| u32::try_from(value).unwrap_or(0);
    Ok(LockTable::new(
        setting(locks),
        setting(connections),
        setting(prepared),
    ))
}

/// A connection's task: runs the waits, the checks while the connection
/// holds locks, the unlocks of dropped handles, the commits of its short
/// transactions, the close, and retires the connection when it has held
/// nothing and run no try or release for the idle timeout.
async fn run_connection(
    inner: Arc<Inner>,
    slot: u64,
    conn: Arc<Backend>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let checks = inner.options.checks;
    let mut next_check = later(tokio::time::Instant::now(), checks.interval());
    let mut idle_since = tokio::time::Instant::now();
    let mut was_idle = true;
    // When to look at the transaction tries and releases run in, if one is open.
    let mut batch_due: Option<tokio::time::Instant> = None;
    loop {
        if conn.gone.load(std::sync::atomic::Ordering::Acquire) {
            break;
        }
        let idle = conn.held().is_empty();
        if idle && !was_idle {
            idle_since = tokio::time::Instant::now();
        }
        was_idle = idle;
        let idle_deadline = later(idle_since, inner.options.idle_timeout);
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { break };
                if !serve(&inner, slot, &conn, command).await {
                    break;
                }
                if conn.held().is_empty() {
                    idle_since = tokio::time::Instant::now();
                }
            }
            () = tokio::time::sleep_until(next_check), if !idle => {
                next_check = later(tokio::time::Instant::now(), checks.interval());
                if !check(&inner, slot, &conn).await {
                    break;
                }
            }
            // Re-reads whether the connection holds locks.
            () = conn.granted.notified(), if idle => {}
            () = conn.batch_opened.notified(), if batch_due.is_none() => {
                batch_due = Some(later(tokio::time::Instant::now(), batch::QUIET));
            }
            () = sleep_until_some(batch_due), if batch_due.is_some() => {
                match settle_batch(&inner, slot, &conn).await {
                    Ok(due) => batch_due = due,
                    Err(()) => break,
                }
            }
            () = tokio::time::sleep_until(idle_deadline), if idle => {
                // A caller's try here counts as use, granted or not.
                let used = match &*conn.pg.lock().await {
                    Pg::Open(open) => open.last_used(),
                    _ => None,
                };
                if let Some(used) = used.filter(|used| {
                    later(*used, inner.options.idle_timeout) > tokio::time::Instant::now()
                }) {
                    idle_since = used;
                    continue;
                }
                let retired = {
                    let mut state = inner.state();
                    // Gone from the manager already (lost by a caller): done.
                    state.retire(slot) || !state.slots.contains_key(&slot)
                };
                if retired {
                    let mut pg = conn.pg.lock().await;
                    if let Pg::Open(open) = std::mem::replace(&mut *pg, Pg::Gone) {
                        let _ = open.into_conn().close().await;
                    }
                    break;
                }
                idle_since = tokio::time::Instant::now();
            }
        }
    }
    fail_queued(&mut commands);
}

/// `sleep_until(due)`; never ends without one.
async fn sleep_until_some(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Commits the transaction tries and releases run in once it is due; when
/// to look again, or `Err` when the connection is gone.
async fn settle_batch(
    inner: &Inner,
    slot: u64,
    conn: &Backend,
) -> Result<Option<tokio::time::Instant>, ()> {
    let mut pg = conn.pg.lock().await;
    let Pg::Open(open) = &mut *pg else {
        return Err(());
    };
    match open.due() {
        Due::Nothing => Ok(None),
        Due::At(due) => Ok(Some(due)),
        Due::Commit => match open.commit(inner.options.checks.timeout()).await {
            Ok(()) => Ok(None),
            Err(reason) => {
                conn.lose(inner, slot, &mut pg, &reason, true);
                Err(())
            }
        },
    }
}

/// One check of a connection that holds locks: one statement, whatever the
/// number of locks. `false` when the connection is gone.
async fn check(inner: &Inner, slot: u64, conn: &Backend) -> bool {
    let mut pg = conn.pg.lock().await;
    let Pg::Open(open) = &mut *pg else {
        return false;
    };
    // Handles that share a lock in shared mode are one row of `pg_locks`.
    let expected: HashSet<(LockId, Mode)> = conn
        .held()
        .values()
        .map(|holding| (holding.lock.id(), holding.lock.mode()))
        .collect();
    let bound = inner.options.checks.timeout();
    // Outside a transaction, which would keep its lock on the view until
    // it ends.
    if let Err(reason) = open.commit(bound).await {
        conn.lose(inner, slot, &mut pg, &reason, true);
        return false;
    }
    let counted = tokio::time::timeout(
        bound,
        sqlx::query_scalar::<_, i64>(pg_locks::COUNT_HELD_BY_THIS_SESSION).fetch_one(open.conn()),
    )
    .await;
    let reason = match counted {
        Ok(Ok(rows)) if usize::try_from(rows).is_ok_and(|rows| rows == expected.len()) => {
            return true;
        }
        Ok(Ok(_)) => "the session no longer holds its locks".to_owned(),
        Ok(Err(error)) => format!("the connection failed: {error}"),
        Err(_) => format!("the connection did not answer within {bound:?}"),
    };
    conn.lose(inner, slot, &mut pg, &reason, true);
    false
}

/// Runs one command; `false` when the connection is gone after it.
async fn serve(inner: &Inner, slot: u64, conn: &Backend, command: Command) -> bool {
    match command {
        Command::Wait {
            sql,
            holding,
            mut reply,
        } => {
            // Listening before the check, so a close between the two is seen.
            let closing = inner.closing.notified();
            tokio::pin!(closing);
            closing.as_mut().enable();
            let mut pg = conn.pg.lock().await;
            if inner.state().closed {
                inner.state().answered(slot, None);
                conn.lose(inner, slot, &mut pg, "the lock manager was closed", false);
                return false;
            }
            let open = match conn.open(&mut pg, inner, slot).await {
                Ok(open) => open,
                Err(_) => {
                    inner.state().answered(slot, None);
                    let _ = reply.send(Err(sqlx::Error::WorkerCrashed));
                    return false;
                }
            };
            // A wait runs outside a transaction: its settings are local to
            // its own statement.
            if let Err(reason) = open.commit(inner.options.checks.timeout()).await {
                inner.state().answered(slot, None);
                conn.lose(inner, slot, &mut pg, &reason, true);
                let _ = reply.send(Err(sqlx::Error::WorkerCrashed));
                return false;
            }
            let outcome = tokio::select! {
                outcome = sqlx::raw_sql(AssertSqlSafe(sql)).execute(open.conn()) => Some(outcome),
                () = reply.closed() => None,
                () = &mut closing => None,
            };
            match outcome {
                // Abandoned while it waited, or the manager closes: this
                // connection holds nothing else, and closing it ends the
                // server-side wait (the wait statement makes the server check
                // its client every second).
                None => {
                    inner.state().answered(slot, None);
                    conn.lose(inner, slot, &mut pg, "the wait was abandoned", false);
                    false
                }
                Some(Ok(_)) => {
                    if inner.state().answered(slot, Some(holding.handle)) {
                        conn.hold(holding);
                    } else if let Err(reason) = holding
                        .give_back(open.conn(), inner.options.checks.timeout())
                        .await
                    {
                        conn.lose(inner, slot, &mut pg, &reason, true);
                        return false;
                    }
                    let _ = reply.send(Ok(()));
                    true
                }
                Some(Err(error)) => {
                    inner.state().answered(slot, None);
                    let bound = inner.options.checks.timeout();
                    // Forgotten before the answer, so the caller sees the
                    // connection gone and waits on another. A connection
                    // kept in service is first rid of a lock granted at the
                    // edge of the error; this one held nothing else.
                    let kept = match broken(open, &error, bound).await {
                        Some(reason) => Err(reason),
                        None if !may_follow_a_grant(&error) => Ok(false),
                        None => holding.give_back_if_granted(open.conn(), bound).await,
                    };
                    let alive = match kept {
                        Ok(granted) => {
                            if granted {
                                events::granted_despite_error(&holding.lock, &error);
                            }
                            true
                        }
                        Err(reason) => {
                            conn.lose(inner, slot, &mut pg, &reason, true);
                            false
                        }
                    };
                    let _ = reply.send(Err(error));
                    alive
                }
            }
        }
        Command::Unlock { handle } => match conn.unlock(inner, slot, handle).await {
            Ok(()) => true,
            Err(_) => !matches!(*conn.pg.lock().await, Pg::Gone),
        },
        Command::Close { reply } => {
            let mut pg = conn.pg.lock().await;
            let released = conn.held().len();
            if let Pg::Open(open) = &mut *pg {
                let bound = inner.options.checks.timeout();
                let unlocked = tokio::time::timeout(
                    bound,
                    sqlx::raw_sql("SELECT pg_catalog.pg_advisory_unlock_all()")
                        .execute(open.conn()),
                )
                .await;
                if let Ok(Err(error)) = unlocked {
                    events::manager_connection_failed(slot, &error);
                }
            }
            if let Pg::Open(open) = std::mem::replace(&mut *pg, Pg::Gone) {
                let _ = open.into_conn().close().await;
            }
            conn.lose(inner, slot, &mut pg, "the lock manager was closed", false);
            let _ = reply.send(released);
            false
        }
    }
}

/// Why the connection is unusable after `error`, if it is: a statement that
/// failed on a sound connection (a lock timeout, a full lock table) leaves
/// it in service, out of the transaction it failed in.
async fn broken(conn: &mut Open, error: &sqlx::Error, bound: Duration) -> Option<String> {
    match tokio::time::timeout(bound, conn.conn().ping()).await {
        Ok(Ok(())) => conn.after_failure(bound).await.err(),
        _ => Some(format!("the connection failed: {error}")),
    }
}

/// Whether `error` may have been raised after the server granted the lock
/// of the statement it ended: the errors of an interrupt (a lock timeout,
/// a statement timeout, a cancel), which fire whenever the backend next
/// checks for them, the grant included. A full lock table or a deadlock is
/// raised instead of the grant, and checking then would need room in the
/// very table that is full.
fn may_follow_a_grant(error: &sqlx::Error) -> bool {
    matches!(
        crate::error::sqlstate(error).as_deref(),
        Some("55P03" | "57014")
    )
}

/// Answers the commands still queued for a connection that is gone.
fn fail_queued(commands: &mut mpsc::UnboundedReceiver<Command>) {
    commands.close();
    while let Ok(command) = commands.try_recv() {
        match command {
            Command::Wait { reply, .. } => {
                let _ = reply.send(Err(sqlx::Error::WorkerCrashed));
            }
            Command::Unlock { .. } => {}
            Command::Close { reply } => {
                let _ = reply.send(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(slot: u64, in_flight: usize, held: usize) -> Load {
        Load {
            slot,
            in_flight,
            held,
            waiting: false,
        }
    }

    #[test]
    fn a_try_goes_to_a_connection_that_holds_locks_while_one_is_free_enough() {
        let loads = [load(1, 0, 0), load(2, 1, 5), load(3, 0, 9)];
        assert_eq!(try_target(loads.into_iter(), 3, 8), Some(3));
    }

    #[test]
    fn a_try_takes_an_idle_connection_before_a_new_one() {
        // The one that holds locks has two statements queued: the idle one
        // serves, rather than a connection opened for it.
        let loads = [load(1, 2, 5), load(2, 0, 0)];
        assert_eq!(try_target(loads.into_iter(), 2, 8), Some(2));
    }

    #[test]
    fn at_the_bound_a_try_leaves_an_idle_connection_to_waits() {
        let loads = [load(1, 2, 5), load(2, 0, 0)];
        assert_eq!(try_target(loads.into_iter(), 2, 2), Some(1));
    }

    #[test]
    fn a_new_connection_opens_only_when_every_one_is_busy_and_the_bound_allows() {
        let loads = [load(1, 2, 5), load(2, 3, 0)];
        assert_eq!(try_target(loads.into_iter(), 2, 8), None);
        assert_eq!(try_target(loads.into_iter(), 2, 2), Some(1));
    }

    #[test]
    fn a_try_never_goes_where_a_wait_runs() {
        let waiting = Load {
            waiting: true,
            ..load(1, 0, 0)
        };
        assert_eq!(try_target([waiting].into_iter(), 1, 1), None);
        assert_eq!(
            try_target([waiting, load(2, 4, 1)].into_iter(), 2, 2),
            Some(2)
        );
    }
}
