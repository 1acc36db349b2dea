//! Namespaces, lock keys and the derivation of PostgreSQL advisory lock ids.
//!
//! The derivation is a persistent contract: two versions of one application
//! exclude each other only if they compute the same id for the same key, so
//! nothing here may change once shipped. `docs/KEYS.md` states it with golden
//! vectors and the SQL that reproduces every id in `psql`.
//!
//! In short, every key first becomes a 64-bit *key value* ([`LockKey`]); the
//! namespace then places it in one of PostgreSQL's two key spaces:
//!
//! - **bigint space** (`pg_advisory_xact_lock(bigint)`): `key_value ^ ns`,
//!   where a named namespace is the first 8 bytes of `sha256(name)`. For a
//!   uuid this is exactly `hi64 ^ lo64 ^ ns`.
//! - **int4 pair space** (`pg_advisory_xact_lock(int, int)`): the namespace is
//!   the first int (the class), the key value the second, folded to 32 bits
//!   when it does not fit.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::OnceLock;

use crate::Error;
use crate::acquire::{LockSet, XactLock};
use crate::sha256::sha256_prefix_u64;
use crate::statements::Statements;

/// The longest namespace label written into SQL comment markers; longer
/// labels are cut (the lock id always uses the whole name).
pub(crate) const MAX_MARKER_LABEL: usize = 64;

/// A lock namespace: the space that keeps one family of locks (say, invoice
/// settlements) apart from every other use of advisory locks in the database.
///
/// Declare namespaces as `static`s; a name is hashed by the compiler.
///
/// ```
/// use pglock_runtime::Namespace;
///
/// static INVOICES: Namespace = Namespace::named("billing:invoice");
/// // An existing hand-written key space keeps its exact keys:
/// static RELEASES: Namespace = Namespace::raw(0x7275_6e6c_9e37_79b9, "runledger:release");
///
/// assert_eq!(INVOICES.label(), "billing:invoice");
/// assert_ne!(INVOICES.id(&42_i64), RELEASES.id(&42_i64));
/// ```
pub struct Namespace {
    label: Cow<'static, str>,
    space: Space,
    // SQL texts carrying this namespace's marker, built on first use and then
    // shared by every acquisition: the uncontended path allocates nothing.
    statements: OnceLock<Statements>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Space {
    /// One `bigint`: the key value xor this mask.
    BigInt(u64),
    /// Two `int4`: this class, then the key value folded to 32 bits.
    Pair(i32),
}

impl Namespace {
    /// A namespace in the bigint key space named by a string: the mask is the
    /// first 8 bytes of `sha256(name)`, big-endian.
    ///
    /// # Panics
    ///
    /// If `name` is empty; in a `static` this is a compile-time error.
    ///
    /// ```
    /// # use pglock_runtime::Namespace;
    /// static JOBS: Namespace = Namespace::named("scheduler:job");
    /// assert_eq!(JOBS.label(), "scheduler:job");
    /// ```
    pub const fn named(name: &'static str) -> Self {
        assert!(
            !name.is_empty(),
            "a pglock namespace name must not be empty"
        );
        Self {
            label: Cow::Borrowed(name),
            space: Space::BigInt(sha256_prefix_u64(name.as_bytes())),
            statements: OnceLock::new(),
        }
    }

    /// A namespace in the bigint key space with a raw 64-bit mask, for key
    /// spaces that exist already (`label` only names it in markers and logs).
    ///
    /// ```
    /// # use pglock_runtime::Namespace;
    /// static RELEASES: Namespace = Namespace::raw(0x7275_6e6c_9e37_79b9, "runledger:release");
    /// let run = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
    /// let expected = (0x0123_4567_89ab_cdef_u64 ^ 0x0011_2233_4455_6677 ^ 0x7275_6e6c_9e37_79b9) as i64;
    /// assert_eq!(RELEASES.id(&run), pglock_runtime::LockId::BigInt(expected));
    /// ```
    pub const fn raw(mask: u64, label: &'static str) -> Self {
        Self {
            label: Cow::Borrowed(label),
            space: Space::BigInt(mask),
            statements: OnceLock::new(),
        }
    }

