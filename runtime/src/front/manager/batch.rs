//! The short transactions a manager's connection runs its tries and
//! releases in.
//!
//! PostgreSQL walks a backend's whole table of local locks at the end of
//! every transaction, and outside a transaction block every statement is a
//! transaction: on a connection that holds L session locks, each statement
//! costs time in proportion to L (psql on PostgreSQL 15: 3,000 try-and-unlock
//! pairs took 0.4 s holding 10 locks, 2.1 s holding 10,000, and 0.4 s
//! holding 10,000 inside one transaction block). Session locks ignore
//! transactions: one taken or released inside a transaction that later
//! rolls back stays taken or released. So a connection opens a transaction
//! before a try or a release when it is busy (the [`STREAK`]th try or
//! release in a row to come within [`QUIET`] of the one before: a lone
//! acquire and release stay two statements) or heavy (it holds [`HEAVY`]
//! locks), and keeps it while statements keep coming; its task commits it
//! once the connection has been quiet for [`QUIET`], or at the latest
//! [`MAX_AGE`] after it began. Lock state never waits for that commit: a
//! try's grant and an unlock are seen by every other session at once. The
//! statements run in a savepoint, so that one that fails leaves the
//! transaction's own settings in force until its rollback.
//!
//! The transaction is READ COMMITTED and never gets a transaction id, so
//! between statements it holds no snapshot and keeps no row version from
//! vacuum; `pg_stat_activity` shows the connection `idle in transaction` for
//! at most [`QUIET`] after a burst.

use std::time::Duration;

use sqlx::AssertSqlSafe;
use sqlx::postgres::PgConnection;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::sql::statements::{BATCH_BEGIN, BATCH_BEGIN_17, BATCH_COMMIT, BATCH_ROLLBACK};

/// How long a connection's transaction stays open after its last statement.
pub(super) const QUIET: Duration = Duration::from_millis(2);

/// How long a connection's transaction may stay open while statements keep
/// coming: its commit walks the local lock table once per this time.
pub(super) const MAX_AGE: Duration = Duration::from_millis(100);

/// The tries and releases in a row, each within [`QUIET`] of the one
/// before, that make a connection busy.
pub(super) const STREAK: u32 = 4;

/// From this many locks held, a statement's own commit would cost about a
/// loopback round trip, the price of opening a transaction: a connection
/// holding as many opens one even for a single statement.
pub(super) const HEAVY: usize = 1_000;

/// An open connection of the manager.
pub(super) struct Open {
    conn: PgConnection,
    begin: &'static str,
    batch: Option<Instant>,
    /// When the last try or release on it ended.
    last: Option<Instant>,
    /// Tries and releases in a row, each within [`QUIET`] of the one before.
    streak: u32,
}

/// What the connection's task is to do about an open transaction.
pub(super) enum Due {
    /// None is open.
    Nothing,
    /// Commit it now.
    Commit,
    /// Look again then.
    At(Instant),
}

impl Open {
    pub(super) fn new(conn: PgConnection) -> Self {
        let begin = match conn.server_version_num() {
            Some(version) if version >= 170_000 => BATCH_BEGIN_17,
            _ => BATCH_BEGIN,
        };
        Open {
            conn,
            begin,
            batch: None,
            last: None,
            streak: 0,
        }
    }

    pub(super) fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    pub(super) fn into_conn(self) -> PgConnection {
        self.conn
    }

    /// Before a try or a release on a connection that holds `held` locks:
    /// opens a transaction when the connection is busy or heavy and has
    /// none, and tells `opened` (the connection's task, which commits it).
    pub(super) async fn before_statement(
        &mut self,
        held: usize,
        bound: Duration,
        opened: &Notify,
    ) -> Result<(), String> {
        let follows = self.last.is_some_and(|last| last.elapsed() < QUIET);
        self.streak = if follows {
            self.streak.saturating_add(1)
        } else {
            1
        };
        if self.batch.is_some() || (self.streak < STREAK && held < HEAVY) {
            return Ok(());
        }
        self.run(self.begin, bound).await?;
        self.batch = Some(Instant::now());
        opened.notify_one();
        Ok(())
    }

    /// When the last try or release on it ended.
    pub(super) fn last_used(&self) -> Option<Instant> {
        self.last
    }

    /// After a try or a release answered.
    pub(super) fn after_statement(&mut self) {
        self.last = Some(Instant::now());
    }

    /// After a statement failed on a connection that still answers: a
    /// transaction it failed in is rolled back, so the next statement runs.
    pub(super) async fn after_failure(&mut self, bound: Duration) -> Result<(), String> {
        if self.batch.take().is_some() {
            self.run(BATCH_ROLLBACK, bound).await?;
        }
        Ok(())
    }

    /// Commits the open transaction, if there is one: before a wait, a
    /// check, or when it is due.
    pub(super) async fn commit(&mut self, bound: Duration) -> Result<(), String> {
        if self.batch.take().is_some() {
            self.run(BATCH_COMMIT, bound).await?;
        }
        Ok(())
    }

    /// What the task is to do about the open transaction now.
    pub(super) fn due(&self) -> Due {
        let Some(opened) = self.batch else {
            return Due::Nothing;
        };
        let quiet = self.last.unwrap_or(opened) + QUIET;
        let due = quiet.min(opened + MAX_AGE);
        if due <= Instant::now() {
            Due::Commit
        } else {
            Due::At(due)
        }
    }

    async fn run(&mut self, sql: &'static str, bound: Duration) -> Result<(), String> {
        let statement = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut self.conn);
        match tokio::time::timeout(bound, statement).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("the connection failed: {error}")),
            Err(_) => Err(format!("`{sql}` did not answer within {bound:?}")),
        }
    }
}
