//! How `pg_locks` shows an advisory lock id: the one place that encodes and
//! decodes it, for inspection, leases, cancellation, the testing kit and
//! any query of an operator's own.
//!
//! A row of `pg_locks` with `locktype = 'advisory'` names its lock by three
//! columns: `classid` and `objid` (two `oid`s, unsigned 32-bit) and
//! `objsubid`, which says the key space. A bigint id is split into its high
//! and low halves with `objsubid = 1`; an int4 pair is stored as its two
//! ints (reinterpreted as unsigned) with `objsubid = 2`. So in both spaces
//! the 64-bit value `(classid << 32) | objid` (the [`ENCODED`] expression)
//! and `objsubid` together name exactly one lock id.
//!
//! ```no_run
//! use pglock_runtime::{Namespace, pg_locks};
//!
//! static JOBS: Namespace = Namespace::named("jobs");
//!
//! # async fn run(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
//! // Which backends hold or wait for job 7?
//! let sql = format!("SELECT l.pid FROM pg_catalog.pg_locks l WHERE {}", pg_locks::MATCHES);
//! let (encoded, objsubid) = pg_locks::encode(JOBS.id(&7_i64));
//! let pids: Vec<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
//!     .bind(encoded)
//!     .bind(objsubid)
//!     .fetch_all(pool)
//!     .await?;
//! # Ok(()) }
//! ```

use crate::LockId;

/// The SQL expression, over a `pg_locks` row named `l`, of the 64-bit
/// value [`encode`] computes: `(classid << 32) | objid`.
pub const ENCODED: &str = "((l.classid::int8 << 32) | l.objid::int8)";

/// The SQL condition, over a `pg_locks` row named `l`, that matches an
/// advisory lock on one id: bind `$1` and `$2` to the two values of
/// [`encode`]. Held and awaited rows both match; add `l.granted` to tell
/// them apart.
pub const MATCHES: &str = "(l.locktype = 'advisory' \
     AND ((l.classid::int8 << 32) | l.objid::int8) = $1::int8 AND l.objsubid = $2::int2)";

/// The two values by which `pg_locks` knows `id`: `(classid << 32) | objid`
/// as an `i64`, and `objsubid`.
///
/// ```
/// use pglock_runtime::{LockId, pg_locks};
///
/// assert_eq!(pg_locks::encode(LockId::BigInt(-1)), (-1, 1));
/// assert_eq!(pg_locks::encode(LockId::Pair(1, -1)), (0x1_ffff_ffff, 2));
/// ```
pub const fn encode(id: LockId) -> (i64, i16) {
    match id {
        LockId::BigInt(id) => (id, 1),
        LockId::Pair(class, object) => (
            ((class as u32 as u64) << 32 | object as u32 as u64) as i64,
            2,
        ),
    }
}

/// The lock id of a `pg_locks` row, from the value of [`ENCODED`] and
/// `objsubid`; `None` for an `objsubid` no advisory lock has.
///
/// ```
/// use pglock_runtime::{LockId, pg_locks};
///
/// assert_eq!(pg_locks::decode(0x1_ffff_ffff, 2), Some(LockId::Pair(1, -1)));
/// assert_eq!(pg_locks::decode(5, 1), Some(LockId::BigInt(5)));
/// ```
pub const fn decode(encoded: i64, objsubid: i16) -> Option<LockId> {
    match objsubid {
        1 => Some(LockId::BigInt(encoded)),
        2 => Some(LockId::Pair((encoded >> 32) as i32, encoded as i32)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_it_encodes_in_both_key_spaces() {
        for id in [
            LockId::BigInt(0),
            LockId::BigInt(i64::MIN),
            LockId::BigInt(i64::MAX),
            LockId::BigInt(-1),
            LockId::Pair(0, 0),
            LockId::Pair(i32::MIN, i32::MAX),
            LockId::Pair(-1, -1),
            LockId::Pair(0x7275_6e6c, 0x696e_7465),
        ] {
            let (encoded, objsubid) = encode(id);
            assert_eq!(decode(encoded, objsubid), Some(id), "{id}");
        }
        assert_eq!(decode(5, 0), None);
    }

    proptest::proptest! {
        #[test]
        fn pairs_round_trip(class in proptest::num::i32::ANY, object in proptest::num::i32::ANY) {
            let (encoded, objsubid) = encode(LockId::Pair(class, object));
            proptest::prop_assert_eq!(decode(encoded, objsubid), Some(LockId::Pair(class, object)));
        }
    }
}