    /// A namespace in the int4 pair key space named by a string: the class is
    /// the first 4 bytes of `sha256(name)`, big-endian, as a signed `int4`.
    ///
    /// # Panics
    ///
    /// If `name` is empty; in a `static` this is a compile-time error.
    ///
    /// ```
    /// # use pglock_runtime::{LockId, Namespace};
    /// static TENANTS: Namespace = Namespace::named_pair("tenant:migrate");
    /// assert!(matches!(TENANTS.id(&7_i32), LockId::Pair(_, 7)));
    /// ```
    pub const fn named_pair(name: &'static str) -> Self {
        assert!(
            !name.is_empty(),
            "a pglock namespace name must not be empty"
        );
        Self {
            label: Cow::Borrowed(name),
            space: Space::Pair((sha256_prefix_u64(name.as_bytes()) >> 32) as u32 as i32),
            statements: OnceLock::new(),
        }
    }

    /// A namespace in the int4 pair key space with a raw class: keys lock
    /// `(class, key)`.
    ///
    /// ```
    /// # use pglock_runtime::{LockId, Namespace};
    /// static RUNLEDGER: Namespace = Namespace::raw_pair(0x7275_6e6c, "runledger");
    /// assert_eq!(RUNLEDGER.id(&0x696e_7465_i32), LockId::Pair(0x7275_6e6c, 0x696e_7465));
    /// ```
    pub const fn raw_pair(class: i32, label: &'static str) -> Self {
        Self {
            label: Cow::Borrowed(label),
            space: Space::Pair(class),
            statements: OnceLock::new(),
        }
    }

    /// A bigint-space namespace named by a string known only at run time.
    ///
    /// The name is hashed exactly as [`Namespace::named`] does; markers show
    /// a sanitised label, so no name can change the SQL that is sent.
    ///
    /// Each namespace has statements of its own (they carry its marker),
    /// prepared once per connection and kept in sqlx's statement cache (100
    /// per connection by default). Thousands of namespaces in turn on one
    /// connection (one per tenant, say) keep re-preparing: prefer one
    /// namespace with the tenant in the key, `(tenant, id)`.
    ///
    /// ```
    /// # use pglock_runtime::Namespace;
    /// let tenant = "acme";
    /// let ns = Namespace::try_named(format!("reports:{tenant}")).unwrap();
    /// assert_eq!(ns.id(&1_i64), Namespace::named("reports:acme").id(&1_i64));
    /// assert!(Namespace::try_named("").is_err());
    /// ```
    pub fn try_named(name: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        if name.is_empty() {
            return Err(Error::InvalidNamespace {
                reason: "a namespace name must not be empty",
            });
        }
        Ok(Self {
            space: Space::BigInt(sha256_prefix_u64(name.as_bytes())),
            label: Cow::Owned(name),
            statements: OnceLock::new(),
        })
    }

    /// The name given to this namespace.
    ///
    /// ```
    /// # use pglock_runtime::Namespace;
    /// static RELEASES: Namespace = Namespace::raw(0x7275_6e6c_9e37_79b9, "runledger:release");
    /// assert_eq!(RELEASES.label(), "runledger:release");
    /// ```
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The advisory lock id that `key` takes in this namespace.
    ///
    /// ```
    /// # use pglock_runtime::{LockId, Namespace};
    /// static ORDERS: Namespace = Namespace::raw(0, "orders");
    /// assert_eq!(ORDERS.id(&-5_i64), LockId::BigInt(-5));
    /// ```
    pub fn id<K: LockKey + ?Sized>(&self, key: &K) -> LockId {
        self.id_of_value(key.key_value())
    }

    pub(crate) fn id_of_value(&self, value: i64) -> LockId {
        match self.space {
            Space::BigInt(mask) => LockId::BigInt(value ^ mask as i64),
            Space::Pair(class) => LockId::Pair(class, fold_to_i32(value)),
        }
    }

    /// A transaction-scoped lock on `key` in this namespace, to configure and
    /// then acquire; see [`XactLock`].
    ///
    /// ```no_run
    /// # use pglock_runtime::Namespace;
    /// # async fn settle(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, invoice: uuid::Uuid) -> Result<(), pglock_runtime::Error> {
    /// static INVOICES: Namespace = Namespace::named("billing:invoice");
    /// INVOICES
    ///     .lock(&invoice)
    ///     .shared()
    ///     .timeout(std::time::Duration::from_secs(5))
    ///     .acquire(tx)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn lock<K: LockKey + ?Sized>(&self, key: &K) -> XactLock<'_> {
        XactLock::new(self, key.key_value())
    }

