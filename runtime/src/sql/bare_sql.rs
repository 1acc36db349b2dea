//! The bare SQL: PostgreSQL's advisory lock functions called directly, as
//! code without pglock calls them. No marker comment, no standby guard, no
//! timeout of its own: a wait lasts as long as the session's `lock_timeout`
//! lets it. Each takes bigint ids and ends its locks with the transaction.
//!
//! pglock never sends these texts. They are the floor its own statements
//! (in the sibling `statements` module) are measured against, by the bench
//! and by anyone comparing: the same call, without what pglock adds.
//!
//! ```no_run
//! use pglock_runtime::{LockId, Namespace, bare_sql};
//!
//! static JOBS: Namespace = Namespace::named("jobs");
//!
//! # async fn run(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
//! let LockId::BigInt(id) = JOBS.id(&7_i64) else { unreachable!("a named namespace") };
//! let mut tx = pool.begin().await?;
//! sqlx::query(bare_sql::XACT_LOCK).bind(id).execute(&mut *tx).await?;
//! tx.commit().await?;
//! # Ok(()) }
//! ```

/// Takes the bigint id `$1` exclusively until the transaction ends,
/// waiting as long as it takes.
pub const XACT_LOCK: &str = "SELECT pg_catalog.pg_advisory_xact_lock($1)";

/// Takes the bigint id `$1` in shared mode until the transaction ends,
/// waiting as long as it takes.
pub const XACT_LOCK_SHARED: &str = "SELECT pg_catalog.pg_advisory_xact_lock_shared($1)";

/// Takes every bigint id of `$1` (an `int8[]`) exclusively until the
/// transaction ends, in one statement: the server sorts the ids and takes
/// them in ascending order, waiting as needed. Returns how many it took.
pub const XACT_LOCK_ALL: &str = "SELECT count(pg_catalog.pg_advisory_xact_lock(s.id)) \
     FROM (SELECT k.id FROM unnest($1::int8[]) AS k(id) ORDER BY k.id) AS s";
