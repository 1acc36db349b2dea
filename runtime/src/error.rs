//! The one error type of pglock.

use std::fmt;
use std::time::Duration;

use crate::identity::LockIdentity;

/// Everything that can go wrong while taking an advisory lock.
///
/// Application error types need only `From<pglock::Error>`. Use
/// [`Error::is_retryable`] to decide whether running the transaction again
/// may succeed.
///
/// ```
/// use pglock_runtime::Error;
///
/// fn describe(error: &Error) -> &'static str {
///     match error {
///         Error::Conflict(conflict) if conflict.waited().as_secs() > 1 => "waited, then gave up",
///         Error::Conflict(_) | Error::Busy(_) => "someone else holds it",
///         Error::Standby => "connected to a read-only standby",
///         _ => "something else",
///     }
/// }
/// assert_eq!(describe(&Error::Standby), "connected to a read-only standby");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The lock was waited for and not obtained: a timeout, a cancellation
    /// or a deadlock ended the wait. The transaction is aborted unless the
    /// wait ran in a savepoint.
    Conflict(Conflict),
    /// The lock was asked for without waiting, and someone else holds it.
    Busy(LockIdentity),
    /// A session lock that was held is no longer: its connection broke, or
    /// the session that answered is not the one that took it (as through a
    /// transaction-pooling proxy). Someone else may hold it now.
    LockLost(LockIdentity),
    /// The server is a hot standby (`pg_is_in_recovery()`): an advisory lock
    /// there excludes no one on the primary, so none was taken.
    Standby,
    /// The connection is not inside a transaction that sqlx began, and a
    /// transaction-scoped lock outside a transaction block would end with its
    /// own statement. No lock was taken; begin the transaction with sqlx
    /// (`pool.begin()`, `conn.begin()`) first.
    NotInTransaction,
    /// The server's shared lock table is full (SQLSTATE 53200). It holds
    /// `max_locks_per_transaction × (max_connections + max_prepared_transactions)`
    /// locks; raise `max_locks_per_transaction` or take fewer keys at once.
    LockTableFull(sqlx::Error),
    /// A lock timeout that PostgreSQL can't express: zero (which PostgreSQL
    /// reads as "wait forever") or longer than `i32::MAX` milliseconds.
    InvalidTimeout {
        /// The timeout that was asked for.
        timeout: Duration,
    },
    /// A semaphore's number of permits outside `1..=1024`
    /// ([`MAX_PERMITS`](crate::MAX_PERMITS)).
    InvalidPermits {
        /// The number that was asked for.
        permits: u32,
    },
    /// A semaphore was asked for with fewer permits than another holder of
    /// the same key uses: `seen` is the highest permit held plus one. The
    /// permits are shared, so holders never exceed the larger number, but
    /// two sizes for one semaphore are a misuse, reported by a wait before it
    /// begins (a try, or `no_wait`, reports only a busy semaphore). Not
    /// retryable: every holder must use one size.
    PermitsMismatch {
        /// The semaphore, named by its permit 0.
        semaphore: LockIdentity,
        /// The permits the caller asked for.
        permits: u32,
        /// The least number of permits another holder uses.
        seen: u32,
    },
    /// The server would not run a semaphore's wait, a PL/pgSQL `DO` block:
    /// the role has no `USAGE` on the language, or the database lacks it
    /// (`CREATE EXTENSION plpgsql`). Only a wait needs it: a free permit is
    /// taken without it. Not retryable.
    PermitWaitUnavailable {
        /// The semaphore, named by its permit 0.
        semaphore: LockIdentity,
        /// The server's refusal.
        source: sqlx::Error,
    },
    /// A namespace name that can't be used, such as an empty one.
    InvalidNamespace {
        /// Why the name was refused.
        reason: &'static str,
    },
    /// Every connection a [`LockManager`](crate::LockManager) may open is
    /// waiting for a lock, or holds locks, so a wait, which needs a
    /// connection of its own, has none. Nothing was sent; try again later,
    /// or raise the bound.
    ManagerBusy {
        /// The manager's bound on its connections.
        max_connections: usize,
    },
    /// A [`LockManager`](crate::LockManager) holds (or asks for) as many
    /// locks as its [`LockBudget`](crate::LockBudget) allows, so that the
    /// server's shared lock table stays free for everyone else. Nothing was
    /// sent, and nothing held is affected; a release makes room (not
    /// retryable, as a full lock table is not: it repeats until something
    /// changes). Raise the
    /// budget with [`ManagerOptions::lock_budget`](crate::ManagerOptions::lock_budget),
    /// and the table with the server's `max_locks_per_transaction`.
    LockBudget {
        /// The locks the budget allows.
        budget: usize,
        /// The server's lock table, when the manager has read it.
        table: Option<crate::LockTable>,
    },
    /// A share of the lock table that is not a percentage from 1 to 100;
    /// see [`LockBudget::table_share`](crate::LockBudget::table_share).
    InvalidLockBudget {
        /// The percentage that was asked for.
        percent: u8,
    },
    /// A fencing token was asked for where it can't be issued truthfully;
    /// no lock is held.
    FencingToken {
        /// Why, and what to change.
        reason: &'static str,
    },
    /// The [`LockManager`](crate::LockManager) was closed.
    ManagerClosed,
    /// A list of hosts to choose the primary from was empty
    /// ([`LockManager::with_hosts`](crate::LockManager::with_hosts),
    /// [`connect_primary`](crate::connect_primary)). Not retryable: the fix
    /// is configuration.
    NoHosts,
    /// None of the hosts is a primary that accepts writes: each was a
    /// standby, read-only, or could not be reached. Each host tried, in
    /// order, with its answer. Retryable: during a failover, a standby
    /// becomes the primary.
    NoPrimary {
        /// Every host tried, in the order given, and what it answered.
        tried: Vec<HostTried>,
    },
    /// Any other failure of the connection or the server.
    Database(sqlx::Error),
}

