//! How a [`LockManager`](super::LockManager) is configured: its bound on
//! connections, their idle timeout and checks, and its budget of the
//! server's lock table.

use std::fmt;
use std::num::NonZeroUsize;
use std::time::Duration;

use crate::front::loss::CheckOptions;

/// How a [`LockManager`](super::LockManager) uses its connections.
///
/// ```
/// use std::time::Duration;
/// use pglock_runtime::{CheckOptions, ManagerOptions};
///
/// let options = ManagerOptions::default()
///     .max_connections(4)
///     .checks(CheckOptions::default().check_every(Duration::from_secs(1)));
/// assert_eq!(options.detection_bound(), Duration::from_secs(6));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ManagerOptions {
    pub(super) max_connections: usize,
    pub(super) idle_timeout: Duration,
    pub(super) checks: CheckOptions,
    pub(super) lock_budget: LockBudget,
}

impl Default for ManagerOptions {
    /// At most 8 connections; a connection that holds no lock closes after
    /// 30 s; checks as [`CheckOptions::default`]; a budget of a quarter of
    /// the server's lock table ([`LockBudget::default`]).
    fn default() -> Self {
        Self {
            max_connections: 8,
            idle_timeout: Duration::from_secs(30),
            checks: CheckOptions::default(),
            lock_budget: LockBudget::default(),
        }
    }
}

/// How many locks a [`LockManager`](super::LockManager) may hold at once.
///
/// PostgreSQL keeps advisory locks in the shared lock table that every
/// session's ordinary locks use too. Its documentation gives the table room
/// for `max_locks_per_transaction × (max_connections +
/// max_prepared_transactions)` locks (6,400 on a stock server: see
/// [`LockTable`]); the server adds room for its background processes and
/// some slack from spare shared memory. Once the table is full, every
/// statement that needs a lock fails with `out of shared memory`, and so
/// does every new connection, for every application and role, until locks
/// are released. A manager never takes the table for itself: a request
/// beyond its budget fails at once with
/// [`Error::LockBudget`](crate::Error::LockBudget), and nothing it holds is
/// affected.
///
/// ```
/// use std::num::NonZeroUsize;
/// use pglock_runtime::{LockBudget, LockTable, ManagerOptions};
///
/// let stock = LockTable::new(64, 100, 0);
/// assert_eq!(stock.entries(), 6_400);
/// assert_eq!(LockBudget::default().allows(Some(stock)), Some(1_600));
/// assert_eq!(LockBudget::table_share(10)?.allows(Some(stock)), Some(640));
/// assert!(LockBudget::table_share(0).is_err());
///
/// let fixed = LockBudget::locks(NonZeroUsize::new(20_000).unwrap());
/// let options = ManagerOptions::default().lock_budget(fixed);
/// # Ok::<(), pglock_runtime::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockBudget(Budget);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Budget {
    /// Percent of the documented table, 1 to 100.
    Share(u8),
    Locks(NonZeroUsize),
}

impl Default for LockBudget {
    /// A quarter of the server's table: room for the many locks a manager
    /// is for (1,600 on a stock server), while two managers at the default
    /// leave half the documented table, and the server's own extra room, to
    /// every other session.
    fn default() -> Self {
        LockBudget(Budget::Share(25))
    }
}

impl LockBudget {
    /// A share of the server's lock table, in percent (1 to 100), of the
    /// size [`LockTable::entries`] gives, learned when the manager connects.
    /// Give each of several managers of one server a share such that the
    /// shares add up to at most half.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLockBudget`](crate::Error::InvalidLockBudget) for 0
    /// or more than 100.
    pub const fn table_share(percent: u8) -> Result<Self, crate::Error> {
        if percent == 0 || percent > 100 {
            return Err(crate::Error::InvalidLockBudget { percent });
        }
        Ok(LockBudget(Budget::Share(percent)))
    }

    /// At most `max` locks, whatever the server's table. A budget past the
    /// table meets the server's own limit:
    /// [`Error::LockTableFull`](crate::Error::LockTableFull).
    pub const fn locks(max: NonZeroUsize) -> Self {
        LockBudget(Budget::Locks(max))
    }

    /// The number of locks this budget allows on a server whose table is
    /// `table`; `None` for a share of a table not known yet.
    pub fn allows(&self, table: Option<LockTable>) -> Option<usize> {
        match self.0 {
            Budget::Locks(max) => Some(max.get()),
            Budget::Share(percent) => {
                let share = table?.entries() * u64::from(percent) / 100;
                Some(usize::try_from(share.max(1)).unwrap_or(usize::MAX))
            }
        }
    }
}

/// The size of a server's shared lock table, from the settings that fix
/// it, as a [`LockManager`](super::LockManager) reads them when it connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockTable {
    max_locks_per_transaction: u32,
    max_connections: u32,
    max_prepared_transactions: u32,
}

impl LockTable {
    /// The table of a server with these settings.
    pub const fn new(
        max_locks_per_transaction: u32,
        max_connections: u32,
        max_prepared_transactions: u32,
    ) -> Self {
        Self {
            max_locks_per_transaction,
            max_connections,
            max_prepared_transactions,
        }
    }

    /// The locks PostgreSQL's documentation gives the table room for:
    /// `max_locks_per_transaction × (max_connections + max_prepared_transactions)`.
    /// The server sizes it a little larger (it counts its background
    /// processes too) and can grow it into spare shared memory: this is the
    /// size to plan with, not the point where it fails.
    pub const fn entries(&self) -> u64 {
        self.max_locks_per_transaction as u64
            * (self.max_connections as u64 + self.max_prepared_transactions as u64)
    }

    /// The server's `max_locks_per_transaction`.
    pub const fn max_locks_per_transaction(&self) -> u32 {
        self.max_locks_per_transaction
    }

    /// The server's `max_connections`.
    pub const fn max_connections(&self) -> u32 {
        self.max_connections
    }

    /// The server's `max_prepared_transactions`.
    pub const fn max_prepared_transactions(&self) -> u32 {
        self.max_prepared_transactions
    }
}

impl fmt::Display for LockTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} entries = max_locks_per_transaction {} × (max_connections {} + max_prepared_transactions {})",
            self.entries(),
            self.max_locks_per_transaction,
            self.max_connections,
            self.max_prepared_transactions
        )
    }
}

impl ManagerOptions {
    /// The most connections the manager opens at once (at least 1). Every
    /// wait takes a connection of its own until its lock is granted.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// How long a connection that holds no lock, and has run no try or
    /// release, stays open.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How each connection is checked: one check per connection, whatever
    /// the number of locks it holds.
    pub fn checks(mut self, checks: CheckOptions) -> Self {
        self.checks = checks;
        self
    }

    /// How many locks the manager may hold at once; see [`LockBudget`].
    pub fn lock_budget(mut self, budget: LockBudget) -> Self {
        self.lock_budget = budget;
        self
    }

    /// The longest time between the loss of a connection and its guards'
    /// report of it.
    pub fn detection_bound(&self) -> Duration {
        self.checks.detection_bound()
    }
}
