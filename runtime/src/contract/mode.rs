//! Lock modes.

use std::fmt;

/// How a lock is held: many shared holders coexist; an exclusive holder
/// excludes everyone. A waiting exclusive request also holds back new shared
/// requests, so writers are not starved.
///
/// ```
/// use pglock_runtime::Mode;
///
/// assert_eq!(Mode::default(), Mode::Exclusive);
/// assert_eq!(Mode::Shared.to_string(), "shared");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// Excludes every other holder (PostgreSQL's `ExclusiveLock`).
    #[default]
    Exclusive,
    /// Coexists with other shared holders (PostgreSQL's `ShareLock`).
    Shared,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Exclusive => "exclusive",
            Mode::Shared => "shared",
        })
    }
}
