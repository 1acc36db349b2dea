//! Session-level semaphores: a permit held by a guard that owns its
//! connection, or by a lease, across as many transactions as it takes.
//!
//! A permit is a session lock on the permit's id, so the guard is the
//! [`SessionGuard`] of a lock, and the lease the [`Lease`]: they release,
//! close, check and report a loss exactly as for a lock, and say which
//! permit they hold ([`SessionGuard::permit`], [`Lease::permit`]).

use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;

use crate::contract::family::LockFamily;
use crate::contract::id::LockId;
use crate::contract::key::LockKey;
use crate::contract::namespace::Namespace;
use crate::contract::permit::PermitIds;
use crate::engine::events;
use crate::engine::measure::Outcome;
use crate::engine::permit::PermitWaiter;
use crate::engine::wait::Wait;
use crate::error::Error;
use crate::front::lease::{self, Lease};
use crate::front::loss::CheckOptions;
use crate::front::semaphore::Permit;
use crate::front::session::{HeldLock, IntoOwnedConnection, SessionGuard, SessionTry};
use crate::sql::semaphore::PermitAnswer;
use crate::sql::statements::Scope;

impl Namespace {
    /// A session-level semaphore of `permits` permits on `key`: at most
    /// `permits` sessions hold one of its permits at once. See
    /// [`SessionSemaphore`].
    ///
    /// ```no_run
    /// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
    /// static CRAWLERS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("crawl:site");
    /// let guard = CRAWLERS.session_semaphore(&"example.org", 2).acquire(pool.acquire().await?).await?;
    /// // ... one of at most two crawlers of the site, across many transactions ...
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn session_semaphore<K: LockKey + ?Sized>(
        &self,
        key: &K,
        permits: u32,
    ) -> SessionSemaphore<'_> {
        SessionSemaphore {
            namespace: self,
            key_id: self.id(key),
            permits,
            wait: Wait::Unbounded,
            release_timeout: CheckOptions::default().timeout(),
        }
    }
}

impl<K: LockKey + ?Sized> LockFamily<K> {
    /// A session-level semaphore on `key`; see
    /// [`Namespace::session_semaphore`].
    pub fn session_semaphore(&self, key: &K, permits: u32) -> SessionSemaphore<'_> {
        self.namespace().session_semaphore(key, permits)
    }
}

/// A session-level semaphore to take a permit of: made by
/// [`Namespace::session_semaphore`], configured, then acquired on a
/// connection it takes ownership of, as a [`SessionLock`](crate::SessionLock)
/// is: the permit stays on that connection until the guard is released,
/// and a guard dropped without release closes it (the server frees the
/// permit). Waits, timeouts and the number of permits behave as for
/// [`XactSemaphore`](crate::XactSemaphore).
///
/// ```no_run
/// use std::time::Duration;
/// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
/// static WORKERS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("gpu:workers");
///
/// let guard = WORKERS
///     .session_semaphore(&"node-1", 4)
///     .timeout(Duration::from_secs(5))
///     .acquire(pool.acquire().await?)
///     .await?;
/// println!("GPU slot {}", guard.permit().unwrap().index());
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug)]
#[must_use = "a semaphore request does nothing until it is acquired"]
pub struct SessionSemaphore<'ns> {
    namespace: &'ns Namespace,
    key_id: LockId,
    permits: u32,
    wait: Wait,
    release_timeout: Duration,
}

