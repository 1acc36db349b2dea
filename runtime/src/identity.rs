//! A lock's identity: which namespace, which id, which mode. Errors, guards,
//! leases and events all name a lock through [`LockIdentity`], so a lock
//! reads the same everywhere: `billing:invoice/123 (shared)`.

use std::fmt;
use std::sync::Arc;

use crate::contract::id::LockId;
use crate::contract::mode::Mode;

/// Which lock: its namespace's label, its id and its mode.
///
/// ```no_run
/// # async fn run(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) {
/// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
/// if let Err(pglock_runtime::Error::Busy(lock)) = JOBS.lock(&7_i64).no_wait().acquire(tx).await {
///     assert_eq!(lock.id(), JOBS.id(&7_i64));
///     eprintln!("{lock} is busy"); // jobs/… (exclusive) is busy
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LockIdentity {
    namespace: Label,
    id: LockId,
    mode: Mode,
}

impl LockIdentity {
    pub(crate) fn new(namespace: Label, id: LockId, mode: Mode) -> Self {
        Self {
            namespace,
            id,
            mode,
        }
    }

    /// The label of the lock's namespace.
    pub fn namespace(&self) -> &str {
        self.namespace.as_str()
    }

    /// The advisory lock id.
    pub fn id(&self) -> LockId {
        self.id
    }

    /// The mode held or asked for.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub(crate) fn label(&self) -> &Label {
        &self.namespace
    }
}

impl fmt::Display for LockIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} ({})", self.namespace(), self.id, self.mode)
    }
}

/// A namespace's label, cheap to clone: a `static` namespace's name is
/// borrowed for good, a run-time name is shared.
#[derive(Clone)]
pub(crate) enum Label {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Label {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Label::Static(label) => label,
            Label::Shared(label) => label,
        }
    }

    /// The label as a metric label: a `static` name is not copied.
    #[cfg(feature = "metrics")]
    pub(crate) fn shared(&self) -> metrics::SharedString {
        match self {
            Label::Static(label) => metrics::SharedString::const_str(label),
            Label::Shared(label) => metrics::SharedString::from(String::from(&**label)),
        }
    }
}

impl PartialEq for Label {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Label {}

impl std::hash::Hash for Label {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
