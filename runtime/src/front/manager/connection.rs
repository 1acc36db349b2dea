//! One of the manager's connections: the one way to reach it.
//!
//! Its PostgreSQL session runs one statement at a time, behind a mutex.
//! Two kinds of work reach it, both through this module: callers run their
//! tries and releases on it themselves ([`Connection::try_lock`],
//! [`Connection::release`]), which saves a hop through a task on the
//! uncontended path; and its task (`task.rs`) receives [`Command`]s for the
//! rest: the waits, the checks, the unlocks of dropped guards, the commits
//! of its short transactions, the idle close and the close. A statement a
//! caller started always runs to its end, even when the caller stops
//! waiting for it, so that a lock taken for a caller that is gone is given
//! back at once.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Row};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::contract::id::LockId;
use crate::engine::events;
use crate::engine::measure::{self, HoldMeter, Outcome};
use crate::error::{Error, sqlstate};
use crate::front::fencing::FencingToken;
use crate::front::keepalive::ServerKeepalive;
use crate::front::loss::{HoldState, Loss};
use crate::identity::LockIdentity;
use crate::sql::pg_locks;
use crate::sql::semaphore::PermitAnswer;
use crate::sql::statements::{TryStatus, bind_id};

use super::options::LockTable;
use super::session::{OpenSession, Session, TokenFailure};
use super::{ConnectionId, GuardId, Inner};

/// What a connection's task is asked to do.
pub(super) enum Command {
    /// Wait for a lock; on success, keep `holding` for the guard. With
    /// `permit`, the wait is for any permit of the semaphore whose permit 0
    /// is that id, and its answer says which one it took.
    Wait {
        sql: String,
        holding: Holding,
        permit: Option<LockId>,
        reply: oneshot::Sender<Result<Granted, WaitFailure>>,
    },
    /// Unlock a dropped guard's lock, if it holds one here.
    Unlock { guard: GuardId },
    /// Release every lock and close.
    Close { reply: oneshot::Sender<usize> },
}

/// Why a wait sent to a connection's task ended without a guard.
pub(super) enum WaitFailure {
    /// The wait itself failed (a timeout, a cancel, a deadlock, a lost
    /// connection).
    Wait(sqlx::Error),
    /// The lock was granted, and given back because its fencing token could
    /// not be issued.
    Token(Error),
    /// The connection could not be opened (no host is a primary, say).
    Open(Error),
    /// A semaphore's wait took no permit: its deadline passed, or another
    /// holder uses more permits.
    NoPermit(PermitAnswer),
}

/// What a wait sent to a connection's task was granted.
pub(super) struct Granted {
    pub(super) token: Option<FencingToken>,
    /// The index of the permit taken, for a semaphore's wait.
    pub(super) permit: Option<u32>,
}

/// One of the manager's connections, shared by its task and the callers
/// that run tries and releases on it.
pub(super) struct Connection {
    session: Arc<tokio::sync::Mutex<Session>>,
    /// The locks granted here, changed only with `session` locked, so that
    /// a check never sees the one without the other.
    held: Mutex<HashMap<GuardId, Holding>>,
    /// Told when a lock is granted here, so that the task starts checking.
    pub(super) granted: Notify,
    /// Told when a transaction opens here, so that the task commits it.
    pub(super) batch_opened: Notify,
    /// Set once the session is open.
    open: AtomicBool,
    /// Set once the connection is lost, closed or retired.
    gone: AtomicBool,
    commands: mpsc::UnboundedSender<Command>,
    /// The runtime of the connection's task, which also finishes the
    /// statements of callers that stopped waiting.
    runtime: tokio::runtime::Handle,
}

/// What a connection keeps of a lock it holds for a guard.
pub(super) struct Holding {
    pub(super) guard: GuardId,
    pub(super) lock: LockIdentity,
    pub(super) unlock_sql: Arc<str>,
    pub(super) state: watch::Sender<HoldState>,
    /// Counts the lock as held from its grant until this is dropped.
    pub(super) meter: Option<HoldMeter>,
    /// A fencing token is to be issued at the grant.
    pub(super) wants_token: bool,
}

