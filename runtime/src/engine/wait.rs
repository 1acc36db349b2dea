//! The try and the wait that every front end shares.
//!
//! An acquisition starts with one prepared try statement: when the lock is
//! free, that round trip is the whole cost. When it is busy, one event says
//! so and one more statement waits, with `lock_timeout` capped and then
//! restored inside that same statement.
//!
//! A transaction's lock that was found busy lately ([`contention`]) is
//! instead taken with one statement that tries and, only when the try
//! fails, waits: one round trip for a contended lock, as for the bare
//! call ([`crate::bare_sql::XACT_LOCK`]). The server can't say "I am
//! waiting" before that statement answers, so a client-side timer does: if
//! there is no answer after [`WAIT_REPORTED_AFTER`], the event that the
//! wait began is emitted while the statement still waits; a wait that ended
//! sooner is reported when the answer says it waited, just before its
//! outcome.

use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnection, PgDatabaseError, PgSeverity};
use sqlx::{AssertSqlSafe, Connection, Row};

use crate::contract::id::LockId;
use crate::contract::mode::Mode;
use crate::contract::namespace::Namespace;
use crate::engine::cancel::{self, AbandonGuard, WaitingBackend};
use crate::engine::measure::{self, Outcome};
use crate::engine::{contention, events};
use crate::error::Error;
use crate::identity::LockIdentity;
use crate::sql::pg_locks;
use crate::sql::statements::{self, STANDBY, Scope, Statements, TryStatus, bind_id};

/// How long a statement that tries and may wait goes unanswered before the
/// wait is reported as begun: longer than an uncontended acquisition takes
/// on a healthy network, short enough for a log to say what a request waits
/// for while it waits.
pub(crate) const WAIT_REPORTED_AFTER: Duration = Duration::from_millis(5);

/// How long an acquisition may wait for a busy lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Try once; a busy lock is an error ([`Error::Busy`]).
    No,
    /// `No` for a caller that reports the busy lock itself (the attribute's
    /// `skip`, which says "skipped"), so that one event is said, not two.
    NoSilently,
    /// Wait under the caller's own `lock_timeout`, untouched.
    Unbounded,
    /// Wait at most this long: `lock_timeout` is capped for the wait.
    AtMost(Duration),
}

impl Wait {
    /// The cap in whole milliseconds (sub-millisecond rounds up), or an
    /// error for what PostgreSQL can't express.
    pub(crate) fn cap_ms(self) -> Result<Option<u32>, Error> {
        let Wait::AtMost(timeout) = self else {
            return Ok(None);
        };
        let millis = timeout.as_nanos().div_ceil(1_000_000);
        if millis == 0 || millis > i32::MAX as u128 {
            return Err(Error::InvalidTimeout { timeout });
        }
        Ok(Some(millis as u32))
    }

    /// Whether a busy lock is given up at once.
    pub(crate) fn is_no_wait(self) -> bool {
        matches!(self, Wait::No | Wait::NoSilently)
    }

    /// The same, reporting nothing itself when the lock is busy.
    pub(crate) fn silenced(self) -> Self {
        if self == Wait::No {
            Wait::NoSilently
        } else {
            self
        }
    }
}

/// One prepared try statement: the whole cost of a free lock.
pub(crate) async fn try_lock(
    conn: &mut PgConnection,
    statements: &Statements,
    scope: Scope,
    mode: Mode,
    id: LockId,
) -> Result<TryStatus, Error> {
    let query = sqlx::query(AssertSqlSafe(statements.try_lock(scope, mode)));
    let code: i32 = bind_id(query, id)
        .fetch_one(conn)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(Error::from_sqlx)?;
    Ok(TryStatus::from_code(code))
}

/// Outside a transaction block, a transaction-scoped lock would end with its
/// own statement. sqlx knows whether it began a transaction on this
/// connection, so the check costs no round trip. (A transaction begun by a
/// raw `BEGIN` is invisible to sqlx and refused too: the safe direction.)
pub(crate) fn ensure_transaction(conn: &PgConnection) -> Result<(), Error> {
    if conn.is_in_transaction() {
        Ok(())
    } else {
        Err(Error::NotInTransaction)
    }
}

/// Runs `statement`, and `report` if it has not answered after
/// [`WAIT_REPORTED_AFTER`]; returns its output and whether `report` ran.
/// Without a tokio runtime there is no timer, and nothing is reported early.
pub(crate) async fn reported_if_slow<T>(
    statement: impl Future<Output = T>,
    report: impl FnOnce(),
) -> (T, bool) {
    let mut statement = std::pin::pin!(statement);
    if tokio::runtime::Handle::try_current().is_err() {
        return (statement.await, false);
    }
    tokio::select! {
        biased;
        output = &mut statement => return (output, false),
        () = tokio::time::sleep(WAIT_REPORTED_AFTER) => {}
    }
    report();
    (statement.await, true)
}

/// Runs `wait`, which waits for `lock`, between the event that says the
/// wait begins and the one that says how it ended.
pub(crate) async fn reported_wait<T>(
    lock: &LockIdentity,
    cap_ms: Option<u32>,
    wait: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    events::waiting(lock, cap_ms);
    let started = Instant::now();
    let outcome = wait.await;
    events::wait_ended(lock, outcome.as_ref().map(drop), started);
    outcome
}

/// One lock that may have to be waited for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Waiter<'ns> {
    pub(crate) namespace: &'ns Namespace,
    pub(crate) id: LockId,
    pub(crate) mode: Mode,
}