impl SessionSemaphore<'_> {
    semaphore_options!(
        /// Wait at most `timeout` for a permit; see
        /// [`XactSemaphore::timeout`](crate::XactSemaphore::timeout).
    );

    /// How long a guard's release waits for the server's answer; see
    /// [`SessionLock::release_timeout`](crate::SessionLock::release_timeout).
    pub fn release_timeout(mut self, timeout: Duration) -> Self {
        self.release_timeout = timeout;
        self
    }

    /// Takes a permit on `connection`, waiting as configured, and returns
    /// the guard that owns both; [`SessionGuard::permit`] says which. On
    /// any error the connection is closed, so nothing can be left
    /// half-held. If this future is dropped while it waits, the connection
    /// is closed and the server abandons the wait within about a second.
    ///
    /// # Errors
    ///
    /// As [`XactSemaphore::acquire`](crate::XactSemaphore::acquire), but
    /// for [`Error::NotInTransaction`].
    pub async fn acquire(
        self,
        connection: impl IntoOwnedConnection,
    ) -> Result<SessionGuard, Error> {
        let cap_ms = self.wait.cap_ms()?;
        let waiter = self.waiter()?;
        let mut conn = connection.into_owned_connection();
        let start = waiter.start();
        match waiter.try_take(&mut conn, Scope::Session, start).await? {
            (PermitAnswer::Taken(index), _) => {
                waiter.count(Outcome::Acquired);
                return Ok(self.guard(&waiter, conn, index, None));
            }
            (PermitAnswer::None, _) if self.wait.is_no_wait() => {
                return Err(waiter.busy(self.wait));
            }
            (PermitAnswer::None, _) => {}
            (PermitAnswer::Standby, _) => return Err(Error::Standby),
            (PermitAnswer::Mismatch { seen }, _) => return Err(waiter.mismatch(seen)),
        }
        let started = Instant::now();
        // The pid only serves to cancel abandoned transaction waits; an
        // abandoned session wait closes its own connection.
        let index = waiter
            .wait(&mut conn, Scope::Session, cap_ms, start, 0)
            .await?;
        Ok(self.guard(&waiter, conn, index, Some(started.elapsed())))
    }

    /// Tries once: the guard when a permit is free, the connection back,
    /// unchanged, when every permit is held.
    pub async fn try_acquire(
        self,
        connection: impl IntoOwnedConnection,
    ) -> Result<SessionTry, Error> {
        let waiter = self.waiter()?;
        let mut conn = connection.into_owned_connection();
        match waiter
            .try_take(&mut conn, Scope::Session, waiter.start())
            .await?
        {
            (PermitAnswer::Taken(index), _) => {
                waiter.count(Outcome::Acquired);
                Ok(SessionTry::Acquired(self.guard(&waiter, conn, index, None)))
            }
            (PermitAnswer::None, _) => {
                events::not_waiting(&waiter.identity());
                Ok(SessionTry::Busy(conn))
            }
            (PermitAnswer::Standby, _) => Err(Error::Standby),
            (PermitAnswer::Mismatch { seen }, _) => Err(waiter.mismatch(seen)),
        }
    }

    /// Takes a permit as a [`Lease`]: a guard that keeps checking its
    /// connection and says when the permit was lost ([`Lease::permit`]
    /// says which). The server's keepalives are set first, as for
    /// [`SessionLock::acquire_lease`](crate::SessionLock::acquire_lease).
    ///
    /// ```no_run
    /// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
    /// # static SHARDS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("consumers");
    /// use pglock_runtime::CheckOptions;
    /// let mut lease = SHARDS
    ///     .session_semaphore(&"orders", 3)
    ///     .acquire_lease(pool.acquire().await?, CheckOptions::default())
    ///     .await?;
    /// let shard = lease.permit().unwrap().index();
    /// tokio::select! {
    ///     lost = lease.lost() => eprintln!("no longer consumer {shard}: {lost}"),
    ///     _ = consume(shard) => {}
    /// }
    /// # Ok(()) }
    /// # async fn consume(_: u32) {}
    /// ```
    pub async fn acquire_lease(
        self,
        connection: impl IntoOwnedConnection,
        options: CheckOptions,
    ) -> Result<Lease, Error> {
        lease::lease_on(connection, options, |conn| self.acquire(conn)).await
    }

    fn guard(
        &self,
        waiter: &PermitWaiter<'_>,
        conn: PgConnection,
        index: u32,
        waited: Option<Duration>,
    ) -> SessionGuard {
        let permit = Permit::new(waiter.permits, index, waited);
        let held = HeldLock::permit(self.namespace, permit, self.release_timeout);
        SessionGuard::holding(conn, held)
    }
}