impl Connection {
    /// A connection not connected yet, and the receiver of its commands,
    /// for its task.
    pub(super) fn new(
        runtime: tokio::runtime::Handle,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Command>) {
        let (commands, receiver) = mpsc::unbounded_channel();
        let connection = Arc::new(Connection {
            session: Arc::new(tokio::sync::Mutex::new(Session::New)),
            held: Mutex::new(HashMap::new()),
            granted: Notify::new(),
            batch_opened: Notify::new(),
            open: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            commands,
            runtime,
        });
        (connection, receiver)
    }

    /// Sends a command to the connection's task; fails when the task has
    /// ended (the connection is gone).
    pub(super) fn send(&self, command: Command) -> Result<(), Error> {
        self.commands.send(command).map_err(|_| connection_gone())
    }

    /// The session, once the statement before has ended.
    pub(super) async fn session(&self) -> tokio::sync::MutexGuard<'_, Session> {
        self.session.lock().await
    }

    /// Whether its session is open (not still connecting, not gone).
    pub(super) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire) && !self.is_gone()
    }

    /// Whether it was lost, closed or retired.
    pub(super) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// Tries a lock for a guard and keeps it when granted. Runs to its end
    /// even when the caller stops waiting: a lock granted for a caller that
    /// is gone is then given back at once.
    pub(super) fn try_lock(
        self: &Arc<Self>,
        inner: &Arc<Inner>,
        id: ConnectionId,
        sql: Arc<str>,
        lock: LockId,
        holding: Holding,
    ) -> FinishOnDrop<Result<(TryStatus, Option<FencingToken>), Error>> {
        let (inner, connection) = (Arc::clone(inner), Arc::clone(self));
        FinishOnDrop::new(&self.runtime, async move {
            connection.try_now(&inner, id, sql, lock, holding).await
        })
    }

    /// Unlocks a guard's lock; runs to its end as [`Connection::try_lock`]
    /// does. `Err(LockLost)` when the connection is gone or the session
    /// held nothing.
    pub(super) fn release(
        self: &Arc<Self>,
        inner: &Arc<Inner>,
        id: ConnectionId,
        guard: GuardId,
    ) -> FinishOnDrop<Result<(), Error>> {
        let (inner, connection) = (Arc::clone(inner), Arc::clone(self));
        FinishOnDrop::new(&self.runtime, async move {
            connection.unlock(&inner, id, guard).await
        })
    }

    /// The open session, connecting it first if it is new.
    pub(super) async fn open<'a>(
        &self,
        session: &'a mut Session,
        inner: &Inner,
        id: ConnectionId,
    ) -> Result<&'a mut OpenSession, Error> {
        if let Session::New = session {
            match connect(inner).await {
                Ok(pg) => {
                    *session = Session::Open(OpenSession::new(pg));
                    self.open.store(true, Ordering::Release);
                }
                Err(error) => {
                    events::manager_connection_failed(id.get(), &error);
                    self.lose(
                        inner,
                        id,
                        session,
                        "the connection could not be opened",
                        true,
                    );
                    return Err(error);
                }
            }
        }
        match session {
            Session::Open(open) => Ok(open),
            _ if inner.table().closed => Err(Error::ManagerClosed),
            _ => Err(connection_gone()),
        }
    }

    async fn try_now(
        &self,
        inner: &Inner,
        id: ConnectionId,
        sql: Arc<str>,
        lock: LockId,
        holding: Holding,
    ) -> Result<(TryStatus, Option<FencingToken>), Error> {
        let mut session = Arc::clone(&self.session).lock_owned().await;
        let bound = inner.options.checks.timeout();
        let open = match self.open(&mut session, inner, id).await {
            Ok(open) => open,
            Err(error) => {
                inner.table().answered(id, None);
                return Err(error);
            }
        };
        let held = self.held().len();
        if let Err(reason) = open.before_statement(held, bound, &self.batch_opened).await {
            inner.table().answered(id, None);
            self.lose(inner, id, &mut session, &reason, true);
            return Err(connection_gone());
        }
        let tried = tokio::time::timeout(
            bound,
            bind_id(sqlx::query(AssertSqlSafe(sql)), lock).fetch_one(open.pg()),
        )
        .await;
        open.after_statement();
        let status = match tried {
            Ok(Ok(row)) => row.try_get::<i32, _>(0).map(TryStatus::from_code),
            Ok(Err(error)) => Err(error),
            Err(_) => {
                inner.table().answered(id, None);
                let reason = format!("a try did not answer within {bound:?}");
                self.lose(inner, id, &mut session, &reason, true);
                return Err(connection_gone());
            }
        };
        let status = match status {
            Ok(status) => status,
            Err(error) => {
                // A try does not wait, but a statement timeout or a cancel
                // can still end it after its grant. When another guard
                // holds the same lock here, the server's one row can't tell
                // the two grants apart: the connection is given up instead.
                let shares = self.held().values().any(|other| {
                    other.lock.id() == lock && other.lock.mode() == holding.lock.mode()
                });
                let kept = match open.broken(&error, bound).await {
                    Some(reason) => Err(reason),
                    None if !may_follow_a_grant(&error) => Ok(false),
                    None if shares => Err(format!(
                        "a try failed ({error}) where the lock is held for another guard: \
                         whether the server granted it again can't be told"
                    )),
                    None => holding.give_back_if_granted(open.pg(), bound).await,
                };
                // Answered once nothing of it is left on the server: until
                // then it counts against the budget.
                inner.table().answered(id, None);
                match kept {
                    Ok(true) => events::granted_despite_error(&holding.lock, &error),
                    Ok(false) => {}
                    Err(reason) => self.lose(inner, id, &mut session, &reason, true),
                }
                return Err(Error::from_sqlx(error));
            }
        };
        let granted = status == TryStatus::Acquired;
        let mut token = None;
        if granted && holding.wants_token {
            // Outside the short transaction, which a token's own commit
            // would end.
            let issued = match open.commit(bound).await {
                Ok(()) => open.fencing_token(bound).await,
                Err(reason) => Err(TokenFailure::Broken(reason)),
            };
            match issued {
                Ok(issued) => token = Some(issued),
                Err(failure) => {
                    let (error, broken) = holding.after_token_failure(open, failure, bound).await;
                    if let Some(reason) = broken {
                        self.lose(inner, id, &mut session, &reason, true);
                    }
                    // Answered once nothing of it is left on the server.
                    inner.table().answered(id, None);
                    return Err(error);
                }
            }
        }
        if inner.table().answered(id, granted.then_some(holding.guard)) {
            self.hold(holding);
        } else if granted {
            // Taken for a caller that gave up: given back before anything
            // else runs on this connection.
            if let Err(reason) = holding.give_back(open.pg(), bound).await {
                self.lose(inner, id, &mut session, &reason, true);
            }
        }
        Ok((status, token))
    }

    /// Unlocks a guard's lock; `Err(LockLost)` when the connection is gone
    /// or the session held nothing.
    pub(super) async fn unlock(
        &self,
        inner: &Inner,
        id: ConnectionId,
        guard: GuardId,
    ) -> Result<(), Error> {
        let mut session = self.session.lock().await;
        let Session::Open(open) = &mut *session else {
            return Err(connection_gone());
        };
        let Some(holding) = self.held().remove(&guard) else {
            // Lost or closed before; or, for a dropped acquisition, never
            // granted here.
            return Err(connection_gone());
        };
        let bound = inner.options.checks.timeout();
        let held = self.held().len() + 1;
        let unlocked = match open.before_statement(held, bound, &self.batch_opened).await {
            Ok(()) => {
                let unlocked = tokio::time::timeout(bound, holding.unlock(open.pg())).await;
                open.after_statement();
                unlocked.map_err(|_| format!("an unlock did not answer within {bound:?}"))
            }
            Err(reason) => Err(reason),
        };
        inner.unheld(id);
        let reason = match unlocked {
            Ok(Ok(true)) => return Ok(()),
            // The session does not hold what it took: it is not the session
            // that took it (a transaction pooler).
            Ok(Ok(false)) => "an unlock found the lock gone".to_owned(),
            Ok(Err(error)) => format!("the connection failed: {error}"),
            Err(reason) => reason,
        };
        measure::acquisition(holding.lock.label(), holding.lock.mode(), Outcome::Lost);
        self.lose(inner, id, &mut session, &reason, true);
        Err(Error::LockLost(holding.lock.clone()))
    }

    /// The locks granted here, by guard.
    pub(super) fn held(&self) -> MutexGuard<'_, HashMap<GuardId, Holding>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps a granted lock, counted as held from now.
    pub(super) fn hold(&self, mut holding: Holding) {
        holding.meter = Some(HoldMeter::start(&holding.lock));
        self.held().insert(holding.guard, holding);
        self.granted.notify_one();
    }

    /// The connection is gone: its guards learn so first, then the manager
    /// forgets it (so a new request never finds its locks free while a
    /// guard still reads held). `counted`: a loss, not a close.
    pub(super) fn lose(
        &self,
        inner: &Inner,
        id: ConnectionId,
        session: &mut Session,
        reason: &str,
        counted: bool,
    ) {
        *session = Session::Gone;
        self.gone.store(true, Ordering::Release);
        let held = std::mem::take(&mut *self.held());
        if counted && !held.is_empty() {
            events::manager_connection_lost(id.get(), held.len(), reason);
        }
        for holding in held.values() {
            holding.lose(reason, counted);
        }
        inner.remove_connection(id);
    }
}

