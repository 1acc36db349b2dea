//! The runtime of [pglock](https://docs.rs/pglock): PostgreSQL advisory
//! locks for sqlx that are safe, observable and cheap. Applications usually
//! depend on `pglock`, which re-exports this crate and adds the
//! `#[advisory_lock]` attribute; everything here works without the macro.
//!
//! ```no_run
//! use std::time::Duration;
//! use pglock_runtime::{Error, Namespace};
//!
//! static INVOICES: Namespace = Namespace::named("billing:invoice");
//!
//! async fn settle(pool: &sqlx::PgPool, invoice: uuid::Uuid) -> Result<(), Error> {
//!     let mut tx = pool.begin().await?;
//!     INVOICES.lock(&invoice).shared().timeout(Duration::from_secs(5)).acquire(&mut tx).await?;
//!     // ... work while the lock is held; it ends with the transaction ...
//!     tx.commit().await?;
//!     Ok(())
//! }
//! ```
#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(hidden)]
pub mod __private;
mod acquire;
mod cancel;
mod error;
mod inspect;
mod keys;
mod lease;
mod mode;
pub mod pg_locks;
mod pool;
mod session;
mod sha256;
mod statements;

pub use acquire::{Acquired, LockSet, XactConnection, XactLock};
pub use cancel::cancel_abandoned_waits;
pub use error::{Conflict, ConflictCause, Error};
pub use inspect::{AdvisoryLock, Inspection, PreparedLock, inspect};
pub use keys::{LockFamily, LockId, LockKey, Namespace};
pub use lease::{Lease, LeaseLost, LeaseOptions, LeaseState};
pub use mode::Mode;
pub use pool::WorkFuture;
pub use session::{IntoOwnedConnection, SessionGuard, SessionLock, SessionTry};
