//! The SQL: every statement text pglock sends, how `pg_locks` shows an
//! advisory lock id, and the bare calls pglock is measured against. Nothing
//! here talks to a server; the engine and the front ends send what these
//! modules write.

pub mod bare_sql;
pub(crate) mod begin;
pub(crate) mod marker;
pub mod pg_locks;
pub(crate) mod semaphore;
pub(crate) mod statements;