/// Opens a session (to the primary, when the manager has several hosts)
/// and reads the size of the server's lock table on it, each within the
/// checks' timeout.
async fn connect(inner: &Inner) -> Result<PgConnection, Error> {
    let bound = inner.options.checks.timeout();
    let mut pg = inner.hosts.connect(bound).await?;
    // One message: the keepalives, so that the server frees this session's
    // locks only after its guards learned of a silent network (see
    // `front::keepalive`), and the size of the lock table.
    let table = tokio::time::timeout(bound, prepare_session(&mut pg, &inner.options.checks))
        .await
        .map_err(|_| timed_out(bound, "the session was not prepared"))?
        .map_err(Error::from_sqlx)?;
    inner.table().lock_table = Some(table);
    // Requests held back until the budget is known route again.
    inner.released.notify_waiters();
    Ok(pg)
}

/// The error of a step of opening a session that took longer than `bound`.
fn timed_out(bound: Duration, what: &str) -> Error {
    Error::Database(sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} within {bound:?}"),
    )))
}

/// Sets the keepalives `checks` call for on a new session and reads the
/// size of the server's lock table, in one round trip.
async fn prepare_session(
    pg: &mut PgConnection,
    checks: &crate::front::loss::CheckOptions,
) -> Result<LockTable, sqlx::Error> {
    let keepalives = ServerKeepalive::for_checks(checks).sql_for(pg);
    let row = sqlx::raw_sql(AssertSqlSafe(format!(
        "{keepalives}; {}",
        pg_locks::LOCK_TABLE
    )))
    .fetch_one(pg)
    .await?;
    let setting = |index: usize| {
        row.try_get::<i32, _>(index)
            .map(|value| u32::try_from(value).unwrap_or(0))
    };
    Ok(LockTable::new(setting(0)?, setting(1)?, setting(2)?))
}

