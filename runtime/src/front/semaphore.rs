//! Transaction-scoped semaphores: at most N holders of a key at once, with
//! advisory locks alone.
//!
//! A semaphore of N permits on a key is N advisory locks, its permits (see
//! [`PermitIds`] for their ids); a holder holds one of them. The permit
//! ends with the holder's transaction, as a lock does.

use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;

use crate::contract::family::LockFamily;
use crate::contract::id::LockId;
use crate::contract::key::LockKey;
use crate::contract::namespace::Namespace;
use crate::contract::permit::{PermitIds, permit};
use crate::engine::measure::Outcome;
use crate::engine::permit::PermitWaiter;
use crate::engine::wait::{Wait, ensure_transaction};
use crate::error::Error;
use crate::identity::LockIdentity;
use crate::sql::semaphore::PermitAnswer;
use crate::sql::statements::Scope;

impl Namespace {
    /// A transaction-scoped semaphore of `permits` permits on `key`: at most
    /// `permits` transactions hold one of its permits at once. See
    /// [`XactSemaphore`]; `permits` is checked when it is acquired (1 to
    /// 1024, else [`Error::InvalidPermits`]).
    ///
    /// ```no_run
    /// # async fn run(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock_runtime::Error> {
    /// static IMPORTS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("imports:tenant");
    /// let permit = IMPORTS.semaphore(&"acme", 3).acquire(tx).await?;
    /// println!("import slot {} of 3", permit.index());
    /// # Ok(()) }
    /// ```
    pub fn semaphore<K: LockKey + ?Sized>(&self, key: &K, permits: u32) -> XactSemaphore<'_> {
        XactSemaphore {
            namespace: self,
            key_id: self.id(key),
            permits,
            wait: Wait::Unbounded,
        }
    }
}

impl<K: LockKey + ?Sized> LockFamily<K> {
    /// A transaction-scoped semaphore on `key`; see [`Namespace::semaphore`].
    ///
    /// ```no_run
    /// # async fn run(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock_runtime::Error> {
    /// static REPORTS: pglock_runtime::LockFamily<i64> = pglock_runtime::LockFamily::named("reports:tenant");
    /// REPORTS.semaphore(&42, 2).acquire(tx).await?;
    /// # Ok(()) }
    /// ```
    pub fn semaphore(&self, key: &K, permits: u32) -> XactSemaphore<'_> {
        self.namespace().semaphore(key, permits)
    }
}

/// Which permit of a semaphore an acquisition took, and what it observed.
///
/// ```no_run
/// # async fn run(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock_runtime::Error> {
/// # static CALLS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("partner:api");
/// let permit = CALLS.semaphore(&"partner", 4).acquire(tx).await?;
/// assert!(permit.index() < 4);
/// if let Some(waited) = permit.waited() {
///     println!("waited {waited:?} for a slot");
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permit {
    index: u32,
    id: LockId,
    permits: u32,
    waited: Option<Duration>,
}

impl Permit {
    pub(crate) fn new(permits: PermitIds, index: u32, waited: Option<Duration>) -> Self {
        Self {
            index,
            id: permit(permits.base(), index),
            permits: permits.len(),
            waited,
        }
    }

    /// The permit's index, from 0 to N - 1.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The permit's advisory lock id, as `pg_locks` shows it.
    pub fn id(&self) -> LockId {
        self.id
    }

    /// The semaphore's number of permits, N.
    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// How long a permit was waited for; `None` when one was free.
    pub fn waited(&self) -> Option<Duration> {
        self.waited
    }

    /// Whether every permit was busy at first.
    pub fn was_contended(&self) -> bool {
        self.waited.is_some()
    }
}

