//! Lock families: namespaces whose keys all have one type.

use std::fmt;
use std::marker::PhantomData;

use crate::contract::id::LockId;
use crate::contract::key::LockKey;
use crate::contract::namespace::Namespace;

/// A namespace whose keys all have type `K`, so that every lock of the
/// family derives its id the same way. Every way to lock through a family
/// ([`lock`](LockFamily::lock), [`lock_many`](LockFamily::lock_many),
/// [`session_lock`](LockFamily::session_lock), a lock set, the attribute's
/// `ns = FAMILY`) takes only `K`, checked by the compiler.
///
/// ```
/// use pglock_runtime::LockFamily;
///
/// static INVOICES: LockFamily<uuid::Uuid> = LockFamily::named("billing:invoice");
/// let id = INVOICES.id(&uuid::Uuid::nil());
/// assert_eq!(id, INVOICES.namespace().id(&uuid::Uuid::nil()));
/// ```
///
/// A key of another type is a compile error:
///
/// ```compile_fail
/// # use pglock_runtime::LockFamily;
/// static USERS: LockFamily<i64> = LockFamily::named("accounts:user");
/// # async fn run(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock_runtime::Error> {
/// USERS.lock(&"alice").acquire(tx).await?;
/// # Ok(()) }
/// ```
pub struct LockFamily<K: ?Sized> {
    namespace: Namespace,
    key: PhantomData<fn(&K)>,
}

impl<K: LockKey + ?Sized> LockFamily<K> {
    /// A family in the bigint key space named by a string; see
    /// [`Namespace::named`].
    pub const fn named(name: &'static str) -> Self {
        Self::from_namespace(Namespace::named(name))
    }

    /// A family over any namespace, such as [`Namespace::raw`] or
    /// [`Namespace::raw_pair`].
    ///
    /// ```
    /// # use pglock_runtime::{LockFamily, Namespace};
    /// static RUNS: LockFamily<uuid::Uuid> =
    ///     LockFamily::from_namespace(Namespace::raw(0x7275_6e6c_9e37_79b9, "runledger:release"));
    /// assert_eq!(RUNS.label(), "runledger:release");
    /// ```
    pub const fn from_namespace(namespace: Namespace) -> Self {
        Self {
            namespace,
            key: PhantomData,
        }
    }

    /// The underlying namespace, which takes keys of any type.
    pub const fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The name given to this family's namespace.
    pub fn label(&self) -> &str {
        self.namespace.label()
    }

    /// The advisory lock id of `key`; see [`Namespace::id`].
    pub fn id(&self, key: &K) -> LockId {
        self.namespace.id(key)
    }
}

impl<K: ?Sized> fmt::Debug for LockFamily<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LockFamily").field(&self.namespace).finish()
    }
}

/// Where a key of type `K` may be locked: any [`Namespace`], or a
/// [`LockFamily<K>`] (whose keys are `K`, or references to `K`). Lock sets,
/// the testing kit and the attribute take their namespace through this
/// trait, so a family's key type is checked on every path.
///
/// Sealed: implemented by [`Namespace`] and [`LockFamily`] only.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a lock namespace for keys of type `{K}`",
    label = "expected a `pglock::Namespace`, or a `pglock::LockFamily<{K}>`",
    note = "a `pglock::Namespace` takes keys of any type; a `pglock::LockFamily<K>` only keys of type `K`, so that every lock of the family derives its id the same way: convert the key, or lock through a family of this key type",
    note = "in `#[advisory_lock]`, `ns` takes a string literal (`ns = \"billing:invoice\"`), an integer literal (`ns = 0x7275_6e6c_9e37_79b9`), either of them in `pair(..)` for the int4 pair key space, or the path of a `static` namespace or lock family"
)]
pub trait NamespaceFor<K: ?Sized>: sealed::Sealed {
    /// The namespace the lock is taken in.
    fn namespace(&self) -> &Namespace;
}

impl<K: LockKey + ?Sized> NamespaceFor<K> for Namespace {
    fn namespace(&self) -> &Namespace {
        self
    }
}

impl<K: LockKey + ?Sized> NamespaceFor<K> for LockFamily<K> {
    fn namespace(&self) -> &Namespace {
        &self.namespace
    }
}

impl<K: LockKey + ?Sized> NamespaceFor<&K> for LockFamily<K> {
    fn namespace(&self) -> &Namespace {
        &self.namespace
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Namespace {}
    impl<K: ?Sized> Sealed for super::LockFamily<K> {}
}
