//! Session locks that own their connection.
//!
//! A session-level advisory lock belongs to a backend, not to a transaction:
//! taken through a pool, it stays on whichever connection took it, and an
//! unlock sent through another connection silently does nothing. So here
//! acquiring *consumes* a connection (a pooled one is detached from its
//! pool), the guard gives it back only after an unlock that succeeded, and a
//! guard dropped without release closes the connection, which makes the
//! server free the lock. No function takes a `&PgPool`.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Postgres};

use crate::acquire::{Wait, WaitTarget, try_lock};
use crate::keys::Namespace;
use crate::statements::{Scope, TryStatus};
use crate::{Error, LockId, Mode};

/// A connection a session lock can own: a [`PgConnection`], or a pooled
/// connection, which is detached from its pool for good (a connection that
/// held a session lock must never be handed to another user of the pool).
///
/// ```no_run
/// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
/// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
/// let guard = JOBS.session_lock(&1_i64).acquire(pool.acquire().await?).await?;
/// # Ok(()) }
/// ```
#[diagnostic::on_unimplemented(
    message = "a session lock must own its connection, not borrow `{Self}`",
    label = "pass an owned connection here",
    note = "pass a `sqlx::PgConnection` or a `PoolConnection<Postgres>` (`pool.acquire().await?`): the lock lives on that connection, which is closed if the guard is dropped without release"
)]
pub trait IntoOwnedConnection {
    /// The connection, owned.
    ///
    /// ```no_run
    /// # async fn run(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    /// use pglock_runtime::IntoOwnedConnection;
    /// let conn: sqlx::PgConnection = pool.acquire().await?.into_owned_connection();
    /// # Ok(()) }
    /// ```
    fn into_owned_connection(self) -> PgConnection;
}

impl IntoOwnedConnection for PgConnection {
    fn into_owned_connection(self) -> PgConnection {
        self
    }
}

impl IntoOwnedConnection for PoolConnection<Postgres> {
    fn into_owned_connection(self) -> PgConnection {
        self.detach()
    }
}

/// A session-level advisory lock to take: made by
/// [`Namespace::session_lock`], configured, then acquired on a connection
/// it takes ownership of. Prefer transaction-scoped locks
/// ([`Namespace::lock`]); a session lock is for holders that outlive a
/// transaction (a leader, a long singleton job).
///
/// ```no_run
/// use std::time::Duration;
/// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
/// static SCHEDULER: pglock_runtime::Namespace = pglock_runtime::Namespace::named("scheduler");
///
/// let guard = SCHEDULER
///     .session_lock(&"poll")
///     .timeout(Duration::from_secs(5))
///     .acquire(pool.acquire().await?)
///     .await?;
/// // ... work through the pool; the lock stays on the guard's connection ...
/// let connection = guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug)]
#[must_use = "a lock request does nothing until it is acquired"]
pub struct SessionLock<'ns> {
    namespace: &'ns Namespace,
    id: LockId,
    mode: Mode,
    wait: Wait,
}

/// What [`SessionLock::try_acquire`] found.
///
/// ```no_run
/// # async fn run(conn: sqlx::PgConnection) -> Result<(), pglock_runtime::Error> {
/// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
/// use pglock_runtime::SessionTry;
/// let conn = match JOBS.session_lock(&1_i64).try_acquire(conn).await? {
///     SessionTry::Acquired(guard) => guard.release().await?,
///     SessionTry::Busy(conn) => conn,
/// };
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub enum SessionTry {
    /// The lock is held by the guard.
    Acquired(SessionGuard),
    /// Someone else holds the lock; here is the connection back, unchanged.
    Busy(PgConnection),
}

impl Namespace {
    /// A session-level lock on `key` in this namespace; see [`SessionLock`].
    ///
    /// ```
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// assert_eq!(JOBS.session_lock(&1_i64).id(), JOBS.id(&1_i64));
    /// ```
    pub fn session_lock<K: crate::LockKey + ?Sized>(&self, key: &K) -> SessionLock<'_> {
        SessionLock {
            namespace: self,
            id: self.id(key),
            mode: Mode::Exclusive,
            wait: Wait::Unbounded,
        }
    }
}

impl<'ns> SessionLock<'ns> {
    /// Take the lock in shared mode.
    ///
    /// ```
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// assert_eq!(JOBS.session_lock(&1_i64).shared().mode(), pglock_runtime::Mode::Shared);
    /// ```
    pub fn shared(self) -> Self {
        self.with_mode(Mode::Shared)
    }

