//! Metrics through the `metrics` facade (feature `metrics`): what became of
//! acquisitions, how long they waited, how long session locks were held,
//! how many are held now. Without the feature every function here is empty
//! and compiles away; with it and no recorder installed, the facade's
//! no-op recorder takes them.
//!
//! Labels are the namespace's label, the mode and the outcome, never the
//! key, so that the number of series stays bounded.

use std::time::Duration;

use crate::contract::mode::Mode;
use crate::error::ConflictCause;
use crate::identity::{Label, LockIdentity};

/// Counter: acquisitions by outcome (`acquired`, `acquired_after_wait`,
/// `busy`, `skipped`, `conflict_lock_timeout`, `conflict_statement_timeout`,
/// `conflict_deadlock`, `conflict_transaction_timeout`, `failed`, `lost`).
pub const ACQUISITIONS: &str = "pglock_acquisitions_total";
/// Histogram: seconds waited for a busy lock, by outcome.
pub const WAIT_SECONDS: &str = "pglock_wait_seconds";
/// Histogram: seconds a session lock (guard, lease, managed guard) was held.
pub const HOLD_SECONDS: &str = "pglock_hold_seconds";
/// Gauge: session locks held now.
pub const SESSION_LOCKS_HELD: &str = "pglock_session_locks_held";

/// What became of an acquisition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Free at once.
    Acquired,
    /// Taken after a wait.
    AcquiredAfterWait,
    /// Busy, and not waited for.
    Busy,
    /// Busy, and the work skipped (the attribute's `skip`).
    Skipped,
    /// A wait ended without the lock.
    Conflict(ConflictCause),
    /// A wait ended with another error.
    Failed,
    /// A held session lock was found gone.
    Lost,
}

impl Outcome {
    /// The `outcome` label.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Outcome::Acquired => "acquired",
            Outcome::AcquiredAfterWait => "acquired_after_wait",
            Outcome::Busy => "busy",
            Outcome::Skipped => "skipped",
            Outcome::Conflict(ConflictCause::LockTimeout) => "conflict_lock_timeout",
            Outcome::Conflict(ConflictCause::StatementTimeoutOrCancel) => {
                "conflict_statement_timeout"
            }
            Outcome::Conflict(ConflictCause::Deadlock) => "conflict_deadlock",
            Outcome::Conflict(ConflictCause::TransactionTimeout) => "conflict_transaction_timeout",
            Outcome::Failed => "failed",
            Outcome::Lost => "lost",
        }
    }
}

/// The `mode` label.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
const fn mode_label(mode: Mode) -> &'static str {
    match mode {
        Mode::Exclusive => "exclusive",
        Mode::Shared => "shared",
    }
}

/// Counts one acquisition of a lock in `namespace`, in `mode`.
#[inline]
pub(crate) fn acquisition(namespace: &Label, mode: Mode, outcome: Outcome) {
    #[cfg(feature = "metrics")]
    metrics::counter!(
        ACQUISITIONS,
        "namespace" => namespace.shared(),
        "mode" => mode_label(mode),
        "outcome" => outcome.label()
    )
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (namespace, mode, outcome);
}

/// Records a wait that ended with `outcome` after `waited`, and counts it.
pub(crate) fn wait(lock: &LockIdentity, outcome: Outcome, waited: Duration) {
    acquisition(lock.label(), lock.mode(), outcome);
    #[cfg(feature = "metrics")]
    metrics::histogram!(
        WAIT_SECONDS,
        "namespace" => lock.label().shared(),
        "mode" => mode_label(lock.mode()),
        "outcome" => outcome.label()
    )
    .record(waited.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = waited;
}

/// Held while a session lock is held: counts it in the gauge, and records
/// how long it was held when dropped (released, lost or abandoned).
#[must_use]
pub(crate) struct HoldMeter {
    #[cfg(feature = "metrics")]
    held: (metrics::SharedString, &'static str, std::time::Instant),
}

impl HoldMeter {
    pub(crate) fn start(lock: &LockIdentity) -> Self {
        #[cfg(feature = "metrics")]
        {
            let (namespace, mode) = (lock.label().shared(), mode_label(lock.mode()));
            metrics::gauge!(SESSION_LOCKS_HELD, "namespace" => namespace.clone(), "mode" => mode)
                .increment(1.0);
            HoldMeter {
                held: (namespace, mode, std::time::Instant::now()),
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = lock;
            HoldMeter {}
        }
    }
}

impl Drop for HoldMeter {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        {
            let (namespace, mode, since) = &self.held;
            metrics::gauge!(SESSION_LOCKS_HELD, "namespace" => namespace.clone(), "mode" => *mode)
                .decrement(1.0);
            metrics::histogram!(HOLD_SECONDS, "namespace" => namespace.clone(), "mode" => *mode)
                .record(since.elapsed().as_secs_f64());
        }
    }
}