/// One host asked whether it is the primary, and its answer; see
/// [`Error::NoPrimary`].
///
/// ```
/// use pglock_runtime::{Error, HostAnswer};
///
/// fn standbys(error: &Error) -> usize {
///     match error {
///         Error::NoPrimary { tried } => tried
///             .iter()
///             .filter(|host| *host.answer() == HostAnswer::Standby)
///             .count(),
///         _ => 0,
///     }
/// }
/// assert_eq!(standbys(&Error::NoHosts), 0);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostTried {
    host: String,
    port: u16,
    answer: HostAnswer,
}

/// What a host answered when asked whether it is the primary.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostAnswer {
    /// `pg_is_in_recovery()` is true: a hot standby.
    Standby,
    /// `transaction_read_only` is on (`default_transaction_read_only`, or
    /// a server that refuses writes): an advisory lock would be taken, but
    /// the host is not the read-write endpoint, as libpq's
    /// `target_session_attrs=read-write` decides.
    ReadOnly,
    /// The connection, or the question, failed: the server's or the
    /// network's error, or a timeout.
    Unreachable(String),
}

impl HostTried {
    pub(crate) fn new(host: String, port: u16, answer: HostAnswer) -> Self {
        Self { host, port, answer }
    }

    /// The host, as its connect options name it (a name, an address, or a
    /// unix socket's directory).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What it answered.
    pub fn answer(&self) -> &HostAnswer {
        &self.answer
    }
}

impl fmt::Display for HostTried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} ", self.host, self.port)?;
        match &self.answer {
            HostAnswer::Standby => f.write_str("is a standby (in recovery)"),
            HostAnswer::ReadOnly => f.write_str("is read-only (transaction_read_only is on)"),
            HostAnswer::Unreachable(error) => write!(f, "did not answer: {error}"),
        }
    }
}