/// A transaction-scoped semaphore to take a permit of: made by
/// [`Namespace::semaphore`] (or [`LockFamily::semaphore`]), configured,
/// then acquired on a connection that is inside a transaction. The permit
/// ends with the transaction (commit or rollback), never earlier.
///
/// Never more than N transactions hold a permit at once, whoever they are,
/// as long as every holder gives the same N; a holder that gives fewer
/// than another is told so ([`Error::PermitsMismatch`]) when it would wait
/// for its permits (a try, or `no_wait`, says only that they are busy). A permit is held by a session: a transaction that asks
/// again for a semaphore it holds a permit of gets the same permit again.
///
/// A free permit costs one round trip. When every permit is busy, the wait
/// is one more statement that loops on the server: it queues for one
/// permit (which the server grants it the instant it is freed) and tries
/// every other one between slices of its wait (20 ms, then 40, 80 and
/// 100 ms), so a permit freed is taken within 100 ms, and within 20 ms of
/// a wait's start. A waiter that has waited longer keeps its place in its
/// permit's queue longer, so none is left behind by newer ones.
/// A timeout ends the wait with [`Error::Conflict`] and leaves the
/// transaction usable (the wait keeps its deadline itself, and restores
/// `lock_timeout` exactly); a cancel, `statement_timeout` or a deadlock
/// abort it, as for a lock.
///
/// ```no_run
/// use std::time::Duration;
/// use pglock_runtime::{Error, Namespace};
///
/// static EXPORTS: Namespace = Namespace::named("exports:heavy");
///
/// async fn export(pool: &sqlx::PgPool) -> Result<(), Error> {
///     let mut tx = pool.begin().await?;
///     let permit = EXPORTS
///         .semaphore(&"nightly", 3)
///         .timeout(Duration::from_secs(30))
///         .acquire(&mut tx)
///         .await?;
///     // ... at most three exports run this at once ...
///     tx.commit().await?;
///     Ok(())
/// }
/// ```
#[derive(Clone, Copy, Debug)]
#[must_use = "a semaphore request does nothing until it is acquired"]
pub struct XactSemaphore<'ns> {
    namespace: &'ns Namespace,
    key_id: LockId,
    permits: u32,
    wait: Wait,
}

impl XactSemaphore<'_> {
    semaphore_options!(
        /// Wait at most `timeout` for a permit: the deadline of the wait, which
        /// keeps a stricter `lock_timeout` of the caller's. Sub-millisecond
        /// parts round up; zero and more than `i32::MAX` milliseconds are
        /// refused with [`Error::InvalidTimeout`].
    );

    /// The semaphore, named by its permit 0, as errors and events name it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPermits`] unless the number of permits is 1 to 1024.
    pub fn identity(&self) -> Result<LockIdentity, Error> {
        Ok(self.waiter()?.identity())
    }

    pub(crate) fn silence_busy(mut self) -> Self {
        self.wait = self.wait.silenced();
        self
    }

    /// Takes a permit, waiting as configured. `conn` must be inside a
    /// transaction block: pass `&mut tx` for a `sqlx::Transaction`.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] when a wait ends without a permit,
    /// [`Error::Busy`] after [`XactSemaphore::no_wait`],
    /// [`Error::PermitsMismatch`], [`Error::InvalidPermits`],
    /// [`Error::NotInTransaction`], [`Error::Standby`],
    /// [`Error::LockTableFull`], [`Error::InvalidTimeout`] and
    /// [`Error::Database`].
    pub async fn acquire(self, conn: &mut PgConnection) -> Result<Permit, Error> {
        let cap_ms = self.wait.cap_ms()?;
        let waiter = self.waiter()?;
        ensure_transaction(conn)?;
        let start = waiter.start();
        let pid = match waiter.try_take(conn, Scope::Xact, start).await? {
            (PermitAnswer::Taken(index), _) => {
                waiter.count(Outcome::Acquired);
                return Ok(Permit::new(waiter.permits, index, None));
            }
            (PermitAnswer::None, pid) => pid,
            (PermitAnswer::Standby, _) => return Err(Error::Standby),
            (PermitAnswer::Mismatch { seen }, _) => return Err(waiter.mismatch(seen)),
        };
        if self.wait.is_no_wait() {
            return Err(waiter.busy(self.wait));
        }
        let started = Instant::now();
        let index = waiter.wait(conn, Scope::Xact, cap_ms, start, pid).await?;
        Ok(Permit::new(waiter.permits, index, Some(started.elapsed())))
    }

    /// Tries once, without waiting: the permit taken, or `None` when every
    /// permit is held.
    ///
    /// ```no_run
    /// # async fn run(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock_runtime::Error> {
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// match JOBS.semaphore(&"render", 8).try_acquire(tx).await? {
    ///     Some(permit) => println!("rendering in slot {}", permit.index()),
    ///     None => println!("eight renders run already"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn try_acquire(self, conn: &mut PgConnection) -> Result<Option<Permit>, Error> {
        let waiter = self.waiter()?;
        ensure_transaction(conn)?;
        match waiter.try_take(conn, Scope::Xact, waiter.start()).await? {
            (PermitAnswer::Taken(index), _) => {
                waiter.count(Outcome::Acquired);
                Ok(Some(Permit::new(waiter.permits, index, None)))
            }
            (PermitAnswer::None, _) => {
                waiter.count(Outcome::Busy);
                Ok(None)
            }
            (PermitAnswer::Standby, _) => Err(Error::Standby),
            (PermitAnswer::Mismatch { seen }, _) => Err(waiter.mismatch(seen)),
        }
    }
}
