#![doc = include_str!("../docs/GUIDE.md")]
#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use pglock_runtime::*;

pub use pglock_macros::advisory_lock;
