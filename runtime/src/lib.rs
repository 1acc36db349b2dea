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
//!
//! # Module map
//!
//! Four layers; each imports only from the layers above it (and from
//! `error` and `identity`, which every layer shares), with one exception:
//! a `Namespace` keeps the SQL texts that carry its marker, built once by
//! `sql`, so that the uncontended path allocates nothing.
//!
//! - `contract/`: what a lock *is*. `mode`, `key` (key values), `namespace`,
//!   `family` (a namespace with a key type), `id`, `permit` (a semaphore's
//!   permit ids, [`PermitIds`]), `sha256`. **Frozen**: the
//!   key derivation may not change once shipped; a change needs new golden
//!   vectors (`tests/keys.rs`, `docs/KEYS.md`).
//! - `identity`: [`LockIdentity`], a lock's namespace, id and mode, as
//!   errors, guards, leases and events name it; `error`: the one [`Error`].
//! - `sql/`: every statement text. `statements` (the try, the waits, the
//!   unlock, the lock manager's short transactions, the server's keepalives,
//!   one function that binds a [`LockId`]), `semaphore` (a semaphore's wait,
//!   and the answers of its try and wait), `marker` (the `/* pglock ns=… */` comment),
//!   [`pg_locks`] (how `pg_locks` shows an id, and every query over it; the
//!   ones the testing kit, the bench or an operator need are public),
//!   [`bare_sql`] (PostgreSQL's lock functions called bare: what pglock is
//!   measured against), `begin` (the messages that take a lock and then
//!   `BEGIN`). No I/O.
//! - `engine/`, private: `wait` (the try and the capped wait every front
//!   end shares, and the statement that does both for a busy lock),
//!   `permit` (the try and the wait of a semaphore's permits),
//!   `contention` (which locks were found busy lately), `begin` (a
//!   transaction begun with its lock, in one message), `cancel` (abandoned
//!   waits), `events` (every `tracing` event), `measure` (the metrics, with
//!   the feature `metrics`).
//! - `front/`: what applications call. `xact_lock` ([`XactLock`]),
//!   `lock_set` ([`XactLockSet`]), `session` ([`SessionLock`],
//!   [`SessionGuard`]), `semaphore` ([`XactSemaphore`], [`Permit`]),
//!   `session_semaphore` ([`SessionSemaphore`]: a permit held by a
//!   [`SessionGuard`] or a [`Lease`]), `lease` ([`Lease`]), `loss` ([`Loss`],
//!   [`HoldState`], [`CheckOptions`]: how a held session lock is checked
//!   and its loss reported, for leases and the manager), `keepalive` (the
//!   server's TCP keepalives on the sessions it checks, so that a server
//!   behind a silent network frees a lock only after its holder learned of
//!   the loss), `manager`
//!   ([`LockManager`]: many session locks on a few connections; its own
//!   rooms are listed in `front/manager/mod.rs`), `primary` (several hosts
//!   and the one that is the primary: [`connect_primary`], and where a
//!   manager connects), `run` (work in a transaction that holds a lock),
//!   `inspect` ([`inspect`]). A constructor
//!   lives with the type it returns: `Namespace::session_lock` is in
//!   `front/session.rs`, `LockManager::lock` in `front/manager/request.rs`.
//!
//! Names follow one scheme: a request is named for the lock it asks for
//! and is configured, then acquired ([`XactLock`], [`XactLockSet`],
//! [`SessionLock`], [`ManagedLock`], [`XactSemaphore`],
//! [`SessionSemaphore`]); a held session lock (or permit) is a guard, whose
//! end ends the lock ([`SessionGuard`], [`ManagedGuard`]), or a [`Lease`],
//! a guard that is checked; a transaction-scoped lock is held by its
//! transaction, and acquiring it returns [`Acquired`], a report ([`Permit`]
//! for a semaphore, which says which permit was taken). A loss is
//! a [`Loss`], whoever held the lock.
//! - `__private`: what the attribute expands into.
#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(hidden)]
pub mod __private;
mod contract;
mod engine;
mod error;
mod front;
mod identity;
mod sql;

pub use contract::family::{LockFamily, NamespaceFor};
pub use contract::id::LockId;
pub use contract::key::LockKey;
pub use contract::mode::Mode;
pub use contract::namespace::Namespace;
pub use contract::permit::{MAX_PERMITS, PermitIds};
pub use engine::cancel::cancel_abandoned_waits;
pub use error::{Conflict, ConflictCause, Error, HostAnswer, HostTried};
pub use front::fencing::FencingToken;
pub use front::inspect::{Inspection, LockRow, PreparedLock, SemaphoreRow, inspect};
pub use front::lease::Lease;
pub use front::lock_set::XactLockSet;
pub use front::loss::{CheckOptions, HoldState, Loss};
pub use front::manager::{
    LockBudget, LockManager, LockTable, ManagedGuard, ManagedLock, ManagedSemaphore, ManagerOptions,
};
pub use front::primary::connect_primary;
pub use front::run::WorkFuture;
pub use front::semaphore::{Permit, XactSemaphore};
pub use front::session::{IntoOwnedConnection, SessionGuard, SessionLock, SessionTry};
pub use front::session_semaphore::SessionSemaphore;
pub use front::xact_lock::{Acquired, XactConnection, XactLock};
pub use identity::LockIdentity;
pub use sql::{bare_sql, pg_locks};

/// The names of the metrics pglock records with the feature `metrics`,
/// through the [`metrics`](https://docs.rs/metrics) facade. Labels:
/// `namespace` (the namespace's label), `mode` (`exclusive`, `shared`) and,
/// on acquisitions and waits, `outcome`; never the key.
pub mod metrics {
    pub use crate::engine::measure::{
        ACQUISITIONS, HOLD_SECONDS, SESSION_LOCKS_HELD, WAIT_SECONDS,
    };
}
