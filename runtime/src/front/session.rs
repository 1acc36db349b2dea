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
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Postgres, Row};

use crate::contract::family::LockFamily;
use crate::contract::id::LockId;
use crate::contract::key::LockKey;
use crate::contract::mode::Mode;
use crate::contract::namespace::Namespace;
use crate::engine::events;
use crate::engine::measure::{self, HoldMeter, Outcome};
use crate::engine::wait::{Wait, Waiter, try_lock};
use crate::error::{Error, ends_session};
use crate::front::fencing::{self, FencingToken};
use crate::front::loss::CheckOptions;
use crate::front::semaphore::Permit;
use crate::identity::LockIdentity;
use crate::sql::statements::{Scope, TryStatus, bind_id};

impl Namespace {
    /// A session-level lock on `key` in this namespace; see [`SessionLock`].
    ///
    /// ```no_run
    /// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
    /// static SCHEDULER: pglock_runtime::Namespace = pglock_runtime::Namespace::named("scheduler");
    /// let guard = SCHEDULER.session_lock(&"poll").acquire(pool.acquire().await?).await?;
    /// // ... the lock stays on the guard's connection until release ...
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn session_lock<K: LockKey + ?Sized>(&self, key: &K) -> SessionLock<'_> {
        SessionLock {
            lock: Waiter {
                namespace: self,
                id: self.id(key),
                mode: Mode::Exclusive,
            },
            wait: Wait::Unbounded,
            fencing: false,
            release_timeout: CheckOptions::default().timeout(),
        }
    }
}

impl<K: LockKey + ?Sized> LockFamily<K> {
    /// A session-level lock on `key`; see [`Namespace::session_lock`].
    ///
    /// ```no_run
    /// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
    /// static TENANTS: pglock_runtime::LockFamily<i64> = pglock_runtime::LockFamily::named("tenant:import");
    /// let guard = TENANTS.session_lock(&42).acquire(pool.acquire().await?).await?;
    /// // ... tenant 42's import, across as many transactions as it takes ...
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn session_lock(&self, key: &K) -> SessionLock<'_> {
        self.namespace().session_lock(key)
    }
}

/// A connection a session lock can own: a [`PgConnection`], or a pooled
/// connection, which is detached from its pool for good (a connection that
/// held a session lock must never be handed to another user of the pool).
///
/// Sealed: implemented for those two types only.
#[diagnostic::on_unimplemented(
    message = "a session lock must own its connection, not borrow `{Self}`",
    label = "pass an owned connection here",
    note = "pass a `sqlx::PgConnection` or a `PoolConnection<Postgres>` (`pool.acquire().await?`): the lock lives on that connection, which is closed if the guard is dropped without release"
)]
pub trait IntoOwnedConnection: sealed::Sealed {
    /// The connection, owned.
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

mod sealed {
    pub trait Sealed {}
    impl Sealed for sqlx::postgres::PgConnection {}
    impl Sealed for sqlx::pool::PoolConnection<sqlx::Postgres> {}
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
    lock: Waiter<'ns>,
    wait: Wait,
    fencing: bool,
    release_timeout: Duration,
}

/// What [`SessionLock::try_acquire`] found.
#[derive(Debug)]
pub enum SessionTry {
    /// The lock is held by the guard.
    Acquired(SessionGuard),
    /// Someone else holds the lock; here is the connection back, unchanged.
    Busy(PgConnection),
}

impl SessionLock<'_> {
    request_options!();

    /// Ask for a [`FencingToken`] at acquisition (one more round trip and a
    /// durable commit): [`SessionGuard::fencing_token`] and
    /// [`Lease::fencing_token`](crate::Lease::fencing_token) give it. For an
    /// exclusive lock only, on a connection in no transaction: otherwise
    /// [`Error::FencingToken`], and no lock is held.
    pub fn with_fencing_token(mut self) -> Self {
        self.fencing = true;
        self
    }