/// A wait for a lock that ended without the lock; see [`Error::Conflict`].
///
/// ```no_run
/// # async fn run(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock_runtime::Error> {
/// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
/// use std::time::Duration;
/// match JOBS.lock(&7_i64).timeout(Duration::from_millis(250)).acquire(tx).await {
///     Err(pglock_runtime::Error::Conflict(conflict)) => eprintln!("{conflict}"),
///     other => {
///         other?;
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Conflict {
    lock: LockIdentity,
    waited: Duration,
    cause: ConflictCause,
    source: Option<sqlx::Error>,
}

/// What ended a wait for a lock.
///
/// ```
/// use pglock_runtime::{ConflictCause, Error};
///
/// fn advice(error: &Error) -> &'static str {
///     match error.as_conflict().map(|conflict| conflict.cause()) {
///         Some(ConflictCause::Deadlock) => "retry the transaction",
///         Some(_) => "the lock stayed busy",
///         None => "not a conflict",
///     }
/// }
/// assert_eq!(advice(&Error::Standby), "not a conflict");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConflictCause {
    /// `lock_timeout` expired (SQLSTATE 55P03): pglock's cap or a stricter
    /// setting of the caller's.
    LockTimeout,
    /// `statement_timeout` expired, or the wait was cancelled
    /// (`pg_cancel_backend`; SQLSTATE 57014).
    StatementTimeoutOrCancel,
    /// PostgreSQL found a deadlock and chose this transaction to abort
    /// (SQLSTATE 40P01).
    Deadlock,
    /// `transaction_timeout` expired during the wait (PostgreSQL 17 and
    /// later; SQLSTATE 25P04). The server ended the session, so the
    /// connection is closed and the transaction is gone, savepoint or not:
    /// run it again on another connection.
    TransactionTimeout,
}

impl ConflictCause {
    /// The SQLSTATE that PostgreSQL reports for this cause.
    ///
    /// ```
    /// # use pglock_runtime::ConflictCause;
    /// assert_eq!(ConflictCause::LockTimeout.sqlstate(), "55P03");
    /// ```
    pub const fn sqlstate(self) -> &'static str {
        match self {
            ConflictCause::LockTimeout => "55P03",
            ConflictCause::StatementTimeoutOrCancel => "57014",
            ConflictCause::Deadlock => "40P01",
            ConflictCause::TransactionTimeout => "25P04",
        }
    }

    pub(crate) fn from_sqlstate(code: &str) -> Option<Self> {
        match code {
            "55P03" => Some(ConflictCause::LockTimeout),
            "57014" => Some(ConflictCause::StatementTimeoutOrCancel),
            "40P01" => Some(ConflictCause::Deadlock),
            "25P04" => Some(ConflictCause::TransactionTimeout),
            _ => None,
        }
    }
}

impl Conflict {
    /// The lock that was waited for.
    pub fn lock(&self) -> &LockIdentity {
        &self.lock
    }

    /// How long the wait lasted, measured by the client.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// What ended the wait.
    pub fn cause(&self) -> ConflictCause {
        self.cause
    }

    /// The SQLSTATE the server reported.
    pub fn sqlstate(&self) -> &'static str {
        self.cause.sqlstate()
    }

    /// The server's error as sqlx reported it; `None` when no statement
    /// failed: a [`LockManager`](crate::LockManager) request that timed out
    /// while another guard of the same manager held the lock, or a
    /// semaphore whose wait reached its deadline (the wait keeps it on the
    /// server, and the transaction stays usable).
    pub fn source(&self) -> Option<&sqlx::Error> {
        self.source.as_ref()
    }
}

