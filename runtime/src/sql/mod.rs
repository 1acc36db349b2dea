//! The SQL: every statement text pglock sends, and how `pg_locks` shows an
//! advisory lock id. Nothing here talks to a server; the engine and the
//! front ends send what these modules write.

pub(crate) mod marker;
pub mod pg_locks;
pub(crate) mod statements;