    /// How long [`SessionGuard::release`] waits for the server's answer to
    /// its unlock before it closes the connection and reports
    /// [`Error::LockLost`]: 5 s unless set, the check timeout of
    /// [`CheckOptions::default`]. Without it, a release through a network
    /// that stopped answering would wait for the kernel's TCP timeout,
    /// many minutes. A [`Lease`](crate::Lease) bounds its release by the
    /// timeout of its own [`CheckOptions`] instead.
    ///
    /// ```no_run
    /// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// use std::time::Duration;
    /// let guard = JOBS
    ///     .session_lock(&"reports")
    ///     .release_timeout(Duration::from_secs(2))
    ///     .acquire(pool.acquire().await?)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn release_timeout(mut self, timeout: Duration) -> Self {
        self.release_timeout = timeout;
        self
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
        self.fencing_allowed()?;
        match self.try_once(connection.into_owned_connection()).await? {
            SessionTry::Acquired(guard) => Ok(guard),
            SessionTry::Busy(_) if self.wait.is_no_wait() => Err(self.lock.busy(self.wait)),
            SessionTry::Busy(mut conn) => {
                // The pid only serves to cancel abandoned transaction waits;
                // an abandoned session wait closes its own connection.
                let pid = 0;
                self.lock
                    .wait(
                        &mut conn,
                        Scope::Session,
                        cap_ms,
                        false,
                        Instant::now(),
                        pid,
                    )
                    .await?;
                self.guard(conn).await
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
        self.fencing_allowed()?;
        let outcome = self.try_once(connection.into_owned_connection()).await?;
        if let SessionTry::Busy(_) = outcome {
            events::not_waiting(&self.lock.identity());
        }
        Ok(outcome)
    }

    /// A fencing token is for an exclusive lock.
    fn fencing_allowed(&self) -> Result<(), Error> {
        if self.fencing && self.lock.mode == Mode::Shared {
            return Err(Error::FencingToken {
                reason: fencing::SHARED,
            });
        }
        Ok(())
    }

    async fn try_once(&self, mut conn: PgConnection) -> Result<SessionTry, Error> {
        let statements = self.lock.namespace.statements();
        match try_lock(
            &mut conn,
            statements,
            Scope::Session,
            self.lock.mode,
            self.lock.id,
        )
        .await?
        {
            TryStatus::Acquired => {
                let guard = self.guard(conn).await?;
                let lock = self.lock.namespace.shared_label();
                measure::acquisition(lock, self.lock.mode, Outcome::Acquired);
                Ok(SessionTry::Acquired(guard))
            }
            TryStatus::Busy { .. } => Ok(SessionTry::Busy(conn)),
            TryStatus::Standby => Err(Error::Standby),
        }
    }

    /// The guard of the lock granted on `conn`, with its fencing token when
    /// asked for. When the token can't be had, `conn` is closed (and the
    /// lock with it) and the error returned.
    async fn guard(&self, mut conn: PgConnection) -> Result<SessionGuard, Error> {
        let token = match self.fencing {
            true => Some(fencing::issue(&mut conn).await?),
            false => None,
        };
        let lock = self.lock.identity();
        Ok(SessionGuard::holding(
            conn,
            HeldLock {
                lock,
                unlock_sql: self.lock.namespace.statements().unlock(self.lock.mode),
                token,
                release_timeout: self.release_timeout,
                permit: None,
            },
        ))
    }
}

/// What a guard needs to know about its lock, without borrowing the
/// namespace: a leader's guard may outlive every borrow.
#[derive(Clone, Debug)]
pub(crate) struct HeldLock {
    pub(crate) lock: LockIdentity,
    unlock_sql: Arc<str>,
    /// The fencing token taken at acquisition, when asked for.
    pub(crate) token: Option<FencingToken>,
    /// How long an unlock may take before the lock counts as lost.
    release_timeout: Duration,
    /// Which permit of a semaphore the lock is, when it is one.
    pub(crate) permit: Option<Permit>,
}

impl HeldLock {
    /// Permit `permit` of a semaphore in `namespace`, held by its session.
    pub(crate) fn permit(namespace: &Namespace, permit: Permit, release_timeout: Duration) -> Self {
        Self {
            lock: namespace.identity(permit.id(), Mode::Exclusive),
            unlock_sql: namespace.statements().unlock(Mode::Exclusive),
            token: None,
            release_timeout,
            permit: Some(permit),
        }
    }

