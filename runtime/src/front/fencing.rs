//! Fencing tokens: a number that grows with each acquisition, for the
//! resource a lock protects to refuse a holder that lost its lock and does
//! not know it yet.
//!
//! A session lock can be lost while its holder still acts: the backend is
//! terminated, the network stops answering, and until the holder's next
//! check tells it so, another holder may already have the lock. A token
//! taken when the lock is granted, and checked by the resource at every
//! write (a write with a token older than the newest one it has seen is
//! refused), closes that window.
//!
//! The token is a new transaction id (`pg_current_xact_id()`, 64 bits with
//! its epoch), assigned after the grant in a transaction of its own that
//! commits with `synchronous_commit = on`. Transaction ids are handed out
//! in increasing order, so a token taken after a grant is greater than
//! every token taken before it, whoever took it. The commit is on disk
//! before the token is returned, so after a restart or a crash the server
//! never hands out an id at or below it again: after a crash, the server
//! hands out ids from the last one its WAL shows. A transaction that writes
//! nothing to the WAL commits asynchronously whatever `synchronous_commit`
//! says, and an id whose commit was lost in a crash is handed out again
//! (`tests/fencing.rs` saw exactly that); so the token's transaction writes
//! an empty logical decoding message (prefix `pglock.fence`, visible to
//! logical decoding consumers, ignored by replication), which makes its
//! commit wait for the flush. No table is needed, in any database, and no
//! privilege beyond connecting. On an asynchronous standby promoted after a
//! failover, the last commits may be missing, and with them the guarantee
//! for the tokens they carried; a synchronous standby keeps it.

use std::fmt;

use sqlx::Row;
use sqlx::postgres::PgConnection;

use crate::error::Error;
use crate::sql::statements::{FENCING_TOKEN, NOT_ALONE};

/// A number that grows with each acquisition of a lock, for the resource the
/// lock protects to refuse writes of a holder that lost the lock.
///
/// Asked for per request (`with_fencing_token()` on a
/// [`SessionLock`](crate::SessionLock) or a [`ManagedLock`](crate::ManagedLock));
/// read from the [`SessionGuard`](crate::SessionGuard), the
/// [`Lease`](crate::Lease) or the [`ManagedGuard`](crate::ManagedGuard). A
/// token is strictly greater than every token issued for the lock before
/// it was granted, across server restarts and crashes; it costs one more
/// round trip and a durable commit at acquisition.
///
/// ```no_run
/// # async fn run(pool: &sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// static REPORTS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("reports");
///
/// let guard = REPORTS
///     .session_lock(&"daily")
///     .with_fencing_token()
///     .acquire(pool.acquire().await?)
///     .await?;
/// let token = guard.fencing_token().expect("asked for");
/// // The resource keeps the newest token it has seen and refuses older ones.
/// let written = sqlx::query(
///     "UPDATE reports SET body = $2, fence = $3 WHERE name = $1 AND fence <= $3",
/// )
/// .bind("daily")
/// .bind("...")
/// .bind(token.as_i64())
/// .execute(pool)
/// .await?
/// .rows_affected();
/// assert_eq!(written, 1, "a newer holder wrote meanwhile: this holder lost the lock");
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(u64);

impl FencingToken {
    /// The token as a number.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The token as PostgreSQL's `bigint`, for a column or a parameter
    /// (transaction ids stay far below `i64::MAX`).
    pub fn as_i64(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Why a token can't be asked for with a shared lock.
pub(crate) const SHARED: &str = "a fencing token is for an exclusive lock: two shared holders \
     at once would each fence the other out; take the lock exclusively";

/// Why a token can't be issued inside a transaction.
const IN_TRANSACTION: &str = "it is issued on the lock's own connection, which must be in no \
     transaction; commit or roll back first (nothing was committed, and the connection is closed)";

/// Issues a token on `conn`, which holds the lock and must be in no
/// transaction. On an error of the server, the token's transaction is left
/// aborted: the caller rolls it back or closes the connection.
pub(crate) async fn issue(conn: &mut PgConnection) -> Result<FencingToken, Error> {
    let row = sqlx::raw_sql(FENCING_TOKEN)
        .fetch_one(conn)
        .await
        .map_err(|error| match error.as_database_error() {
            Some(database) if database.message().contains(NOT_ALONE) => Error::FencingToken {
                reason: IN_TRANSACTION,
            },
            _ => Error::from_sqlx(error),
        })?;
    let token: i64 = row.try_get(0).map_err(Error::from_sqlx)?;
    u64::try_from(token).map(FencingToken).map_err(|_| {
        Error::from_sqlx(sqlx::Error::Decode(
            format!("a negative transaction id: {token}").into(),
        ))
    })
}
