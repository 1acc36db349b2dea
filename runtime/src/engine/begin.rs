//! A transaction begun already holding its lock: the lock statement and
//! `BEGIN` in one message, one round trip (see [`crate::sql::begin`]).
//!
//! The connection is taken from the pool first, with the pool's own checks
//! (`test_before_acquire`, `before_acquire`) and its wait for a free
//! connection; only then does the message go out. So the time until the
//! answer is the lock's alone: a message that tries and waits and has not
//! answered after [`WAIT_REPORTED_AFTER`](super::wait::WAIT_REPORTED_AFTER)
//! waits for the lock, as with the statement that tries and waits
//! ([`Waiter::take_or_wait`]); and a future dropped from then on abandons a
//! wait, which is cancelled by its ticket. sqlx's `Pool::begin_with` sends
//! such a message too, but takes the connection inside its future: the time
//! spent waiting for the pool would count as the lock's, and a future
//! dropped while the pool is saturated would set off a cancel for nothing.
//! So the transaction is made with `Transaction::begin`, the constructor
//! behind `begin_with` (public, kept out of sqlx's docs), on the connection
//! already taken.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, PgPool, Postgres, SqlSafeStr, Transaction};

use crate::engine::cancel::{self, AbandonGuard, WaitingBackend};
use crate::engine::measure::{self, Outcome};
use crate::engine::wait::{Wait, Waiter, reported_if_slow, reported_wait};
use crate::engine::{contention, events};
use crate::error::Error;
use crate::identity::LockIdentity;
use crate::sql::begin::{self, Raised};
use crate::sql::pg_locks;

/// What a message that begins a transaction answers.
type Begun = Result<Transaction<'static, Postgres>, sqlx::Error>;

/// Begins a transaction on `conn` with `sql`, a message of
/// [`crate::sql::begin`]. On failure the connection goes back to the pool,
/// in no transaction: the message's implicit block was rolled back.
///
/// Dropped before the answer, it lets the message finish on its own (see
/// [`Unanswered`]): once sent, the message may still take its lock and open
/// the transaction.
pub(crate) async fn begin_with(conn: PoolConnection<Postgres>, sql: String) -> Begun {
    let mut unanswered = Unanswered(None);
    let message = unanswered.0.insert(Transaction::begin(
        conn,
        Some(AssertSqlSafe(sql).into_sql_str()),
    ));
    let begun = message.await;
    unanswered.0 = None;
    begun
}

/// A message of [`crate::sql::begin`] whose answer is awaited. Dropped
/// before the answer, the message is not dropped with it: sqlx counts the
/// transaction only once the answer says that it began, so a transaction
/// the server opened after the drop (the lock granted before the cancel of
/// an abandoned wait arrived, or a try whose answer was on its way) would
/// go back to the pool open and holding the lock, and the pool's next user
/// would work inside it. The message is run to its end on the runtime
/// instead, and a transaction it begins is rolled back.
struct Unanswered(Option<Pin<Box<dyn Future<Output = Begun> + Send>>>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        let Some(message) = self.0.take() else {
            return;
        };
        // Without a runtime the message is dropped, as sqlx would.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Ok(tx) = message.await {
                    let _ = tx.rollback().await;
                }
            });
        }
    }
}