impl Waiter<'_> {
    /// Which lock this is, for errors and events.
    pub(crate) fn identity(&self) -> LockIdentity {
        self.namespace.identity(self.id, self.mode)
    }

    /// The error of a busy lock that is not waited for; says so once,
    /// unless the caller reports it itself.
    pub(crate) fn busy(&self, wait: Wait) -> Error {
        let lock = self.identity();
        if wait == Wait::No {
            events::not_waiting(&lock);
        }
        Error::Busy(lock)
    }

    /// Waits for the lock: says that the wait begins, waits, and says how it
    /// ended. A conflict reports the time since `since`, the start of the
    /// caller's first wait. `pid` is the backend's, for the cancellation of
    /// an abandoned transaction wait.
    pub(crate) async fn wait(
        &self,
        conn: &mut PgConnection,
        scope: Scope,
        cap_ms: Option<u32>,
        savepoint: bool,
        since: Instant,
        pid: i32,
    ) -> Result<(), Error> {
        let lock = self.identity();
        reported_wait(&lock, cap_ms, async {
            // A session wait's connection is closed with an abandoned future;
            // a transaction's is the caller's, so its wait must be cancelled.
            let mut abandon = AbandonGuard {
                backend: WaitingBackend::Pid(pid),
                lock: &lock,
                armed: scope == Scope::Xact,
            };
            let result = self.send(conn, scope, cap_ms, savepoint).await;
            abandon.armed = false;
            result.map_err(|error| Error::from_wait(error, &lock, since.elapsed()))
        })
        .await
    }

    /// Takes a transaction's lock in one statement that tries and, when the
    /// lock is busy, waits; says that the wait began (while it lasts, or
    /// once the answer shows it) and how it ended. Returns when the wait
    /// began, `None` when the lock was free.
    pub(crate) async fn take_or_wait(
        &self,
        conn: &mut PgConnection,
        cap_ms: Option<u32>,
    ) -> Result<Option<Instant>, Error> {
        let lock = self.identity();
        let ticket = cancel::new_ticket();
        let statements = self.namespace.statements();
        let query = bind_id(
            sqlx::query(AssertSqlSafe(
                statements.xact_take_or_wait(self.mode, cap_ms.is_some()),
            )),
            self.id,
        );
        let query = match cap_ms {
            Some(cap_ms) => query.bind(i64::from(cap_ms)),
            None => query,
        }
        .bind(pg_locks::encode(pg_locks::ticket(ticket)).0);
        let started = Instant::now();
        let mut abandon = AbandonGuard {
            backend: WaitingBackend::Ticket(ticket),
            lock: &lock,
            armed: true,
        };
        let answer = async {
            query
                .fetch_one(conn)
                .await
                .and_then(|row| row.try_get::<i32, _>(0))
        };
        let (answer, reported) = reported_if_slow(answer, || events::waiting(&lock, cap_ms)).await;
        abandon.armed = false;
        let outcome = match answer {
            Ok(0) => {
                contention::found_free(self.id);
                if reported {
                    events::wait_ended(&lock, Ok(()), started);
                } else {
                    measure::acquisition(lock.label(), lock.mode(), Outcome::Acquired);
                }
                return Ok(None);
            }
            Ok(STANDBY) => Err(Error::Standby),
            Ok(_) => Ok(Some(started)),
            Err(error) => Err(Error::from_wait(error, &lock, started.elapsed())),
        };
        // Only a wait ends in a conflict.
        let waited = matches!(outcome, Ok(_) | Err(Error::Conflict(_)));
        if waited {
            contention::found_busy(self.id);
            if !reported {
                events::waiting(&lock, cap_ms);
            }
        }
        if waited || reported {
            events::wait_ended(&lock, outcome.as_ref().map(drop), started);
        }
        outcome
    }

    async fn send(
        &self,
        conn: &mut PgConnection,
        scope: Scope,
        cap_ms: Option<u32>,
        savepoint: bool,
    ) -> Result<(), sqlx::Error> {
        let statements = self.namespace.statements();
        match scope {
            Scope::Session => {
                let sql =
                    statements::session_wait_sql(statements.marker(), self.id, self.mode, cap_ms);
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(conn)
                    .await
                    .map(drop)
            }
            Scope::Xact if savepoint => self.wait_in_savepoint(conn, statements, cap_ms).await,
            Scope::Xact => {
                let query = match cap_ms {
                    Some(cap_ms) => bind_id(
                        sqlx::query(AssertSqlSafe(statements.xact_capped_wait(self.mode))),
                        self.id,
                    )
                    .bind(i64::from(cap_ms)),
                    None => bind_id(
                        sqlx::query(AssertSqlSafe(statements.xact_wait(self.mode))),
                        self.id,
                    ),
                };
                query.execute(conn).await.map(drop)
            }
        }
    }

    async fn wait_in_savepoint(
        &self,
        conn: &mut PgConnection,
        statements: &Statements,
        cap_ms: Option<u32>,
    ) -> Result<(), sqlx::Error> {
        let sql = statements::savepoint_wait_sql(statements.marker(), self.id, self.mode, cap_ms);
        let error = match sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *conn).await {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        // The server ended the session (a FATAL error, such as
        // `transaction_timeout`'s on PostgreSQL 17 and later): there is no
        // transaction left to save, and the wait's error says why.
        if ended_the_session(&error) {
            return Err(error);
        }
        // The failed wait left the transaction aborted; rolling back to the
        // savepoint makes it usable again, with the locks it held before.
        sqlx::raw_sql(statements::SAVEPOINT_ROLLBACK)
            .execute(conn)
            .await?;
        Err(error)
    }
}

/// Whether the server reported `error` as ending the session (severity
/// FATAL or PANIC): the connection is closed.
fn ended_the_session(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.try_downcast_ref::<PgDatabaseError>())
        .is_some_and(|e| matches!(e.severity(), PgSeverity::Fatal | PgSeverity::Panic))
}
