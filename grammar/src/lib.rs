//! The rules pglock reads the same way wherever a user writes the thing
//! they govern: in the `#[advisory_lock]` attribute (at compile time), in
//! the runtime's API, and on the `pglock` command line. Each rule is defined,
//! worded and tested here, once.
//!
//! - [`namespace`]: what a namespace name may be; a `const fn`, so a
//!   `static` namespace is checked by the compiler.
//! - [`duration`]: how a duration is written (`250ms`, `1.5s`, `2min`,
//!   `1h`).
//!
//! The crate depends on nothing, so that the attribute's proc-macro crate
//! can use it without compiling the runtime (and sqlx) for the host. Use
//! these rules through `pglock`; the crate is its own only to be shared.
#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]

pub mod duration;
pub mod namespace;
