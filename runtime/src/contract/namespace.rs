//! Namespaces: the spaces that keep one family of locks apart from every
//! other use of advisory locks in a database.
//!
//! Every key first becomes a 64-bit *key value* ([`crate::LockKey`]); the
//! namespace then places it in one of PostgreSQL's two key spaces:
//!
//! - **bigint space** (the advisory lock functions' one `bigint`
//!   argument): `key_value ^ ns`, where a named namespace is the first 8
//!   bytes of `sha256(name)`. For a uuid this is exactly `hi64 ^ lo64 ^ ns`.
//! - **int4 pair space** (their two `int` arguments): the namespace is the
//!   first int (the class), the key value the second, folded to 32 bits
//!   when it does not fit.
//!
//! `docs/KEYS.md` states the derivation with golden vectors and the SQL that
//! reproduces every id in `psql`.

use std::fmt;
use std::sync::OnceLock;

use pglock_grammar::namespace as namespace_name;

use crate::contract::id::{LockId, Space};
use crate::contract::key::LockKey;
use crate::contract::mode::Mode;
use crate::contract::sha256::sha256_prefix_u64;
use crate::error::Error;
use crate::identity::{Label, LockIdentity};
use crate::sql::statements::Statements;

/// A lock namespace: the space that keeps one family of locks (say, invoice
/// settlements) apart from every other use of advisory locks in the database.
///
/// Declare namespaces as `static`s; a name is hashed by the compiler. To fix
/// the key type too, declare a [`LockFamily`](crate::LockFamily) instead.
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
    label: Label,
    space: Space,
    // SQL texts carrying this namespace's marker, built on first use and then
    // shared by every acquisition: the uncontended path allocates nothing.
    statements: OnceLock<Statements>,
}

impl Namespace {
    /// A namespace in the bigint key space named by a string: the mask is the
    /// first 8 bytes of `sha256(name)`, big-endian.
    ///
    /// # Panics
    ///
    /// If `name` is not a namespace name: empty or only whitespace, or
    /// holding `*/`, `/*` or a control character (the name labels every
    /// lock in SQL comments and logs). In a `static` this is a compile-time
    /// error, with the text [`Namespace::try_named`] returns.
    pub const fn named(name: &'static str) -> Self {
        let hash = sha256_prefix_u64(valid_name(name).as_bytes());
        Self::new(Label::Static(name), Space::BigInt(hash))
    }

    /// A namespace in the bigint key space with a raw 64-bit mask, for key
    /// spaces that exist already (`label` only names it in markers and logs).
    ///
    /// ```
    /// # use pglock_runtime::{LockId, Namespace};
    /// static RELEASES: Namespace = Namespace::raw(0x7275_6e6c_9e37_79b9, "runledger:release");
    /// let run = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
    /// let expected = (0x0123_4567_89ab_cdef_u64 ^ 0x0011_2233_4455_6677 ^ 0x7275_6e6c_9e37_79b9) as i64;
    /// assert_eq!(RELEASES.id(&run), LockId::BigInt(expected));
    /// ```
    pub const fn raw(mask: u64, label: &'static str) -> Self {
        Self::new(Label::Static(label), Space::BigInt(mask))
    }

    /// A namespace in the int4 pair key space named by a string: the class is
    /// the first 4 bytes of `sha256(name)`, big-endian, as a signed `int4`.
    ///
    /// # Panics
    ///
    /// If `name` is not a namespace name, as [`Namespace::named`] says; in a
    /// `static` this is a compile-time error.
    ///
    /// ```
    /// # use pglock_runtime::{LockId, Namespace};
    /// static TENANTS: Namespace = Namespace::named_pair("tenant:migrate");
    /// assert!(matches!(TENANTS.id(&7_i32), LockId::Pair(_, 7)));
    /// ```
    pub const fn named_pair(name: &'static str) -> Self {
        let hash = sha256_prefix_u64(valid_name(name).as_bytes());
        Self::new(Label::Static(name), Space::Pair((hash >> 32) as u32 as i32))
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
        Self::new(Label::Static(label), Space::Pair(class))
    }

    /// A bigint-space namespace named by a string known only at run time.
    ///
    /// The name is hashed exactly as [`Namespace::named`] does, and follows
    /// the same rule: a name that is empty or only whitespace, or holds
    /// `*/`, `/*` or a control character, is refused with
    /// [`Error::InvalidNamespace`], whose reason is the text the attribute
    /// gives at compile time. Markers show a sanitised label besides, so no
    /// name can change the SQL that is sent.
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
    /// assert!(Namespace::try_named("*/ DROP TABLE invoices; /*").is_err());
    /// ```
    pub fn try_named(name: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        if let Err(refused) = namespace_name::check(&name) {
            return Err(Error::InvalidNamespace {
                reason: refused.message(),
            });
        }
        let space = Space::BigInt(sha256_prefix_u64(name.as_bytes()));
        Ok(Self::new(Label::Shared(name.into()), space))
    }

    const fn new(label: Label, space: Space) -> Self {
        Self {
            label,
            space,
            statements: OnceLock::new(),
        }
    }

    /// The name given to this namespace.
    pub fn label(&self) -> &str {
        self.label.as_str()
    }

    /// The advisory lock id that `key` takes in this namespace.
    ///
    /// ```
    /// # use pglock_runtime::{LockId, Namespace};
    /// static ORDERS: Namespace = Namespace::raw(0, "orders");
    /// assert_eq!(ORDERS.id(&-5_i64), LockId::BigInt(-5));
    /// ```
    pub fn id<K: LockKey + ?Sized>(&self, key: &K) -> LockId {
        self.space.id(key.key_value())
    }

    /// The comment every statement of this namespace starts with, as
    /// `pg_stat_activity.query` shows it: `/* pglock ns=<label> */`.
    pub fn marker(&self) -> &str {
        self.statements().marker()
    }

    /// The label, cheap to clone.
    pub(crate) fn shared_label(&self) -> &Label {
        &self.label
    }

    /// The identity of the lock on `id` in `mode` in this namespace.
    pub(crate) fn identity(&self, id: LockId, mode: Mode) -> LockIdentity {
        LockIdentity::new(self.label.clone(), id, mode)
    }

    pub(crate) fn statements(&self) -> &Statements {
        self.statements
            .get_or_init(|| Statements::new(self.label(), self.space))
    }
}

/// `name`, which must follow the namespace-name rule; in a `static` the
/// panic is a compile error.
const fn valid_name(name: &'static str) -> &'static str {
    if let Err(refused) = namespace_name::check(name) {
        panic!("{}", refused.message());
    }
    name
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Namespace")
            .field("label", &self.label())
            .field("space", &self.space)
            .finish()
    }
}