impl Error {
    /// Whether running the whole transaction again may succeed: true for a
    /// conflict, a busy lock, a serialization failure, a lost lock and no
    /// primary among the hosts (a failover may be under way), false for
    /// errors that repeat until something is changed (a standby, a call
    /// outside a transaction, a full lock table, bad input, no hosts).
    ///
    /// ```
    /// # use pglock_runtime::Error;
    /// assert!(!Error::NotInTransaction.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Conflict(_) | Error::Busy(_) => true,
            Error::Database(error) => matches!(
                sqlstate(error).as_deref(),
                Some("40001" | "40P01" | "55P03")
            ),
            Error::LockLost(_) | Error::ManagerBusy { .. } | Error::NoPrimary { .. } => true,
            Error::Standby
            | Error::NotInTransaction
            | Error::LockTableFull(_)
            | Error::LockBudget { .. }
            | Error::InvalidLockBudget { .. }
            | Error::FencingToken { .. }
            | Error::InvalidTimeout { .. }
            | Error::InvalidPermits { .. }
            | Error::PermitsMismatch { .. }
            | Error::PermitWaitUnavailable { .. }
            | Error::InvalidNamespace { .. }
            | Error::ManagerClosed
            | Error::NoHosts => false,
        }
    }

    /// The conflict, when this error is one.
    ///
    /// ```
    /// # use pglock_runtime::Error;
    /// assert!(Error::Standby.as_conflict().is_none());
    /// ```
    pub fn as_conflict(&self) -> Option<&Conflict> {
        match self {
            Error::Conflict(conflict) => Some(conflict),
            _ => None,
        }
    }

    /// Classifies a failure of a statement that was not waiting for a lock.
    pub(crate) fn from_sqlx(error: sqlx::Error) -> Self {
        match sqlstate(&error).as_deref() {
            Some("53200") => Error::LockTableFull(error),
            _ => Error::Database(error),
        }
    }

    /// A timeout that no statement reported as an error: spent waiting
    /// in-process, for a lock a guard of the same lock manager held; or a
    /// semaphore's wait, which keeps its deadline itself on the server.
    pub(crate) fn timed_out_in_process(lock: &LockIdentity, waited: Duration) -> Self {
        Error::Conflict(Conflict {
            lock: lock.clone(),
            waited,
            cause: ConflictCause::LockTimeout,
            source: None,
        })
    }

    /// Classifies a failure of a statement that was waiting for `lock`.
    pub(crate) fn from_wait(error: sqlx::Error, lock: &LockIdentity, waited: Duration) -> Self {
        match sqlstate(&error)
            .as_deref()
            .and_then(ConflictCause::from_sqlstate)
        {
            Some(cause) => Error::Conflict(Conflict {
                lock: lock.clone(),
                waited,
                cause,
                source: Some(error),
            }),
            None => Error::from_sqlx(error),
        }
    }
}

pub(crate) fn sqlstate(error: &sqlx::Error) -> Option<std::borrow::Cow<'_, str>> {
    error.as_database_error()?.code()
}

