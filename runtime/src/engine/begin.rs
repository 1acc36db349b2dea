//! A transaction begun already holding its lock: the lock statement and
//! `BEGIN` in one message, one round trip (see [`crate::sql::begin`]).
//!
//! The connection is taken from the pool first, with the pool's own checks
//! (`test_before_acquire`, `before_acquire`) and its wait for a free
//! connection; then the message goes out, so that a statement that has not
//! answered after [`WAIT_REPORTED_AFTER`](super::wait::WAIT_REPORTED_AFTER)
//! waits for the lock, as with the statement that tries and waits
//! ([`Waiter::take_or_wait`]), and a future dropped from then on abandons a
//! wait. sqlx's `Pool::begin_with` sends the same message, but takes the
//! connection inside its future: the time spent waiting for the pool would
//! count as the lock's, and a future dropped while the pool is saturated
//! would set off a cancel for nothing. So the transaction is made with
//! `Transaction::begin`, the constructor behind `begin_with` (public, kept
//! out of sqlx's docs), on the connection already taken.

use std::time::Instant;

use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, PgPool, Postgres, SqlSafeStr, Transaction};

use crate::engine::cancel::{self, AbandonGuard, WaitingBackend};
use crate::engine::measure::{self, Outcome};
use crate::engine::wait::{Wait, Waiter, reported_if_slow};
use crate::engine::{contention, events};
use crate::error::Error;
use crate::sql::begin::{self, Raised};
use crate::sql::pg_locks;

/// Begins a transaction on `conn` with `sql`, a message of
/// [`crate::sql::begin`]. On failure the connection goes back to the pool,
/// in no transaction: the message's implicit block was rolled back.
pub(crate) async fn begin_with(
    conn: PoolConnection<Postgres>,
    sql: String,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    Transaction::begin(conn, Some(AssertSqlSafe(sql).into_sql_str())).await
}

impl Waiter<'_> {
    /// Begins a transaction on a connection of `pool` with one message that
    /// takes this lock (waiting as `wait` says) and then `BEGIN`s. Says what
    /// the acquisition and its wait did, as every path does.
    pub(crate) async fn begin_locked(
        &self,
        pool: &PgPool,
        wait: Wait,
    ) -> Result<Transaction<'static, Postgres>, Error> {
        let cap_ms = wait.cap_ms()?;
        let conn = pool.acquire().await?;
        let marker = self.namespace.statements().marker();
        if wait.is_no_wait() {
            let sql = begin::tried_sql(marker, self.id, self.mode);
            return match begin_with(conn, sql).await {
                Ok(tx) => {
                    let label = self.namespace.shared_label();
                    measure::acquisition(label, self.mode, Outcome::Acquired);
                    Ok(tx)
                }
                Err(error) => Err(match begin::raised(&error) {
                    Some(Raised::Busy) => {
                        contention::found_busy(self.id);
                        self.busy(wait)
                    }
                    Some(Raised::Standby) => Error::Standby,
                    _ => Error::from_sqlx(error),
                }),
            };
        }
        let lock = self.identity();
        let ticket = cancel::new_ticket();
        let encoded_ticket = pg_locks::encode(pg_locks::ticket(ticket)).0;
        let sql = begin::locked_sql(marker, self.id, self.mode, encoded_ticket, cap_ms);
        let started = Instant::now();
        let mut abandon = AbandonGuard {
            backend: WaitingBackend::Ticket(ticket),
            lock: &lock,
            armed: true,
        };
        let (answer, reported) =
            reported_if_slow(begin_with(conn, sql), || events::waiting(&lock, cap_ms)).await;
        abandon.armed = false;
        let outcome = match answer {
            Ok(tx) => Ok(tx),
            Err(error) if begin::raised(&error) == Some(Raised::Standby) => Err(Error::Standby),
            Err(error) => Err(Error::from_wait(error, &lock, started.elapsed())),
        };
        // A conflict ended a wait; an answer that was slow to come most
        // likely did too. A wait shorter than that is not seen: the message
        // returns no rows to say so.
        let waited = reported || matches!(outcome, Err(Error::Conflict(_)));
        if waited {
            contention::found_busy(self.id);
            if !reported {
                events::waiting(&lock, cap_ms);
            }
            events::wait_ended(&lock, outcome.as_ref().map(drop), started);
        } else if outcome.is_ok() {
            measure::acquisition(lock.label(), lock.mode(), Outcome::Acquired);
        }
        outcome
    }
}