    /// Unlocks on `conn`; an unlock that finds nothing to release means the
    /// lock was lost (the session is not the one that took it), and so does
    /// one whose session is over (the connection broke, the server stopped
    /// or ended the backend): the lock ended with the session; and one that
    /// gets no answer within the release timeout: the caller then closes
    /// `conn`, whose statement is left unanswered.
    pub(crate) async fn unlock(&self, conn: &mut PgConnection) -> Result<(), Error> {
        let query = sqlx::query(AssertSqlSafe(self.unlock_sql.clone()));
        let unlock = bind_id(query, self.lock.id()).fetch_one(conn);
        let released = match tokio::time::timeout(self.release_timeout, unlock).await {
            Ok(answer) => answer.and_then(|row| row.try_get::<bool, _>(0)),
            Err(_) => {
                events::release_unanswered(&self.lock, self.release_timeout);
                Ok(false)
            }
        };
        match released {
            Ok(true) => Ok(()),
            Ok(false) => {
                measure::acquisition(self.lock.label(), self.lock.mode(), Outcome::Lost);
                Err(self.lost())
            }
            Err(error) if ends_session(&error) => {
                measure::acquisition(self.lock.label(), self.lock.mode(), Outcome::Lost);
                Err(self.lost())
            }
            Err(error) => Err(Error::from_sqlx(error)),
        }
    }

    /// Bounds the unlock by `timeout` instead (a lease's check timeout).
    pub(crate) fn with_release_timeout(mut self, timeout: Duration) -> Self {
        self.release_timeout = timeout;
        self
    }

    pub(crate) fn lost(&self) -> Error {
        Error::LockLost(self.lock.clone())
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
    /// Counts the lock as held until the guard (or the lease made of it) ends.
    meter: Option<HoldMeter>,
}

impl SessionGuard {
    /// The guard of `held`, granted on `conn`.
    pub(crate) fn holding(conn: PgConnection, held: HeldLock) -> Self {
        SessionGuard {
            conn: Some(conn),
            meter: Some(HoldMeter::start(&held.lock)),
            held,
        }
    }

    /// Unlocks and returns the connection, now holding nothing. If the
    /// unlock fails or finds the lock gone, the connection is closed and the
    /// error returned: [`Error::LockLost`] when the lock was gone, or its
    /// session is (the connection broke, the server stopped, a failover);
    /// so it is when the server does not answer within the release timeout
    /// ([`SessionLock::release_timeout`], 5 s by default), since whether the
    /// server still holds the lock can't be told, and it frees it once it
    /// notices the closed (or silent) connection: a guard's connection is
    /// the caller's, whose TCP settings pglock leaves alone, so behind a
    /// network that stops answering that takes the server's keepalive
    /// defaults (on Linux, 2 h 11 min); a [`Lease`](crate::Lease) sets them
    /// (see [`CheckOptions::server_release_bound`](crate::CheckOptions::server_release_bound)).
    ///
    /// ```no_run
    /// # async fn run(guard: pglock_runtime::SessionGuard, pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
    /// match guard.release().await {
    ///     // The connection holds nothing now: it may go back to work.
    ///     Ok(connection) => drop(connection),
    ///     // The lock was gone before the release: someone may have run
    ///     // the same work meanwhile.
    ///     Err(pglock_runtime::Error::LockLost(lock)) => eprintln!("{lock} was lost"),
    ///     Err(other) => return Err(other),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn release(mut self) -> Result<PgConnection, Error> {
        let mut conn = self.conn.take().expect("a guard owns its connection");
        self.held.unlock(&mut conn).await?;
        Ok(conn)
    }

    /// The connection the lock lives on, for work that should run on it.
    pub fn connection(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("a guard owns its connection")
    }

    /// The lock held.
    pub fn lock(&self) -> &LockIdentity {
        &self.held.lock
    }

    /// The fencing token taken when the lock was granted; `None` unless
    /// asked for with [`SessionLock::with_fencing_token`].
    pub fn fencing_token(&self) -> Option<FencingToken> {
        self.held.token
    }

    /// Which permit of a semaphore the guard holds; `None` for a lock
    /// ([`SessionLock`]). See [`Namespace::session_semaphore`].
    pub fn permit(&self) -> Option<Permit> {
        self.held.permit
    }

    pub(crate) fn into_parts(mut self) -> (PgConnection, HeldLock, Option<HoldMeter>) {
        let conn = self.conn.take().expect("a guard owns its connection");
        (conn, self.held.clone(), self.meter.take())
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            events::guard_dropped(&self.held.lock);
            // Closing the socket ends the backend, and with it the lock.
            drop(conn);
        }
    }
}

impl fmt::Debug for SessionGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionGuard")
            .field("lock", &self.held.lock)
            .field("released", &self.conn.is_none())
            .finish()
    }
}