    /// Transaction-scoped locks on several keys of this namespace at once,
    /// taken in ascending id order; see [`LockSet`].
    ///
    /// ```no_run
    /// # use pglock_runtime::Namespace;
    /// # async fn transfer(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock_runtime::Error> {
    /// static ACCOUNTS: Namespace = Namespace::named("ledger:account");
    /// ACCOUNTS.lock_many([17_i64, 4]).acquire(tx).await?;
    /// # Ok(()) }
    /// ```
    pub fn lock_many<K, I>(&self, keys: I) -> LockSet<'_>
    where
        K: LockKey,
        I: IntoIterator<Item = K>,
    {
        let mut set = LockSet::new();
        for key in keys {
            set = set.exclusive(self, &key);
        }
        set
    }

    pub(crate) fn space(&self) -> Space {
        self.space
    }

    /// The comment every statement of this namespace starts with, as
    /// `pg_stat_activity.query` shows it: `/* pglock ns=<label> */`.
    pub fn marker(&self) -> &str {
        self.statements().marker()
    }

    pub(crate) fn statements(&self) -> &Statements {
        self.statements.get_or_init(|| Statements::new(self))
    }

    /// The label as written into SQL comment markers: printable characters
    /// from a fixed set only (so `*/` can never appear), at most
    /// [`MAX_MARKER_LABEL`] of them. A raw namespace without a label shows its
    /// number.
    pub(crate) fn marker_label(&self) -> String {
        if self.label.is_empty() {
            return match self.space {
                Space::BigInt(mask) => format!("{mask:#018x}"),
                Space::Pair(class) => format!("{class:#010x}"),
            };
        }
        sanitize_marker_label(&self.label)
    }
}

/// Replaces every character outside a fixed, comment-safe set with `?` and
/// cuts the result to [`MAX_MARKER_LABEL`] characters.
pub(crate) fn sanitize_marker_label(label: &str) -> String {
    label
        .chars()
        .take(MAX_MARKER_LABEL)
        .map(|c| {
            if c.is_alphanumeric()
                || matches!(c, ':' | '_' | '-' | '.' | '@' | '#' | '+' | '=' | ' ')
            {
                c
            } else {
                '?'
            }
        })
        .collect()
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Namespace")
            .field("label", &self.label)
            .field("space", &self.space)
            .finish()
    }
}

/// Folds a 64-bit key value into the second `int4` of the pair key space:
/// unchanged when it fits, `hi32 ^ lo32` otherwise.
const fn fold_to_i32(value: i64) -> i32 {
    if value >= i32::MIN as i64 && value <= i32::MAX as i64 {
        value as i32
    } else {
        ((value >> 32) as u32 ^ value as u32) as i32
    }
}

/// A namespace whose keys all have type `K`: the attribute macro checks a
/// key against it at compile time, and [`LockFamily::lock`] only takes `&K`.
///
/// ```
/// use pglock_runtime::LockFamily;
///
/// static INVOICES: LockFamily<uuid::Uuid> = LockFamily::named("billing:invoice");
/// let id = INVOICES.id(&uuid::Uuid::nil());
/// assert_eq!(id, INVOICES.namespace().id(&uuid::Uuid::nil()));
/// ```
pub struct LockFamily<K: ?Sized> {
    namespace: Namespace,
    key: PhantomData<fn(&K)>,
}

impl<K: LockKey + ?Sized> LockFamily<K> {
    /// A family in the bigint key space named by a string; see
    /// [`Namespace::named`].
    ///
    /// ```
    /// # use pglock_runtime::LockFamily;
    /// static USERS: LockFamily<i64> = LockFamily::named("accounts:user");
    /// assert_eq!(USERS.label(), "accounts:user");
    /// ```
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

    /// The underlying namespace.
    ///
    /// ```
    /// # use pglock_runtime::LockFamily;
    /// static USERS: LockFamily<i64> = LockFamily::named("accounts:user");
    /// assert_eq!(USERS.namespace().label(), "accounts:user");
    /// ```
    pub const fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// A transaction-scoped lock on `key`; see [`Namespace::lock`].
    ///
    /// ```no_run
    /// # use pglock_runtime::LockFamily;
    /// # async fn run(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock_runtime::Error> {
    /// static USERS: LockFamily<i64> = LockFamily::named("accounts:user");
    /// USERS.lock(&42).acquire(tx).await?;
    /// # Ok(()) }
    /// ```
    pub fn lock(&self, key: &K) -> XactLock<'_> {
        self.namespace.lock(key)
    }

    /// The advisory lock id of `key`; see [`Namespace::id`].
    ///
    /// ```
    /// # use pglock_runtime::LockFamily;
    /// static USERS: LockFamily<i64> = LockFamily::named("accounts:user");
    /// assert_eq!(USERS.id(&1), USERS.namespace().id(&1_i64));
    /// ```
    pub fn id(&self, key: &K) -> LockId {
        self.namespace.id(key)
    }
}

