//! What the `#[advisory_lock]` attribute expands into. Not a public API:
//! only the macro calls these, and they may change in any release (the
//! macro crate is pinned to this exact version).
//!
//! The macro is only syntax; every check that depends on a type is a trait
//! bound here, with a `#[diagnostic::on_unimplemented]` message written for
//! the user, and the expansion spans the call on the user's token (the key,
//! the transaction parameter, the return type) so the error points there.

use sqlx::postgres::PgConnection;

pub use crate::XactConnection;
use crate::{Acquired, Error, LockFamily, LockKey, LockSet, Mode, Namespace, XactLock};

/// The connection of the function's transaction parameter.
pub fn connection<T: XactConnection + ?Sized>(transaction: &mut T) -> &mut PgConnection {
    transaction.connection()
}

/// What `ns = PATH` may name, for a key of type `K`: a [`Namespace`] takes
/// any key, a `LockFamily<K>` only `K` (or `&K`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a lock namespace for keys of type `{K}`",
    label = "expected a `static` of type `pglock::Namespace`, or `pglock::LockFamily<{K}>`",
    note = "`ns` takes a string literal (`ns = \"billing:invoice\"`), an integer literal (`ns = 0x7275_6e6c_9e37_79b9`), either of them in `pair(..)` for the int4 pair key space, or the path of a `static` `pglock::Namespace` (for keys of any type) or `pglock::LockFamily<K>` (for keys of type `K` only)",
    note = "a lock family fixes its key type so that every lock of the family derives its id the same way: convert the key, or lock through a family of this key type"
)]
pub trait LockNamespace<K: ?Sized> {
    /// The namespace the lock is taken in.
    fn namespace(&self) -> &Namespace;
}

impl<K: LockKey + ?Sized> LockNamespace<K> for Namespace {
    fn namespace(&self) -> &Namespace {
        self
    }
}

impl<K: LockKey + ?Sized> LockNamespace<K> for LockFamily<K> {
    fn namespace(&self) -> &Namespace {
        self
    }
}

impl<K: LockKey + ?Sized> LockNamespace<&K> for LockFamily<K> {
    fn namespace(&self) -> &Namespace {
        self
    }
}

/// A transaction-scoped lock on `key` in `namespace`. The key comes first
/// so that its type is known when the namespace is checked against it.
pub fn lock<'ns, N, K>(key: &K, namespace: &'ns N) -> XactLock<'ns>
where
    N: LockNamespace<K> + ?Sized,
    K: LockKey + ?Sized,
{
    namespace.namespace().lock(key)
}

/// Adds a lock on `key` in `namespace` to `set`.
pub fn add<'ns, N, K>(set: LockSet<'ns>, key: &K, namespace: &'ns N, mode: Mode) -> LockSet<'ns>
where
    N: LockNamespace<K> + ?Sized,
    K: LockKey + ?Sized,
{
    set.with(namespace.namespace(), key, mode)
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

impl Skipping for LockSet<'_> {
    fn skipping(self) -> Self {
        self.silence_busy()
    }
}

/// `Ok(true)` when the lock was taken, `Ok(false)` when it was busy (after
/// the "skipped" event), the error otherwise.
pub fn acquired_or_skipped(
    outcome: Result<Acquired, Error>,
    function: &'static str,
) -> Result<bool, Error> {
    match outcome {
        Ok(_) => Ok(true),
        Err(Error::Busy {
            namespace,
            id,
            mode,
        }) => {
            tracing::info!(
                target: "pglock",
                namespace = %namespace,
                key = %id,
                mode = %mode,
                function,
                outcome = "skipped",
                "advisory lock busy; skipped"
            );
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

/// The exact text of the capped-wait statement of `namespace` for `mode`:
/// the benchmark times it on a free key, which the runtime itself never
/// does (it sends the statement only after a failed try).
pub fn capped_wait_statement(namespace: &Namespace, mode: Mode) -> std::sync::Arc<str> {
    namespace.statements().xact_capped_wait(mode)
}
