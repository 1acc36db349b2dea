//! Key values: what a key contributes to its lock id, before the namespace.

use crate::contract::sha256::sha256_prefix_u64;

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
