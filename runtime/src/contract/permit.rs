//! Semaphore permits: the lock ids of a semaphore's N permits, derived from
//! its key's ordinary lock id.
//!
//! A semaphore of N permits on a key has permits `0..N`. The ids do not
//! depend on N, and they differ from the key's own lock id, so a semaphore
//! and a plain lock on the same key are independent:
//!
//! - **bigint space**: with `L` the key's lock id, `h` = the first 8 bytes of
//!   `sha256(int8send(L) || utf8("pglock:permit"))`, big-endian, as `i64`;
//!   permit `i` = `(h & -1024) | i`.
//! - **int4 pair space**: with `(class, w)` the key's lock id, `h32` = the
//!   first 4 bytes of `sha256(int4send(class) || int4send(w) ||
//!   utf8("pglock:permit"))`, big-endian, as `i32`; permit `i` =
//!   `(class, (h32 & -1024) | i)`: a namespace's permits stay in its class.
//!
//! So every permit of one semaphore shares its high bits: in `pg_locks`,
//! `(classid << 32 | objid) & -1024` is the same for all of them (the
//! *base*, permit 0's id) and `& 1023` is the permit's index. Frozen like
//! every id: `docs/KEYS.md` has the derivation and golden vectors.

use std::fmt;

use crate::contract::family::LockFamily;
use crate::contract::id::LockId;
use crate::contract::key::LockKey;
use crate::contract::namespace::Namespace;
use crate::contract::sha256::sha256;
use crate::error::Error;

/// The most permits a semaphore may have: its permits' ids share all but
/// their low 10 bits.
pub const MAX_PERMITS: u32 = 1024;

/// What the key's id is hashed with, so that a permit's id is not the id
/// of any other key of the namespace by construction.
const SALT: &[u8; 13] = b"pglock:permit";

/// The low bits that number a permit.
const INDEX_MASK: i64 = MAX_PERMITS as i64 - 1;

impl Namespace {
    /// The ids of the permits of the semaphore of `permits` permits on
    /// `key`; see [`PermitIds`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPermits`] unless `permits` is within `1..=1024`.
    pub fn permit_ids<K: LockKey + ?Sized>(
        &self,
        key: &K,
        permits: u32,
    ) -> Result<PermitIds, Error> {
        PermitIds::new(self.id(key), permits)
    }
}

impl<K: LockKey + ?Sized> LockFamily<K> {
    /// The ids of the permits of the semaphore on `key`; see
    /// [`Namespace::permit_ids`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPermits`] unless `permits` is within `1..=1024`.
    pub fn permit_ids(&self, key: &K, permits: u32) -> Result<PermitIds, Error> {
        self.namespace().permit_ids(key, permits)
    }
}

/// The ids of a semaphore's permits: permit `i` of `0..permits`.
///
/// ```
/// use pglock_runtime::{LockId, Namespace, PermitIds};
///
/// static REPORTS: Namespace = Namespace::named("reports:heavy");
/// let permits = REPORTS.permit_ids(&"acme", 4).unwrap();
/// assert_eq!(permits.len(), 4);
/// assert_eq!(permits.get(0), Some(permits.base()));
/// let third = permits.get(2).unwrap();
/// assert_eq!(permits.index_of(third), Some(2));
/// assert_eq!(permits.iter().count(), 4);
/// // The permits do not depend on how many there are.
/// assert_eq!(REPORTS.permit_ids(&"acme", 10).unwrap().get(2), Some(third));
/// assert_ne!(permits.base(), REPORTS.id(&"acme"));
/// assert!(PermitIds::new(REPORTS.id(&"acme"), 0).is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PermitIds {
    base: LockId,
    permits: u32,
}

impl PermitIds {
    /// The permits of a semaphore of `permits` permits on the key whose lock
    /// id is `key_id`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPermits`] unless `permits` is within
    /// `1..=`[`MAX_PERMITS`].
    pub fn new(key_id: LockId, permits: u32) -> Result<Self, Error> {
        check_permits(permits)?;
        Ok(Self {
            base: permit_base(key_id),
            permits,
        })
    }

    /// The id of permit 0, whose id with the index in its low 10 bits is
    /// every other permit's. In `pg_locks`, a row is a permit of this
    /// semaphore when `ENCODED & -1024` equals the first value of
    /// [`pg_locks::encode`](crate::pg_locks::encode)`(base)` and its
    /// `objsubid` the second; see [`pg_locks::PERMITS_OF`](crate::pg_locks::PERMITS_OF).
    pub const fn base(&self) -> LockId {
        self.base
    }

    /// How many permits: N.
    pub const fn len(&self) -> u32 {
        self.permits
    }

    /// Never: a semaphore has at least one permit.
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// The id of permit `index`, if `index < N`.
    pub const fn get(&self, index: u32) -> Option<LockId> {
        if index < self.permits {
            Some(permit(self.base, index))
        } else {
            None
        }
    }