    /// Take the lock in the given mode.
    ///
    /// ```
    /// # use pglock_runtime::Mode;
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// assert_eq!(JOBS.session_lock(&1_i64).with_mode(Mode::Shared).mode(), Mode::Shared);
    /// ```
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Wait at most `timeout`; see [`crate::XactLock::timeout`]. The cap
    /// and its restore happen within the one wait statement.
    ///
    /// ```
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// let lock = JOBS.session_lock(&1_i64).timeout(std::time::Duration::from_secs(1));
    /// ```
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.wait = Wait::AtMost(timeout);
        self
    }

    /// Don't wait: [`SessionLock::acquire`] fails with [`Error::Busy`].
    ///
    /// ```
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// let lock = JOBS.session_lock(&1_i64).no_wait();
    /// ```
    pub fn no_wait(mut self) -> Self {
        self.wait = Wait::No;
        self
    }

    /// The advisory lock id this request takes.
    ///
    /// ```
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// assert_eq!(JOBS.session_lock(&1_i64).id(), JOBS.id(&1_i64));
    /// ```
    pub fn id(&self) -> LockId {
        self.id
    }

    /// The mode this request takes.
    ///
    /// ```
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// assert_eq!(JOBS.session_lock(&1_i64).mode(), pglock_runtime::Mode::Exclusive);
    /// ```
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Takes the lock on `connection`, waiting as configured, and returns
    /// the guard that owns both. On any error the connection is closed, so
    /// nothing can be left half-locked.
    ///
    /// If this future is dropped while it waits, the connection is closed
    /// and the server abandons the wait within about a second (the wait
    /// statement sets `client_connection_check_interval`).
    ///
    /// ```no_run
    /// # async fn run(conn: sqlx::PgConnection) -> Result<(), pglock_runtime::Error> {
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// let guard = JOBS.session_lock(&1_i64).acquire(conn).await?;
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn acquire(
        self,
        connection: impl IntoOwnedConnection,
    ) -> Result<SessionGuard, Error> {
        let cap_ms = self.wait.cap_ms()?;
        let target = WaitTarget {
            namespace: self.namespace,
            id: self.id,
            mode: self.mode,
        };
        match self.try_once(connection.into_owned_connection()).await? {
            SessionTry::Acquired(guard) => Ok(guard),
            SessionTry::Busy(_) if self.wait == Wait::No => {
                target.report_not_waiting();
                Err(self.busy())
            }
            SessionTry::Busy(mut conn) => {
                // The pid only serves to cancel abandoned transaction waits;
                // an abandoned session wait closes its own connection.
                let pid = 0;
                target.report_busy(cap_ms);
                let started = Instant::now();
                let outcome = target
                    .wait(&mut conn, Scope::Session, cap_ms, false, started, pid)
                    .await;
                target.report_outcome(&outcome, started);
                outcome?;
                Ok(self.guard(conn))
            }
        }
    }

    /// Tries the lock once: the guard when it is free, the connection back
    /// when someone else holds it.
    ///
    /// ```no_run
    /// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// use pglock_runtime::SessionTry;
    /// match JOBS.session_lock(&1_i64).try_acquire(pool.acquire().await?).await? {
    ///     SessionTry::Acquired(guard) => { /* run the job */ guard.release().await?; }
    ///     SessionTry::Busy(_connection) => { /* another worker runs it */ }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn try_acquire(
        self,
        connection: impl IntoOwnedConnection,
    ) -> Result<SessionTry, Error> {
        let outcome = self.try_once(connection.into_owned_connection()).await?;
        if let SessionTry::Busy(_) = outcome {
            WaitTarget {
                namespace: self.namespace,
                id: self.id,
                mode: self.mode,
            }
            .report_not_waiting();
        }
        Ok(outcome)
    }

    async fn try_once(&self, mut conn: PgConnection) -> Result<SessionTry, Error> {
        let statements = self.namespace.statements();
        match try_lock(&mut conn, statements, Scope::Session, self.mode, self.id).await? {
            TryStatus::Acquired => Ok(SessionTry::Acquired(self.guard(conn))),
            TryStatus::Busy { .. } => Ok(SessionTry::Busy(conn)),
            TryStatus::Standby => Err(Error::Standby),
        }
    }

    /// Takes the lock as a [`Lease`](crate::Lease): a guard that keeps
    /// checking its connection and says when the lock was lost; see
    /// [`crate::Lease`].
    ///
    /// ```no_run
    /// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
    /// # static LEADER: pglock_runtime::Namespace = pglock_runtime::Namespace::named("leader");
    /// use pglock_runtime::LeaseOptions;
    /// let mut lease = LEADER
    ///     .session_lock(&"cluster")
    ///     .acquire_lease(pool.acquire().await?, LeaseOptions::default())
    ///     .await?;
    /// tokio::select! {
    ///     lost = lease.lost() => eprintln!("no longer the leader: {lost}"),
    ///     _ = lead() => {}
    /// }
    /// # Ok(()) }
    /// # async fn lead() {}
    /// ```
    pub async fn acquire_lease(
        self,
        connection: impl IntoOwnedConnection,
        options: crate::LeaseOptions,
    ) -> Result<crate::Lease, Error> {
        let guard = self.acquire(connection).await?;
        Ok(crate::lease::Lease::start(guard, options))
    }

    fn guard(&self, conn: PgConnection) -> SessionGuard {
        SessionGuard {
            conn: Some(conn),
            held: HeldLock {
                namespace: Arc::from(self.namespace.label()),
                unlock_sql: self.namespace.statements().unlock(self.mode),
                id: self.id,
                mode: self.mode,
            },
        }
    }

    fn busy(&self) -> Error {
        Error::Busy {
            namespace: self.namespace.label().to_owned(),
            id: self.id,
            mode: self.mode,
        }
    }
}

