//! The loss of a held session lock, and how its connection is checked:
//! shared by leases and the lock manager's guards.

use std::fmt;
use std::time::Duration;

use tokio::sync::watch;

use crate::identity::LockIdentity;

/// How a held session lock's connection is checked: a [`Lease`](crate::Lease)
/// checks its own, a [`LockManager`](crate::LockManager) each of its
/// connections (one check for all the locks it holds). From the same
/// options, pglock sets the server's TCP keepalives on those sessions, so
/// that a server behind a network that stops answering frees the lock only
/// after the holder learned of the loss (see
/// [`server_release_bound`](Self::server_release_bound)).
///
/// ```
/// use std::time::Duration;
/// use pglock_runtime::CheckOptions;
///
/// let options = CheckOptions::default().check_every(Duration::from_millis(500));
/// assert_eq!(options.detection_bound(), Duration::from_millis(500) + Duration::from_secs(5));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    check_interval: Duration,
    check_timeout: Duration,
}

impl Default for CheckOptions {
    /// A check every 5 s that may take up to 5 s: a loss is reported within
    /// 10 s.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use pglock_runtime::CheckOptions;
    /// let five = Duration::from_secs(5);
    /// assert_eq!(CheckOptions::default(), CheckOptions::default().check_every(five).check_timeout(five));
    /// ```
    fn default() -> Self {
        Self {
            check_interval: Duration::from_secs(5),
            check_timeout: Duration::from_secs(5),
        }
    }
}

impl CheckOptions {
    /// How often the connection is checked (a query that the lock is still
    /// held by this session).
    pub fn check_every(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }

    /// How long one check may take before the lock counts as lost.
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = timeout;
        self
    }

    pub(crate) fn interval(&self) -> Duration {
        self.check_interval
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.check_timeout
    }

    /// The longest time between a loss and its report.
    pub fn detection_bound(&self) -> Duration {
        self.check_interval.saturating_add(self.check_timeout)
    }
}

/// Whether a checked lock is still held, as [`Lease::watch`](crate::Lease::watch)
/// and [`ManagedGuard::watch`](crate::ManagedGuard::watch) publish it.
///
/// ```no_run
/// # fn run(lease: &pglock_runtime::Lease) {
/// use pglock_runtime::HoldState;
/// match &*lease.watch().borrow() {
///     HoldState::Held => println!("still held"),
///     HoldState::Lost(lost) => eprintln!("{lost}"),
///     _ => {}
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HoldState {
    /// The lock is held.
    Held,
    /// The lock was lost.
    Lost(Loss),
}

/// The loss of a held lock (a lease's, or a lock manager's guard's):
/// which lock, and why it is known to be gone.
///
/// ```no_run
/// # async fn run(mut lease: pglock_runtime::Lease) {
/// let lost: pglock_runtime::Loss = lease.lost().await;
/// eprintln!("{lost}"); // advisory lock leader/… (exclusive) lost: the connection failed: …
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loss {
    lock: LockIdentity,
    reason: String,
}

impl Loss {
    /// The lock that was held.
    pub fn lock(&self) -> &LockIdentity {
        &self.lock
    }

    /// What the check found, such as "the session no longer holds the lock".
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl Loss {
    pub(crate) fn new(lock: LockIdentity, reason: String) -> Self {
        Self { lock, reason }
    }
}

/// Resolves when `state` says the lock is lost.
pub(crate) async fn until_lost(
    state: &mut watch::Receiver<HoldState>,
    lock: &LockIdentity,
) -> Loss {
    loop {
        if let HoldState::Lost(lost) = &*state.borrow_and_update() {
            return lost.clone();
        }
        if state.changed().await.is_err() {
            // The task that watches the lock ended without publishing a
            // loss: it can only have been stopped with the runtime.
            return Loss::new(
                lock.clone(),
                "the task watching the lock stopped".to_owned(),
            );
        }
    }
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "advisory lock {} lost: {}", self.lock, self.reason)
    }
}
