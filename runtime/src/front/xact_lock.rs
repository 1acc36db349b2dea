//! Transaction-scoped locks on one key.

use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;
use sqlx::{PgPool, Postgres, Transaction};

use crate::contract::family::LockFamily;
use crate::contract::id::LockId;
use crate::contract::key::LockKey;
use crate::contract::mode::Mode;
use crate::contract::namespace::Namespace;
use crate::engine::contention;
use crate::engine::measure::{self, Outcome};
use crate::engine::wait::{Wait, Waiter, ensure_transaction, try_lock};
use crate::error::Error;
use crate::sql::statements::{Scope, TryStatus};

impl Namespace {
    /// A transaction-scoped lock on `key` in this namespace, to configure and
    /// then acquire; see [`XactLock`].
    ///
    /// ```no_run
    /// # use pglock_runtime::Namespace;
    /// # async fn settle(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, invoice: uuid::Uuid) -> Result<(), pglock_runtime::Error> {
    /// static INVOICES: Namespace = Namespace::named("billing:invoice");
    /// INVOICES
    ///     .lock(&invoice)
    ///     .shared()
    ///     .timeout(std::time::Duration::from_secs(5))
    ///     .acquire(tx)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn lock<K: LockKey + ?Sized>(&self, key: &K) -> XactLock<'_> {
        XactLock::new(self, self.id(key))
    }
}

impl<K: LockKey + ?Sized> LockFamily<K> {
    /// A transaction-scoped lock on `key`; see [`Namespace::lock`].
    ///
    /// ```no_run
    /// # use pglock_runtime::LockFamily;
    /// # async fn run(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock_runtime::Error> {
    /// static USERS: LockFamily<i64> = LockFamily::named("accounts:user");
    /// USERS.lock(&42).acquire(tx).await?;
    /// # Ok(()) }
    /// ```
    pub fn lock(&self, key: &K) -> XactLock<'_> {
        self.namespace().lock(key)
    }
}

/// What an acquisition observed.
///
/// ```no_run
/// # async fn run(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock_runtime::Error> {
/// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
/// let acquired = JOBS.lock(&7_i64).acquire(tx).await?;
/// if let Some(waited) = acquired.waited() {
///     println!("waited {waited:?} for job 7");
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acquired {
    waited: Option<Duration>,
}

impl Acquired {
    pub(crate) const FREE: Acquired = Acquired { waited: None };

    pub(crate) fn after_waiting_since(started: Instant) -> Self {
        Acquired {
            waited: Some(started.elapsed()),
        }
    }

    /// How long the lock was waited for; `None` when it was free.
    pub fn waited(&self) -> Option<Duration> {
        self.waited
    }

    /// Whether the lock was busy at first.
    pub fn was_contended(&self) -> bool {
        self.waited.is_some()
    }
}

/// A transaction-scoped advisory lock to take: made by [`Namespace::lock`]
/// (or [`LockFamily::lock`]), configured, then acquired on a connection that
/// is inside a transaction. The lock ends with the transaction (commit or
/// rollback), never earlier.
///
/// By default the lock is exclusive and the wait is bounded only by the
/// caller's own `lock_timeout` and `statement_timeout`.
///
/// ```no_run
/// use std::time::Duration;
/// use pglock_runtime::{Error, Namespace};
///
/// static INVOICES: Namespace = Namespace::named("billing:invoice");
///
/// async fn settle(pool: &sqlx::PgPool, invoice: uuid::Uuid) -> Result<(), Error> {
///     let mut tx = pool.begin().await?;
///     INVOICES
///         .lock(&invoice)
///         .timeout(Duration::from_secs(5))
///         .acquire(&mut tx)
///         .await?;
///     // ... the invoice is ours until the transaction ends ...
///     tx.commit().await?;
///     Ok(())
/// }
/// ```
#[derive(Clone, Copy, Debug)]
#[must_use = "a lock request does nothing until it is acquired"]
pub struct XactLock<'ns> {
    lock: Waiter<'ns>,
    wait: Wait,
    savepoint: bool,
}

impl<'ns> XactLock<'ns> {
    pub(crate) fn new(namespace: &'ns Namespace, id: LockId) -> Self {
        Self {
            lock: Waiter {
                namespace,
                id,
                mode: Mode::Exclusive,
            },
            wait: Wait::Unbounded,
            savepoint: false,
        }
    }

    request_options!();

    /// Wait inside a savepoint, so that a conflict leaves the transaction
    /// usable, with every lock it held before. Costs nothing when the lock
    /// is free; a wait takes one round trip more on failure only.
    pub fn in_savepoint(mut self) -> Self {
        self.savepoint = true;
        self
    }

    pub(crate) fn with_wait(mut self, wait: Wait) -> Self {
        self.wait = wait;
        self
    }

    pub(crate) fn silence_busy(mut self) -> Self {
        self.wait = self.wait.silenced();
        self
    }

