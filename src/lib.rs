#![doc = include_str!("../docs/GUIDE.md")]
#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use pglock_runtime::*;

pub use pglock_macros::advisory_lock;

/// The testing kit ([`pglock-testing`](https://docs.rs/pglock-testing)): a
/// throwaway PostgreSQL, standbys, PgBouncer and lock helpers for tests.
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub use pglock_testing as testing;