impl<K: ?Sized> Deref for LockFamily<K> {
    type Target = Namespace;

    fn deref(&self) -> &Namespace {
        &self.namespace
    }
}

impl<K: ?Sized> fmt::Debug for LockFamily<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LockFamily").field(&self.namespace).finish()
    }
}

/// The id PostgreSQL knows an advisory lock by: one `bigint`, or two `int4`.
///
/// In `pg_locks`, a bigint id is `(classid::bigint << 32) | objid` with
/// `objsubid = 1`; a pair is `(classid, objid)` with `objsubid = 2`.
///
/// ```
/// # use pglock_runtime::LockId;
/// assert!(LockId::BigInt(-1) < LockId::Pair(i32::MIN, 0));
/// assert_eq!(LockId::Pair(1, 2).to_string(), "(1, 2)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockId {
    /// The bigint key space.
    BigInt(i64),
    /// The int4 pair key space.
    Pair(i32, i32),
}

impl LockId {
    /// The bigint id, when this id is in the bigint key space.
    ///
    /// ```
    /// # use pglock_runtime::LockId;
    /// assert_eq!(LockId::BigInt(5).bigint(), Some(5));
    /// assert_eq!(LockId::Pair(1, 2).bigint(), None);
    /// ```
    pub const fn bigint(self) -> Option<i64> {
        match self {
            LockId::BigInt(id) => Some(id),
            LockId::Pair(..) => None,
        }
    }
}

impl fmt::Display for LockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockId::BigInt(id) => write!(f, "{id}"),
            LockId::Pair(class, id) => write!(f, "({class}, {id})"),
        }
    }
}

/// A value that can name an advisory lock within a namespace.
///
/// Implemented for [`uuid::Uuid`], every integer type, `str`/`String`, byte
/// slices and arrays, tuples of up to four of these, and references to any
/// of them. The key value is part of the persistent key contract:
///
/// | key | key value |
/// |---|---|
/// | integers | the number as `i64` (two's complement); a 128-bit number that does not fit is `hi64 ^ lo64` |
/// | `Uuid` | `hi64 ^ lo64` |
/// | `str`, `[u8]` | the first 8 bytes of `sha256(bytes)`, big-endian |
/// | tuples | the first 8 bytes of `sha256` over each member's key value as 8 big-endian bytes |
///
/// ```
/// use pglock_runtime::LockKey;
///
/// assert_eq!(42_u8.key_value(), 42);
/// assert_eq!((-7_i32).key_value(), (-7_i64).key_value());
/// assert_eq!("abc".key_value(), String::from("abc").key_value());
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used as an advisory lock key",
    label = "not a lock key",
    note = "lock keys are: uuid::Uuid, integer types, &str/String, byte slices, and tuples of these",
    note = "for another type, lock on a field of it, or implement `pglock::LockKey` with a documented, stable key value"
)]
pub trait LockKey {
    /// The key's 64-bit value, before the namespace is applied.
    ///
    /// ```
    /// use pglock_runtime::{LockKey, Namespace};
    ///
    /// struct TenantId(u32);
    ///
    /// impl LockKey for TenantId {
    ///     fn key_value(&self) -> i64 {
    ///         i64::from(self.0) // stable: the tenant's number, as for a u32 key
    ///     }
    /// }
    ///
    /// static TENANTS: Namespace = Namespace::named("tenant:migrate");
    /// assert_eq!(TENANTS.id(&TenantId(7)), TENANTS.id(&7_u32));
    /// ```
    fn key_value(&self) -> i64;
}

impl<K: LockKey + ?Sized> LockKey for &K {
    fn key_value(&self) -> i64 {
        (**self).key_value()
    }
}

impl<K: LockKey + ?Sized> LockKey for &mut K {
    fn key_value(&self) -> i64 {
        (**self).key_value()
    }
}

macro_rules! lossless_integer_keys {
    ($($ty:ty),*) => {$(
        impl LockKey for $ty {
            fn key_value(&self) -> i64 {
                // Sign-extending (or, for u64/usize, reinterpreting) keeps an
                // id equal across the integer types that can hold it.
                *self as i64
            }
        }
    )*};
}

