//! When a manager's connection runs its tries and releases inside a short
//! transaction: the policy alone, without I/O (the connection runs the
//! statements it decides, `connection.rs`).
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

use tokio::time::Instant;

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

/// One connection's short transaction: whether one is open, and the tries
/// and releases that decide when to open and commit one.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// When the open transaction began.
    opened: Option<Instant>,
    /// When the last try or release ended.
    last: Option<Instant>,
    /// Tries and releases in a row, each within [`QUIET`] of the one before.
    streak: u32,
}

/// What the connection's task is to do about an open transaction.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Due {
    /// None is open.
    Nothing,
    /// Commit it now.
    Commit,
    /// Look again then.
    At(Instant),
}

impl Batch {
    /// Before a try or a release on a connection that holds `held` locks:
    /// whether to open a transaction first (the connection is busy or
    /// heavy, and none is open).
    pub(super) fn opens_before_statement(&mut self, held: usize) -> bool {
        let follows = self.last.is_some_and(|last| last.elapsed() < QUIET);
        self.streak = if follows {
            self.streak.saturating_add(1)
        } else {
            1
        };
        self.opened.is_none() && (self.streak >= STREAK || held >= HEAVY)
    }

    /// A transaction was opened.
    pub(super) fn opened(&mut self) {
        self.opened = Some(Instant::now());
    }

    /// The transaction ends (committed or rolled back): whether one was open.
    pub(super) fn end(&mut self) -> bool {
        self.opened.take().is_some()
    }

    /// A try or release answered.
    pub(super) fn after_statement(&mut self) {
        self.last = Some(Instant::now());
    }

    /// When the last try or release ended.
    pub(super) fn last_used(&self) -> Option<Instant> {
        self.last
    }

    /// What the task is to do about the open transaction now.
    pub(super) fn due(&self) -> Due {
        let Some(opened) = self.opened else {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_statement_on_a_light_connection_opens_no_transaction() {
        let mut batch = Batch::default();
        assert!(!batch.opens_before_statement(HEAVY - 1));
        assert_eq!(batch.due(), Due::Nothing);
    }

    #[test]
    fn a_heavy_connection_opens_one_for_a_single_statement() {
        let mut batch = Batch::default();
        assert!(batch.opens_before_statement(HEAVY));
        batch.opened();
        // One is open now: the next statement runs in it.
        assert!(!batch.opens_before_statement(HEAVY));
        assert!(batch.end());
        assert!(!batch.end());
    }

    #[test]
    fn the_streaks_statement_opens_one() {
        let mut batch = Batch::default();
        for _ in 1..STREAK {
            assert!(!batch.opens_before_statement(0));
            batch.after_statement();
        }
        assert!(batch.opens_before_statement(0));
    }

    #[test]
    fn an_open_transaction_is_due_once_quiet() {
        let mut batch = Batch::default();
        batch.opened();
        batch.after_statement();
        assert!(matches!(batch.due(), Due::At(_)));
        std::thread::sleep(QUIET * 2);
        assert_eq!(batch.due(), Due::Commit);
    }
}