impl Holding {
    /// Unlocks on `pg`: `Ok(false)` when the session held nothing.
    async fn unlock(&self, pg: &mut PgConnection) -> Result<bool, sqlx::Error> {
        bind_id(
            sqlx::query(AssertSqlSafe(self.unlock_sql.clone())),
            self.lock.id(),
        )
        .fetch_one(pg)
        .await?
        .try_get(0)
    }

    /// Gives back a lock taken for a caller that left, within `bound`; the
    /// reason the connection is unusable when that fails.
    pub(super) async fn give_back(
        &self,
        pg: &mut PgConnection,
        bound: Duration,
    ) -> Result<(), String> {
        match tokio::time::timeout(bound, self.unlock(pg)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("the connection failed: {error}")),
            Err(_) => Err(format!("an unlock did not answer within {bound:?}")),
        }
    }

    /// After the fencing token of the lock just granted on `open` could not
    /// be issued: gives the lock back on a sound session. Returns the error
    /// for the caller, and the reason the connection must go, if it must.
    pub(super) async fn after_token_failure(
        &self,
        open: &mut OpenSession,
        failure: TokenFailure,
        bound: Duration,
    ) -> (Error, Option<String>) {
        match failure {
            TokenFailure::Refused(error) => (error, self.give_back(open.pg(), bound).await.err()),
            TokenFailure::Broken(reason) => (connection_gone(), Some(reason)),
        }
    }

    /// After a request failed on a connection that stays in service: gives
    /// back the lock if the server granted it all the same, and says
    /// whether it did. PostgreSQL can grant a lock and still raise the
    /// error of a lock timeout or a cancel that fired in between (the timer
    /// goes off after the grant but before it is disarmed); a session lock
    /// outlives that error, and would stay on this connection for no
    /// guard, re-entered by the next request and excluding everyone else.
    /// Only for a connection on which no other guard holds the same lock:
    /// `pg_locks` shows one row however many times a session took it.
    pub(super) async fn give_back_if_granted(
        &self,
        pg: &mut PgConnection,
        bound: Duration,
    ) -> Result<bool, String> {
        let (encoded, objsubid) = pg_locks::encode(self.lock.id());
        let held = sqlx::query_scalar::<_, bool>(pg_locks::HELD_BY_THIS_SESSION)
            .bind(encoded)
            .bind(objsubid)
            .bind(pg_locks::mode_name(self.lock.mode()))
            .fetch_one(&mut *pg);
        match tokio::time::timeout(bound, held).await {
            Ok(Ok(false)) => Ok(false),
            Ok(Ok(true)) => self.give_back(pg, bound).await.map(|()| true),
            Ok(Err(error)) => Err(format!("the connection failed: {error}")),
            Err(_) => Err(format!("a check did not answer within {bound:?}")),
        }
    }

    /// Tells the guard its lock is gone; `counted`: a loss, not a close.
    pub(super) fn lose(&self, reason: &str, counted: bool) {
        if counted {
            measure::acquisition(self.lock.label(), self.lock.mode(), Outcome::Lost);
        }
        let lost = Loss::new(self.lock.clone(), reason.to_owned());
        let _ = self.state.send(HoldState::Lost(lost));
    }
}

