//! What the `#[advisory_lock]` attribute expands into. Not a public API:
//! only the macro calls these, and they may change in any release (the
//! macro crate is pinned to this exact version).
//!
//! The macro is only syntax; every check that depends on a type is a trait
//! bound here, with a `#[diagnostic::on_unimplemented]` message written for
//! the user, and the expansion spans the call on the user's token (the key,
//! the transaction parameter, the return type) so the error points there.

use sqlx::postgres::PgConnection;

use crate::contract::family::NamespaceFor;
use crate::contract::key::LockKey;
use crate::contract::mode::Mode;
use crate::engine::events;
use crate::error::Error;
use crate::front::lock_set::XactLockSet;
use crate::front::semaphore::XactSemaphore;
pub use crate::front::xact_lock::XactConnection;
use crate::front::xact_lock::XactLock;

/// The connection of the function's transaction parameter.
pub fn connection<T: XactConnection + ?Sized>(transaction: &mut T) -> &mut PgConnection {
    transaction.connection()
}

/// A transaction-scoped lock on `key` in `namespace`. The key comes first
/// so that its type is known when the namespace is checked against it.
pub fn lock<'ns, N, K>(key: &K, namespace: &'ns N) -> XactLock<'ns>
where
    N: NamespaceFor<K> + ?Sized,
    K: LockKey + ?Sized,
{
    namespace.namespace().lock(key)
}

/// A permit of the transaction-scoped semaphore of `permits` permits on
/// `key` in `namespace` (the attribute's `permits = N`, checked to be 1 to
/// 1024 at compile time).
pub fn semaphore<'ns, N, K>(key: &K, namespace: &'ns N, permits: u32) -> XactSemaphore<'ns>
where
    N: NamespaceFor<K> + ?Sized,
    K: LockKey + ?Sized,
{
    namespace.namespace().semaphore(key, permits)
}

/// Adds a lock on `key` in `namespace` to `set`.
pub fn add<'ns, N, K>(
    set: XactLockSet<'ns>,
    key: &K,
    namespace: &'ns N,
    mode: Mode,
) -> XactLockSet<'ns>
where
    N: NamespaceFor<K> + ?Sized,
    K: LockKey + ?Sized,
{
    set.with(namespace, key, mode)
}

/// A `skip` request: tried once, and its busy lock reported by
/// [`acquired_or_skipped`] alone, as "skipped".
pub trait Skipping {
    /// The request, reporting nothing itself when the lock is busy.
    fn skipping(self) -> Self;
}

impl Skipping for XactLock<'_> {
    fn skipping(self) -> Self {
        self.silence_busy()
    }
}

impl Skipping for XactLockSet<'_> {
    fn skipping(self) -> Self {
        self.silence_busy()
    }
}

impl Skipping for XactSemaphore<'_> {
    fn skipping(self) -> Self {
        self.silence_busy()
    }
}

/// `Ok(true)` when the lock was taken, `Ok(false)` when it was busy (after
/// the "skipped" event), the error otherwise.
pub fn acquired_or_skipped<T>(
    outcome: Result<T, Error>,
    function: &'static str,
) -> Result<bool, Error> {
    match outcome {
        Ok(_) => Ok(true),
        Err(Error::Busy(lock)) => {
            events::skipped(&lock, function);
            Ok(false)
        }
        Err(error) => Err(error),
    }
}

/// What a `skip` function returns when the lock is busy: `Ok(None)`.
#[diagnostic::on_unimplemented(
    message = "`skip` needs the function to return `Result<Option<T>, E>`, not `{Self}`",
    label = "when the lock is busy, `skip` returns `Ok(None)`: this type has no `Option` for it",
    note = "write the return type as `Result<Option<T>, E>`, or use `no_wait` to fail with `pglock::Error::Busy` instead"
)]
pub trait SkipReturn {
    /// `Ok(None)`.
    fn skipped() -> Self;
}

impl<T, E> SkipReturn for Result<Option<T>, E> {
    fn skipped() -> Self {
        Ok(None)
    }
}

/// The value a `skip` function returns when the lock is busy.
pub fn skipped<R: SkipReturn>() -> R {
    R::skipped()
}
