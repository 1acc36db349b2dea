//! The contract: what a lock *is*. Modes, key values, namespaces, lock
//! families, ids, and the SHA-256 they are derived with.
//!
//! The key derivation here is persistent: two versions of one application
//! exclude each other only if they compute the same id for the same key.
//! Nothing that changes an id may change once shipped; such a change needs
//! new golden vectors (`tests/keys.rs`, `docs/KEYS.md`), and it breaks
//! mutual exclusion with every deployed version.

pub(crate) mod family;
pub(crate) mod id;
pub(crate) mod key;
pub(crate) mod mode;
pub(crate) mod namespace;
pub(crate) mod permit;
pub(crate) mod sha256;