/// Whether `error` says the session is over, and with it every session lock
/// it held: the connection failed (I/O, a protocol error, sqlx's worker
/// gone), or the server ended the session (SQLSTATE class 08, a connection
/// exception; 57P01 to 57P05: an administrator's terminate or shutdown, a
/// crash of the server, a server that can't accept connections now, its
/// database dropped, an idle session timeout; 25P03: an idle-in-transaction
/// timeout).
pub(crate) fn ends_session(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        _ => sqlstate(error).is_some_and(|code| {
            code.starts_with("08")
                || matches!(
                    &*code,
                    "57P01" | "57P02" | "57P03" | "57P04" | "57P05" | "25P03"
                )
        }),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Conflict(conflict) => fmt::Display::fmt(conflict, f),
            Error::Busy(lock) => {
                write!(f, "advisory lock {lock} is busy and was not waited for")
            }
            Error::LockLost(lock) => write!(
                f,
                "session advisory lock {lock} was lost: its session no longer \
                 holds it (the connection broke, or a transaction-pooling proxy such as PgBouncer \
                 sent the statement to another backend, which may still hold the lock)"
            ),
            Error::Standby => f.write_str(
                "the server is a hot standby: an advisory lock there would not exclude the primary",
            ),
            Error::NotInTransaction => f.write_str(
                "a transaction-scoped advisory lock needs a transaction block: begin a transaction first",
            ),
            Error::LockTableFull(_) => f.write_str(
                "the server's lock table is full (SQLSTATE 53200): raise max_locks_per_transaction or take fewer locks at once",
            ),
            Error::InvalidTimeout { timeout } => write!(
                f,
                "lock timeout {timeout:?} is not usable: it must be between 1ms and {}ms",
                i32::MAX
            ),
            Error::InvalidPermits { permits } => write!(
                f,
                "a semaphore of {permits} permits is not usable: it must have 1 to 1024 permits"
            ),
            Error::PermitsMismatch {
                semaphore,
                permits,
                seen,
            } => write!(
                f,
                "semaphore {semaphore} was asked for with {permits} permits, but another holder \
                 uses at least {seen}: every holder of one semaphore must give the same number"
            ),
            Error::PermitWaitUnavailable { semaphore, source } => write!(
                f,
                "semaphore {semaphore} has no free permit, and its wait, a PL/pgSQL block, \
                 may not run here ({source}): grant USAGE ON LANGUAGE plpgsql to the role, or \
                 CREATE EXTENSION plpgsql in the database"
            ),
            Error::InvalidNamespace { reason } => write!(f, "invalid lock namespace: {reason}"),
            Error::ManagerBusy { max_connections } => write!(
                f,
                "the lock manager has no connection for a wait: all {max_connections} are \
                 waiting or hold locks (a wait needs a connection of its own; raise \
                 max_connections)"
            ),
            Error::LockBudget { budget, table } => {
                write!(
                    f,
                    "the lock manager holds its budget of {budget} locks and takes no more"
                )?;
                if let Some(table) = table {
                    write!(f, " (the server's lock table: {table})")?;
                }
                f.write_str(
                    "; release locks, raise ManagerOptions::lock_budget, or raise the server's \
                     max_locks_per_transaction (a full lock table stops every session and \
                     every new connection of the server)",
                )
            }
            Error::InvalidLockBudget { percent } => write!(
                f,
                "a lock manager's share of the lock table must be a percentage from 1 to 100, not {percent}"
            ),
            Error::FencingToken { reason } => write!(f, "no fencing token: {reason}"),
            Error::ManagerClosed => f.write_str("the lock manager was closed"),
            Error::NoHosts => f.write_str(
                "no host was given to choose the primary from: pass at least one host's connect options",
            ),
            Error::NoPrimary { tried } => {
                f.write_str("no host is a primary that accepts writes")?;
                for (index, host) in tried.iter().enumerate() {
                    f.write_str(if index == 0 { ": " } else { "; " })?;
                    write!(f, "{host}")?;
                }
                f.write_str(" (during a failover, try again once a standby is promoted)")
            }
            Error::Database(error) => write!(f, "database error: {error}"),
        }
    }
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.cause {
            ConflictCause::LockTimeout => "lock_timeout expired",
            ConflictCause::StatementTimeoutOrCancel => {
                "statement_timeout expired or the wait was cancelled"
            }
            ConflictCause::Deadlock => "deadlock detected",
            ConflictCause::TransactionTimeout => {
                "transaction_timeout expired and the server closed the connection"
            }
        };
        write!(
            f,
            "advisory lock {} not acquired after {:?}: {why} (SQLSTATE {})",
            self.lock,
            self.waited,
            self.sqlstate()
        )
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Conflict(conflict) => conflict
                .source
                .as_ref()
                .map(|error| error as &(dyn std::error::Error + 'static)),
            Error::LockTableFull(error)
            | Error::Database(error)
            | Error::PermitWaitUnavailable { source: error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Error::from_sqlx(error)
    }
}