lossless_integer_keys!(i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);

impl LockKey for i128 {
    fn key_value(&self) -> i64 {
        match i64::try_from(*self) {
            Ok(value) => value,
            Err(_) => fold_u128(*self as u128),
        }
    }
}

impl LockKey for u128 {
    fn key_value(&self) -> i64 {
        match i64::try_from(*self) {
            Ok(value) => value,
            Err(_) => fold_u128(*self),
        }
    }
}

const fn fold_u128(value: u128) -> i64 {
    ((value >> 64) as u64 ^ value as u64) as i64
}

impl LockKey for uuid::Uuid {
    fn key_value(&self) -> i64 {
        fold_u128(self.as_u128())
    }
}

impl LockKey for str {
    fn key_value(&self) -> i64 {
        sha256_prefix_u64(self.as_bytes()) as i64
    }
}

impl LockKey for String {
    fn key_value(&self) -> i64 {
        self.as_str().key_value()
    }
}

impl LockKey for [u8] {
    fn key_value(&self) -> i64 {
        sha256_prefix_u64(self) as i64
    }
}

impl<const N: usize> LockKey for [u8; N] {
    fn key_value(&self) -> i64 {
        self.as_slice().key_value()
    }
}

impl LockKey for Vec<u8> {
    fn key_value(&self) -> i64 {
        self.as_slice().key_value()
    }
}

macro_rules! tuple_keys {
    ($(($($name:ident),+)),*) => {$(
        impl<$($name: LockKey),+> LockKey for ($($name,)+) {
            #[allow(non_snake_case)]
            fn key_value(&self) -> i64 {
                let ($($name,)+) = self;
                let mut bytes = [0u8; 32];
                let mut len = 0;
                $(
                    bytes[len..len + 8].copy_from_slice(&$name.key_value().to_be_bytes());
                    len += 8;
                )+
                sha256_prefix_u64(&bytes[..len]) as i64
            }
        }
    )*};
}

tuple_keys!((A, B), (A, B, C), (A, B, C, D));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_fold_keeps_values_that_fit_and_folds_the_rest() {
        assert_eq!(fold_to_i32(7), 7);
        assert_eq!(fold_to_i32(-7), -7);
        assert_eq!(fold_to_i32(i32::MIN as i64), i32::MIN);
        assert_eq!(fold_to_i32(0x1_0000_0002), 3);
        assert_eq!(fold_to_i32(i64::MIN), i32::MIN);
    }

    #[test]
    fn the_marker_label_keeps_safe_characters_only() {
        assert_eq!(sanitize_marker_label("billing:invoice"), "billing:invoice");
        assert_eq!(
            sanitize_marker_label("a*/ DROP TABLE x; /*"),
            "a?? DROP TABLE x? ??"
        );
        assert_eq!(sanitize_marker_label("line\nbreak\0"), "line?break?");
        assert_eq!(
            sanitize_marker_label(&"x".repeat(10_000)).len(),
            MAX_MARKER_LABEL
        );
    }

    proptest::proptest! {
        #[test]
        fn no_label_can_end_or_break_the_marker_comment(label in ".{0,300}") {
            let sanitised = sanitize_marker_label(&label);
            proptest::prop_assert!(!sanitised.contains("*/"));
            proptest::prop_assert!(!sanitised.contains("/*"));
            proptest::prop_assert!(!sanitised.chars().any(char::is_control));
            proptest::prop_assert!(sanitised.chars().count() <= MAX_MARKER_LABEL);
            proptest::prop_assert_eq!(
                sanitised.chars().count(),
                label.chars().count().min(MAX_MARKER_LABEL)
            );
        }

        #[test]
        fn safe_labels_are_kept_as_they_are(label in "[a-z0-9:_.@#+= -]{1,64}") {
            proptest::prop_assert_eq!(sanitize_marker_label(&label), label);
        }

        #[test]
        fn the_pair_fold_is_the_identity_on_int4(value in proptest::num::i32::ANY) {
            proptest::prop_assert_eq!(fold_to_i32(i64::from(value)), value);
        }
    }

    #[test]
    fn wide_integers_that_fit_keep_their_value() {
        assert_eq!((-5_i128).key_value(), -5);
        assert_eq!(5_u128.key_value(), 5);
        assert_eq!(u64::MAX.key_value(), -1);
        assert_eq!(
            (u128::MAX).key_value(),
            0,
            "hi64 ^ lo64 of all ones is zero"
        );
    }
}