impl Waiter<'_> {
    /// Begins a transaction on a connection of `pool` with one message that
    /// takes this lock and then `BEGIN`s, waiting as `wait` says. Says what
    /// the acquisition and its wait did, as every path does.
    ///
    /// As with `acquire`, a lock not found busy lately is tried with the
    /// cheap message ([`begin::tried_sql`]: as cheap for the server as
    /// `BEGIN` and the bare call); found busy, it is then waited for in a
    /// second message. A lock found busy lately is sent the message that
    /// tries and waits ([`begin::locked_sql`]) at once: one round trip even
    /// when it waits. (That message costs the server tens of microseconds
    /// more to plan, which a free lock would pay for nothing.)
    pub(crate) async fn begin_locked(
        &self,
        pool: &PgPool,
        wait: Wait,
    ) -> Result<Transaction<'static, Postgres>, Error> {
        let cap_ms = wait.cap_ms()?;
        let lock = self.identity();
        if !wait.is_no_wait() && contention::expected(self.id) {
            return self.begin_taken_or_waited(pool, cap_ms, &lock).await;
        }
        let sql = begin::tried_sql(self.namespace.statements().marker(), self.id, self.mode);
        let error = match begin_with(pool.acquire().await?, sql).await {
            Ok(tx) => {
                measure::acquisition(lock.label(), lock.mode(), Outcome::Acquired);
                return Ok(tx);
            }
            Err(error) => error,
        };
        match begin::raised(&error) {
            Some(Raised::Busy) => contention::found_busy(self.id),
            Some(Raised::Standby) => return Err(Error::Standby),
            _ => return Err(Error::from_sqlx(error)),
        }
        if wait.is_no_wait() {
            return Err(self.busy(wait));
        }
        // Busy: the wait is said to begin now, as after any try that found
        // the lock busy.
        reported_wait(&lock, cap_ms, async {
            let (answer, started, _) = self.send_locked(pool, cap_ms, &lock, false).await?;
            answer.map_err(|error| self.classify(error, &lock, started))
        })
        .await
    }

    /// The message that tries and waits, for a lock found busy lately: the
    /// wait is said to begin once the message has gone unanswered for a
    /// while, or once a conflict shows that it waited.
    async fn begin_taken_or_waited(
        &self,
        pool: &PgPool,
        cap_ms: Option<u32>,
        lock: &LockIdentity,
    ) -> Result<Transaction<'static, Postgres>, Error> {
        let (answer, started, reported) = self.send_locked(pool, cap_ms, lock, true).await?;
        let outcome = answer.map_err(|error| self.classify(error, lock, started));
        // A wait shorter than the report's delay is not seen: the message
        // returns no rows to say that it waited.
        let waited = reported || matches!(outcome, Err(Error::Conflict(_)));
        if waited {
            contention::found_busy(self.id);
            if !reported {
                events::waiting(lock, cap_ms);
            }
            events::wait_ended(lock, outcome.as_ref().map(drop), started);
        } else if outcome.is_ok() {
            contention::found_free(self.id);
            measure::acquisition(lock.label(), lock.mode(), Outcome::Acquired);
        }
        outcome
    }

    /// Takes a connection of `pool` and sends it the message that tries and
    /// waits ([`begin::locked_sql`]), with the ticket by which an abandoned
    /// wait is cancelled. `report_if_slow`: says that the wait began if
    /// there is no answer after a while. Returns the answer, when the
    /// message went out, and whether the wait was said to begin.
    async fn send_locked(
        &self,
        pool: &PgPool,
        cap_ms: Option<u32>,
        lock: &LockIdentity,
        report_if_slow: bool,
    ) -> Result<(Begun, Instant, bool), Error> {
        let conn = pool.acquire().await?;
        let ticket = cancel::new_ticket();
        let encoded_ticket = pg_locks::encode(pg_locks::ticket(ticket)).0;
        let marker = self.namespace.statements().marker();
        let sql = begin::locked_sql(marker, self.id, self.mode, encoded_ticket, cap_ms);
        let started = Instant::now();
        let mut abandon = AbandonGuard {
            backend: WaitingBackend::Ticket(ticket),
            lock,
            armed: true,
        };
        let begun = begin_with(conn, sql);
        let (answer, reported) = if report_if_slow {
            reported_if_slow(begun, || events::waiting(lock, cap_ms)).await
        } else {
            (begun.await, false)
        };
        abandon.armed = false;
        Ok((answer, started, reported))
    }

    /// The error of a failed message that tried and waited.
    fn classify(&self, error: sqlx::Error, lock: &LockIdentity, started: Instant) -> Error {
        match begin::raised(&error) {
            Some(Raised::Standby) => Error::Standby,
            _ => Error::from_wait(error, lock, started.elapsed()),
        }
    }
}
