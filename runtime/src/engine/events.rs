//! Every `tracing` event pglock emits, in one place, so that each names its
//! lock the same way: fields `namespace`, `key` and `mode`, target `pglock`.

use std::time::{Duration, Instant};

use tracing::Level;

use crate::engine::measure::{self, Outcome};
use crate::error::Error;
use crate::identity::LockIdentity;

macro_rules! lock_event {
    ($level:expr, $lock:expr, $($rest:tt)+) => {
        tracing::event!(
            target: "pglock",
            $level,
            namespace = $lock.namespace(),
            key = %$lock.id(),
            mode = %$lock.mode(),
            $($rest)+
        )
    };
}

/// The one event of a busy lock that is not waited for.
pub(crate) fn not_waiting(lock: &LockIdentity) {
    measure::acquisition(lock.label(), lock.mode(), Outcome::Busy);
    lock_event!(
        Level::INFO,
        lock,
        outcome = "busy",
        "advisory lock is busy; not waiting"
    );
}

/// The one event of a busy lock that is skipped (the attribute's `skip`).
pub(crate) fn skipped(lock: &LockIdentity, function: &'static str) {
    measure::acquisition(lock.label(), lock.mode(), Outcome::Skipped);
    lock_event!(
        Level::INFO,
        lock,
        function,
        outcome = "skipped",
        "advisory lock busy; skipped"
    );
}

/// A wait begins.
pub(crate) fn waiting(lock: &LockIdentity, cap_ms: Option<u32>) {
    lock_event!(
        Level::INFO,
        lock,
        timeout_ms = cap_ms,
        "advisory lock is busy; waiting"
    );
}

/// A wait that began at `started` ended.
pub(crate) fn wait_ended(lock: &LockIdentity, outcome: Result<(), &Error>, started: Instant) {
    let measured = match outcome {
        Ok(()) => Outcome::AcquiredAfterWait,
        Err(Error::Conflict(conflict)) => Outcome::Conflict(conflict.cause()),
        Err(_) => Outcome::Failed,
    };
    measure::wait(lock, measured, started.elapsed());
    let waited_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(()) => lock_event!(
            Level::INFO,
            lock,
            waited_ms,
            outcome = "acquired",
            "advisory lock acquired after waiting"
        ),
        Err(error) => lock_event!(
            Level::WARN,
            lock,
            waited_ms,
            outcome = "failed",
            error = %error,
            "advisory lock not acquired"
        ),
    }
}

/// A transaction's wait was abandoned by its caller, and pglock cancels it
/// through a registered pool.
pub(crate) fn wait_abandoned(lock: &LockIdentity, pid: Option<i32>) {
    lock_event!(
        Level::INFO,
        lock,
        pid,
        "lock acquisition abandoned while waiting; cancelling the server-side wait"
    );
}

/// A transaction's wait was abandoned by its caller, and no pool is
/// registered to cancel it. The missing registration is one fix for the whole
/// process, so the warning that names it is said once (`first`); later
/// abandoned waits say so at debug level.
pub(crate) fn wait_abandoned_unregistered(lock: &LockIdentity, pid: Option<i32>, first: bool) {
    if first {
        lock_event!(
            Level::WARN,
            lock,
            pid,
            "lock acquisition abandoned while waiting, and no pool is registered to cancel \
             the server-side wait: its connection stays behind the wait until the lock is \
             granted or times out; call pglock::cancel_abandoned_waits(&pool) once per pool \
             at start-up (said once per process)"
        );
    } else {
        lock_event!(
            Level::DEBUG,
            lock,
            pid,
            "lock acquisition abandoned while waiting; not cancelled: no pool is registered"
        );
    }
}

/// A transaction's wait was abandoned outside a tokio runtime, where the
/// cancel can't be spawned.
pub(crate) fn wait_abandoned_without_runtime(lock: &LockIdentity, pid: Option<i32>) {
    lock_event!(
        Level::WARN,
        lock,
        pid,
        "lock acquisition abandoned while waiting, outside a tokio runtime: the server-side \
         wait can't be cancelled, and its connection stays behind it until the lock is \
         granted or times out"
    );
}

/// The connection that would cancel an abandoned wait could not be opened.
pub(crate) fn cancel_connect_failed(pid: Option<i32>, error: &sqlx::Error) {
    tracing::warn!(target: "pglock", pid, %error, "could not connect to cancel an abandoned lock wait");
}

/// The cancel of an abandoned wait failed.
pub(crate) fn cancel_failed(pid: Option<i32>, error: &sqlx::Error) {
    tracing::warn!(target: "pglock", pid, %error, "could not cancel an abandoned lock wait");
}

/// A session guard was dropped while it held its lock.
pub(crate) fn guard_dropped(lock: &LockIdentity) {
    lock_event!(
        Level::WARN,
        lock,
        "session lock guard dropped without release; closing its connection to free the lock"
    );
}

/// A release got no answer in time: its connection is closed, and the lock
/// counts as lost.
pub(crate) fn release_unanswered(lock: &LockIdentity, bound: Duration) {
    lock_event!(
        Level::ERROR,
        lock,
        bound_ms = bound.as_millis() as u64,
        "advisory lock release got no answer in time; closing its connection, the lock counts as lost"
    );
}

/// A lease was dropped while it held its lock.
pub(crate) fn lease_dropped(lock: &LockIdentity) {
    lock_event!(
        Level::WARN,
        lock,
        "lease dropped without release; closing its connection to free the lock"
    );
}

/// A lease found its lock gone.
pub(crate) fn lease_lost(lock: &LockIdentity, held: Duration, reason: &str) {
    measure::acquisition(lock.label(), lock.mode(), Outcome::Lost);
    lock_event!(
        Level::ERROR,
        lock,
        held_ms = held.as_millis() as u64,
        reason = %reason,
        "lease lost: the advisory lock is no longer held"
    );
}

/// A lock manager's guard was dropped while it held its lock.
pub(crate) fn managed_guard_dropped(lock: &LockIdentity) {
    lock_event!(
        Level::INFO,
        lock,
        "lock manager guard dropped without release; unlocking it in the background"
    );
}

/// A request failed, yet the server had granted its lock (a timeout or a
/// cancel that fired at the grant): the lock was given back.
pub(crate) fn granted_despite_error(lock: &LockIdentity, error: &sqlx::Error) {
    lock_event!(
        Level::WARN,
        lock,
        %error,
        "advisory lock was granted as its request failed; given back"
    );
}

/// A lock manager could not open a connection, or release its locks.
pub(crate) fn manager_connection_failed(connection: u64, error: &dyn std::fmt::Display) {
    tracing::warn!(target: "pglock", connection, %error, "lock manager connection failed");
}

/// A lock manager's connection was lost, and the locks it held with it.
pub(crate) fn manager_connection_lost(connection: u64, locks: usize, reason: &str) {
    tracing::error!(
        target: "pglock",
        connection,
        locks,
        reason,
        "lock manager connection lost: its advisory locks are no longer held"
    );
}

/// A transaction run by `run` could not be rolled back.
pub(crate) fn rollback_failed(error: &sqlx::Error) {
    tracing::warn!(target: "pglock", %error, "rollback after failed work did not complete");
}
