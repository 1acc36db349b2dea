//! pglock: PostgreSQL advisory locks for sqlx.
#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]

pub use pglock_runtime::*;

pub use pglock_macros::advisory_lock;