    /// Takes the lock, waiting as configured. `conn` must be inside a
    /// transaction block: pass `&mut tx` for a `sqlx::Transaction`.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] when a wait ends without the lock, [`Error::Busy`]
    /// after [`XactLock::no_wait`], [`Error::NotInTransaction`],
    /// [`Error::Standby`], [`Error::LockTableFull`], [`Error::InvalidTimeout`]
    /// and [`Error::Database`].
    ///
    /// ```no_run
    /// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// let mut tx = pool.begin().await?;
    /// JOBS.lock(&1_i64).acquire(&mut tx).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn acquire(self, conn: &mut PgConnection) -> Result<Acquired, Error> {
        let cap_ms = self.wait.cap_ms()?;
        // A lock found busy lately is tried and waited for in one statement
        // (a savepoint wait needs statements of its own).
        if !self.wait.is_no_wait() && !self.savepoint && contention::expected(self.lock.id) {
            ensure_transaction(conn)?;
            return Ok(match self.lock.take_or_wait(conn, cap_ms).await? {
                None => Acquired::FREE,
                Some(started) => Acquired::after_waiting_since(started),
            });
        }
        let pid = match self.try_once(conn).await? {
            TryStatus::Acquired => {
                self.count(Outcome::Acquired);
                return Ok(Acquired::FREE);
            }
            TryStatus::Busy { pid } => pid,
            TryStatus::Standby => return Err(Error::Standby),
        };
        contention::found_busy(self.lock.id);
        if self.wait.is_no_wait() {
            return Err(self.lock.busy(self.wait));
        }
        let started = Instant::now();
        self.lock
            .wait(conn, Scope::Xact, cap_ms, self.savepoint, started, pid)
            .await?;
        Ok(Acquired::after_waiting_since(started))
    }

    /// Begins a transaction on `pool` that already holds this lock: the lock
    /// statement and `BEGIN` go in one message, so the transaction and its
    /// lock cost one round trip where `pool.begin()` and
    /// [`acquire`](Self::acquire) cost two. Everything else is as with
    /// `acquire`: the cap and its exact restore, the errors, the events, the
    /// cancel of an abandoned wait. The lock ends with the transaction
    /// (commit, rollback, or drop).
    ///
    /// The connection is taken from the pool as `pool.begin()` takes it
    /// (with the pool's checks, if it has any). A failure leaves no
    /// transaction behind: the connection goes back to the pool as it came.
    /// [`in_savepoint`](Self::in_savepoint) changes nothing here: the
    /// transaction holds nothing else to keep.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire), but never [`Error::NotInTransaction`].
    ///
    /// ```no_run
    /// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// let mut tx = JOBS
    ///     .lock(&1_i64)
    ///     .timeout(std::time::Duration::from_secs(5))
    ///     .begin(pool)
    ///     .await?;
    /// sqlx::query("UPDATE jobs SET state = 'running' WHERE id = 1")
    ///     .execute(&mut *tx)
    ///     .await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn begin(self, pool: &PgPool) -> Result<Transaction<'static, Postgres>, Error> {
        self.lock.begin_locked(pool, self.wait).await
    }

    /// Tries the lock once without waiting: `Ok(true)` when it is now held,
    /// `Ok(false)` when someone else holds it.
    ///
    /// ```no_run
    /// # async fn run(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock_runtime::Error> {
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// if !JOBS.lock(&1_i64).try_acquire(tx).await? {
    ///     println!("job 1 is running elsewhere");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn try_acquire(self, conn: &mut PgConnection) -> Result<bool, Error> {
        match self.try_once(conn).await? {
            TryStatus::Acquired => {
                self.count(Outcome::Acquired);
                Ok(true)
            }
            TryStatus::Busy { .. } => {
                self.count(Outcome::Busy);
                Ok(false)
            }
            TryStatus::Standby => Err(Error::Standby),
        }
    }

    fn count(&self, outcome: Outcome) {
        measure::acquisition(self.lock.namespace.shared_label(), self.lock.mode, outcome);
    }

    async fn try_once(&self, conn: &mut PgConnection) -> Result<TryStatus, Error> {
        ensure_transaction(conn)?;
        let statements = self.lock.namespace.statements();
        try_lock(conn, statements, Scope::Xact, self.lock.mode, self.lock.id).await
    }
}

/// An open PostgreSQL transaction that `#[pglock::advisory_lock]` can take
/// its lock in: `sqlx::Transaction<'_, Postgres>`, or an application's own
/// type that wraps one.
///
/// A transaction-scoped advisory lock lasts until the transaction ends, so
/// only a connection inside a transaction block can hold one: a pool or a
/// bare connection can't (a bare connection that is not in a transaction
/// block makes the acquisition fail with [`Error::NotInTransaction`]).
///
/// ```no_run
/// use pglock_runtime::XactConnection;
/// use sqlx::{PgConnection, Postgres, Transaction};
///
/// /// The application's unit of work: a transaction plus what it touched.
/// struct UnitOfWork<'c> {
///     tx: Transaction<'c, Postgres>,
///     touched: Vec<i64>,
/// }
///
/// impl XactConnection for UnitOfWork<'_> {
///     fn connection(&mut self) -> &mut PgConnection {
///         &mut self.tx
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a transaction that an advisory lock can be taken in",
    label = "expected `&mut sqlx::Transaction<'_, Postgres>` here",
    note = "a transaction-scoped advisory lock lasts until its transaction ends, so `#[advisory_lock]` needs an open transaction: `tx: &mut sqlx::Transaction<'_, sqlx::Postgres>`",
    note = "begin one from a pool with `pool.begin().await?`; a type that wraps a transaction can implement `pglock::XactConnection`"
)]
pub trait XactConnection {
    /// The connection the transaction runs on, to send the lock statement.
    fn connection(&mut self) -> &mut PgConnection;
}

impl XactConnection for sqlx::Transaction<'_, Postgres> {
    fn connection(&mut self) -> &mut PgConnection {
        self
    }
}
