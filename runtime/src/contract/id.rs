//! Lock ids and the two key spaces they live in.

use std::fmt;

/// The id PostgreSQL knows an advisory lock by: one `bigint`, or two `int4`.
/// ([`crate::pg_locks`] says how `pg_locks` shows it.)
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

/// Which of PostgreSQL's two key spaces a namespace places its keys in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Space {
    /// One `bigint`: the key value xor this mask.
    BigInt(u64),
    /// Two `int4`: this class, then the key value folded to 32 bits.
    Pair(i32),
}

impl Space {
    /// The id a 64-bit key value takes in this space.
    pub(crate) const fn id(self, key_value: i64) -> LockId {
        match self {
            Space::BigInt(mask) => LockId::BigInt(key_value ^ mask as i64),
            Space::Pair(class) => LockId::Pair(class, fold_to_i32(key_value)),
        }
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

    proptest::proptest! {
        #[test]
        fn the_pair_fold_is_the_identity_on_int4(value in proptest::num::i32::ANY) {
            proptest::prop_assert_eq!(fold_to_i32(i64::from(value)), value);
        }
    }
}