    /// Which permit `id` is, when it is one of these N.
    pub fn index_of(&self, id: LockId) -> Option<u32> {
        let index = permit_index(self.base, id)?;
        (index < self.permits).then_some(index)
    }

    /// Every permit's id, from permit 0.
    pub fn iter(&self) -> impl Iterator<Item = LockId> + use<> {
        let base = self.base;
        (0..self.permits).map(move |index| permit(base, index))
    }
}

impl fmt::Debug for PermitIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PermitIds")
            .field("base", &self.base)
            .field("permits", &self.permits)
            .finish()
    }
}

/// `permits`, if a semaphore may have that many.
pub(crate) const fn check_permits(permits: u32) -> Result<u32, Error> {
    if permits == 0 || permits > MAX_PERMITS {
        Err(Error::InvalidPermits { permits })
    } else {
        Ok(permits)
    }
}

/// The id of permit 0 of the semaphore on the key whose id is `key_id`.
pub(crate) const fn permit_base(key_id: LockId) -> LockId {
    match key_id {
        LockId::BigInt(id) => {
            let mut input = [0u8; 8 + SALT.len()];
            let id = id.to_be_bytes();
            let mut i = 0;
            while i < 8 {
                input[i] = id[i];
                i += 1;
            }
            copy_salt(&mut input, 8);
            let digest = sha256(&input);
            let h = i64::from_be_bytes([
                digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6],
                digest[7],
            ]);
            LockId::BigInt(h & !INDEX_MASK)
        }
        LockId::Pair(class, object) => {
            let mut input = [0u8; 8 + SALT.len()];
            let (class_bytes, object_bytes) = (class.to_be_bytes(), object.to_be_bytes());
            let mut i = 0;
            while i < 4 {
                input[i] = class_bytes[i];
                input[4 + i] = object_bytes[i];
                i += 1;
            }
            copy_salt(&mut input, 8);
            let digest = sha256(&input);
            let h32 = i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
            LockId::Pair(class, h32 & !(INDEX_MASK as i32))
        }
    }
}

const fn copy_salt(input: &mut [u8; 8 + SALT.len()], at: usize) {
    let mut i = 0;
    while i < SALT.len() {
        input[at + i] = SALT[i];
        i += 1;
    }
}

/// Permit `index` of the semaphore whose permit 0 is `base`.
pub(crate) const fn permit(base: LockId, index: u32) -> LockId {
    match base {
        LockId::BigInt(base) => LockId::BigInt(base | index as i64),
        LockId::Pair(class, base) => LockId::Pair(class, base | index as i32),
    }
}

/// The base `id` would have if it were a permit: its id with the low 10
/// bits cleared (for a pair, of its second int; the class is kept).
pub(crate) const fn base_of(id: LockId) -> LockId {
    match id {
        LockId::BigInt(id) => LockId::BigInt(id & !INDEX_MASK),
        LockId::Pair(class, id) => LockId::Pair(class, id & !(INDEX_MASK as i32)),
    }
}

/// The index of `id` among the permits whose permit 0 is `base`, whatever
/// their number; `None` when `id` is no permit of theirs.
pub(crate) const fn permit_index(base: LockId, id: LockId) -> Option<u32> {
    match (base, id) {
        (LockId::BigInt(base), LockId::BigInt(id)) if id & !INDEX_MASK == base => {
            Some((id & INDEX_MASK) as u32)
        }
        (LockId::Pair(class, base), LockId::Pair(id_class, id))
            if class == id_class && id & !(INDEX_MASK as i32) == base =>
        {
            Some((id & INDEX_MASK as i32) as u32)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_share_their_base_and_number_the_low_bits() {
        for key_id in [LockId::BigInt(0), LockId::BigInt(-1), LockId::Pair(7, -3)] {
            let permits = PermitIds::new(key_id, MAX_PERMITS).unwrap();
            for (index, id) in permits.iter().enumerate() {
                assert_eq!(permits.index_of(id), Some(index as u32));
                assert_eq!(permit_index(permits.base(), id), Some(index as u32));
            }
            assert_eq!(permits.get(MAX_PERMITS), None);
            assert_eq!(permits.index_of(key_id), None);
        }
        assert!(matches!(
            PermitIds::new(LockId::BigInt(0), 1025),
            Err(Error::InvalidPermits { permits: 1025 })
        ));
    }

    #[test]
    fn a_pair_semaphore_keeps_its_class() {
        let permits = PermitIds::new(LockId::Pair(-5, 9), 3).unwrap();
        assert!(permits.iter().all(|id| matches!(id, LockId::Pair(-5, _))));
        assert_eq!(permits.index_of(LockId::Pair(-4, 0)), None);
    }
}
