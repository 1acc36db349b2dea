//! Running work in a fresh transaction that holds a lock.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use sqlx::{PgPool, Postgres, Transaction};

use crate::engine::events;
use crate::error::Error;
use crate::front::lock_set::XactLockSet;
use crate::front::semaphore::XactSemaphore;
use crate::front::xact_lock::XactLock;

/// The future a unit of work returns, borrowing the transaction: written
/// `|tx| Box::pin(async move { ... })`, as for sqlx's
/// `Connection::transaction`. (An `async` closure would read better, but its
/// future can't yet be proven `Send` for every borrow, which `tokio::spawn`
/// needs.)
///
/// ```no_run
/// use pglock_runtime::{Error, WorkFuture};
/// use sqlx::{Postgres, Transaction};
///
/// fn count_jobs<'t>(tx: &'t mut Transaction<'static, Postgres>) -> WorkFuture<'t, i64, Error> {
///     Box::pin(async move { Ok(sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&mut **tx).await?) })
/// }
///
/// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
/// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
/// let jobs = JOBS.lock(&"count").shared().run(pool, count_jobs).await?;
/// # Ok(()) }
/// ```
pub type WorkFuture<'t, R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send + 't>>;

/// `run` on a request type that has `begin(self, &PgPool)` (a transaction
/// begun holding its lock, in one round trip), or, with `acquire` first,
/// one that has only `acquire(self, &mut PgConnection)`.
macro_rules! run_in_transaction {
    ($(#[$doc:meta])* $request:ty) => {
        run_in_transaction!(@impl begin, $(#[$doc])* $request);
    };
    (acquire, $(#[$doc:meta])* $request:ty) => {
        run_in_transaction!(@impl acquire, $(#[$doc])* $request);
    };
    (@impl $how:ident, $(#[$doc:meta])* $request:ty) => {
        impl $request {
            $(#[$doc])*
            pub async fn run<R, E, F>(self, pool: &PgPool, work: F) -> Result<R, E>
            where
                F: for<'t> FnOnce(&'t mut Transaction<'static, Postgres>) -> WorkFuture<'t, R, E>,
                E: From<Error>,
            {
                let tx = run_in_transaction!(@begin $how, self, pool);
                finish(tx, work).await
            }
        }
    };
    (@begin begin, $request:ident, $pool:ident) => {
        $request.begin($pool).await?
    };
    (@begin acquire, $request:ident, $pool:ident) => {{
        let mut tx = $pool.begin().await.map_err(Error::from)?;
        $request.acquire(&mut tx).await?;
        tx
    }};
}

run_in_transaction!(
    /// Begins a transaction on `pool` that holds this lock (one round trip,
    /// see [`XactLock::begin`]), runs `work`, and commits when `work`
    /// returns `Ok`; rolls back when it returns
    /// `Err` or panics (the panic then continues). The lock ends with the
    /// transaction.
    ///
    /// One connection serves the lock and the work: nothing else is taken
    /// from the pool while `work` runs, so a small pool can't deadlock on its
    /// own bootstrap.
    ///
    /// ```no_run
    /// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
    /// static SCHEMA: pglock_runtime::Namespace = pglock_runtime::Namespace::named("bootstrap:schema");
    /// SCHEMA
    ///     .lock(&"install")
    ///     .run(pool, |tx| {
    ///         Box::pin(async move {
    ///             sqlx::query("CREATE SCHEMA IF NOT EXISTS jobs").execute(&mut **tx).await?;
    ///             Ok::<_, pglock_runtime::Error>(())
    ///         })
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    XactLock<'_>
);

run_in_transaction!(
    /// [`XactLock::run`] for a set of locks.
    ///
    /// ```no_run
    /// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
    /// static ACCOUNTS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("ledger:account");
    /// ACCOUNTS
    ///     .lock_many([4_i64, 17])
    ///     .run(pool, |_tx| Box::pin(async { Ok::<_, pglock_runtime::Error>(()) }))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    XactLockSet<'_>
);

run_in_transaction!(
    acquire,
    /// [`XactLock::run`] for a permit of a semaphore: the work runs while
    /// the transaction holds a permit, and the permit ends with it. The
    /// transaction is begun, then the permit taken: one round trip more
    /// than a lock's `run`.
    ///
    /// ```no_run
    /// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
    /// static REPORTS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("reports:heavy");
    /// REPORTS
    ///     .semaphore(&"monthly", 2)
    ///     .run(pool, |_tx| Box::pin(async { Ok::<_, pglock_runtime::Error>(()) }))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    XactSemaphore<'_>
);

async fn finish<R, E, F>(mut tx: Transaction<'static, Postgres>, work: F) -> Result<R, E>
where
    F: for<'t> FnOnce(&'t mut Transaction<'static, Postgres>) -> WorkFuture<'t, R, E>,
    E: From<Error>,
{
    let outcome = CatchUnwind(work(&mut tx)).await;
    match outcome {
        Ok(Ok(value)) => {
            tx.commit().await.map_err(Error::from)?;
            Ok(value)
        }
        Ok(Err(error)) => {
            rollback(tx).await;
            Err(error)
        }
        Err(panic) => {
            // Roll back before the panic goes on, so the lock is gone by the
            // time anyone handles it.
            rollback(tx).await;
            resume_unwind(panic)
        }
    }
}

async fn rollback(tx: Transaction<'static, Postgres>) {
    if let Err(error) = tx.rollback().await {
        // The connection is broken; the server ends the transaction (and
        // its locks) with it.
        events::rollback_failed(&error);
    }
}

/// Polls a future, turning a panic into an `Err` with its payload.
struct CatchUnwind<'t, R, E>(WorkFuture<'t, R, E>);

impl<R, E> Future for CatchUnwind<'_, R, E> {
    type Output = Result<Result<R, E>, Box<dyn std::any::Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}