/// Whether `error` may have been raised after the server granted the lock
/// of the statement it ended. The errors of an interrupt (a lock timeout, a
/// statement timeout, a cancel, a standby's recovery conflict) fire
/// whenever the backend next checks for them, the grant included; so any
/// error the server sent may, but a full lock table, which is raised
/// instead of the grant, and for which a check would need room in the very
/// table that is full. An error of the connection leaves nothing to check:
/// the connection is closed.
pub(super) fn may_follow_a_grant(error: &sqlx::Error) -> bool {
    !matches!(sqlstate(error).as_deref(), None | Some("53200"))
}

/// The error of a request whose connection is gone.
pub(super) fn connection_gone() -> Error {
    Error::Database(sqlx::Error::WorkerCrashed)
}

/// Runs a future that uses a connection to its end, even when the caller
/// stops waiting for it: dropped early, the rest runs as a task of its own,
/// so a statement's outcome is never lost (a lock taken for a caller that
/// is gone is given back at once).
pub(super) struct FinishOnDrop<T: Send + 'static> {
    future: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
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

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let future = self.future.as_mut().expect("polled after completion");
        let output = std::task::ready!(future.as_mut().poll(cx));
        self.future = None;
        Poll::Ready(output)
    }
}

impl<T: Send + 'static> Drop for FinishOnDrop<T> {
    fn drop(&mut self) {
        if let Some(future) = self.future.take() {
            self.runtime.spawn(future);
        }
    }
}