/// What a guard needs to know about its lock, without borrowing the
/// namespace: a leader's guard may outlive every borrow.
#[derive(Clone, Debug)]
pub(crate) struct HeldLock {
    pub(crate) namespace: Arc<str>,
    unlock_sql: Arc<str>,
    pub(crate) id: LockId,
    pub(crate) mode: Mode,
}

impl HeldLock {
    /// Unlocks on `conn`; an unlock that finds nothing to release means the
    /// lock was lost (the session is not the one that took it).
    pub(crate) async fn unlock(&self, conn: &mut PgConnection) -> Result<(), Error> {
        let query = sqlx::query_scalar::<Postgres, bool>(AssertSqlSafe(self.unlock_sql.clone()));
        let released = match self.id {
            LockId::BigInt(id) => query.bind(id),
            LockId::Pair(class, id) => query.bind(class).bind(id),
        }
        .fetch_one(conn)
        .await
        .map_err(Error::from_sqlx)?;
        if released { Ok(()) } else { Err(self.lost()) }
    }

    pub(crate) fn lost(&self) -> Error {
        Error::LockLost {
            namespace: self.namespace.to_string(),
            id: self.id,
            mode: self.mode,
        }
    }
}

/// A held session lock and the connection it lives on.
///
/// [`SessionGuard::release`] unlocks and hands the connection back. A guard
/// dropped without release (an early return, a panic, a cancelled task)
/// closes its connection instead: the server ends the session and frees the
/// lock, and the connection can never reach a pool still holding it.
///
/// ```no_run
/// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
/// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
/// let mut guard = JOBS.session_lock(&"reports").acquire(pool.acquire().await?).await?;
/// sqlx::query("REFRESH MATERIALIZED VIEW daily_report").execute(guard.connection()).await?;
/// let connection = guard.release().await?;
/// # Ok(()) }
/// ```
pub struct SessionGuard {
    conn: Option<PgConnection>,
    held: HeldLock,
}

impl SessionGuard {
    /// Unlocks and returns the connection, now holding nothing. If the
    /// unlock fails or finds the lock gone, the connection is closed and the
    /// error returned.
    ///
    /// ```no_run
    /// # async fn run(guard: pglock_runtime::SessionGuard) -> Result<(), pglock_runtime::Error> {
    /// let connection = guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn release(mut self) -> Result<PgConnection, Error> {
        let mut conn = self.conn.take().expect("a guard owns its connection");
        self.held.unlock(&mut conn).await?;
        Ok(conn)
    }

    /// The connection the lock lives on, for work that should run on it.
    ///
    /// ```no_run
    /// # async fn run(mut guard: pglock_runtime::SessionGuard) -> Result<(), sqlx::Error> {
    /// sqlx::query("SELECT 1").execute(guard.connection()).await?;
    /// # Ok(()) }
    /// ```
    pub fn connection(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("a guard owns its connection")
    }

    /// The label of the lock's namespace.
    ///
    /// ```no_run
    /// # async fn run(conn: sqlx::PgConnection) -> Result<(), pglock_runtime::Error> {
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// let guard = JOBS.session_lock(&1_i64).acquire(conn).await?;
    /// assert_eq!(guard.namespace(), "jobs");
    /// # Ok(()) }
    /// ```
    pub fn namespace(&self) -> &str {
        &self.held.namespace
    }

    /// The advisory lock id held.
    ///
    /// ```no_run
    /// # async fn run(conn: sqlx::PgConnection) -> Result<(), pglock_runtime::Error> {
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// let guard = JOBS.session_lock(&1_i64).acquire(conn).await?;
    /// assert_eq!(guard.id(), JOBS.id(&1_i64));
    /// # Ok(()) }
    /// ```
    pub fn id(&self) -> LockId {
        self.held.id
    }

    /// The mode held.
    ///
    /// ```no_run
    /// # async fn run(conn: sqlx::PgConnection) -> Result<(), pglock_runtime::Error> {
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// let guard = JOBS.session_lock(&1_i64).shared().acquire(conn).await?;
    /// assert_eq!(guard.mode(), pglock_runtime::Mode::Shared);
    /// # Ok(()) }
    /// ```
    pub fn mode(&self) -> Mode {
        self.held.mode
    }

    pub(crate) fn into_parts(mut self) -> (PgConnection, HeldLock) {
        let conn = self.conn.take().expect("a guard owns its connection");
        (conn, self.held.clone())
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            tracing::warn!(
                target: "pglock",
                namespace = &*self.held.namespace,
                key = %self.held.id,
                mode = %self.held.mode,
                "session lock guard dropped without release; closing its connection to free the lock"
            );
            // Closing the socket ends the backend, and with it the lock.
            drop(conn);
        }
    }
}

impl fmt::Debug for SessionGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionGuard")
            .field("namespace", &self.held.namespace)
            .field("id", &self.held.id)
            .field("mode", &self.held.mode)
            .field("released", &self.conn.is_none())
            .finish()
    }
}
