//! How `pg_locks` shows an advisory lock id: the one place that encodes and
//! decodes it, for inspection, leases, cancellation, the testing kit and
//! any query of an operator's own; and the queries over `pg_locks` that
//! pglock sends. Those that tell what a session holds are public
//! ([`HELD_BY_THIS_SESSION`], [`COUNT_HELD_BY_THIS_SESSION`]), so that tests
//! and tools ask exactly what leases and the lock manager ask.
//!
//! A row of `pg_locks` with `locktype = 'advisory'` names its lock by three
//! columns: `classid` and `objid` (two `oid`s, unsigned 32-bit) and
//! `objsubid`, which says the key space. A bigint id is split into its high
//! and low halves with `objsubid = 1`; an int4 pair is stored as its two
//! ints (reinterpreted as unsigned) with `objsubid = 2`. So in both spaces
//! the 64-bit value `(classid << 32) | objid` (the [`ENCODED`] expression)
//! and `objsubid` together name exactly one lock id.
//!
//! ```no_run
//! use pglock_runtime::{Namespace, pg_locks};
//!
//! static JOBS: Namespace = Namespace::named("jobs");
//!
//! # async fn run(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
//! // Which backends hold or wait for job 7?
//! let sql = format!("SELECT l.pid FROM pg_catalog.pg_locks l WHERE {}", pg_locks::MATCHES);
//! let (encoded, objsubid) = pg_locks::encode(JOBS.id(&7_i64));
//! let pids: Vec<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
//!     .bind(encoded)
//!     .bind(objsubid)
//!     .fetch_all(pool)
//!     .await?;
//! # Ok(()) }
//! ```

use crate::contract::id::LockId;
use crate::contract::mode::Mode;

// The expression and the condition as literals, so that the statements
// below are built from them by `concat!`.
macro_rules! encoded {
    () => {
        "((l.classid::int8 << 32) | l.objid::int8)"
    };
}

macro_rules! matches_id {
    () => {
        concat!(
            "(l.locktype = 'advisory' AND ",
            encoded!(),
            " = $1::int8 AND l.objsubid = $2::int2)"
        )
    };
}

/// The SQL expression, over a `pg_locks` row named `l`, of the 64-bit
/// value [`encode`] computes: `(classid << 32) | objid`.
pub const ENCODED: &str = encoded!();

/// The SQL condition, over a `pg_locks` row named `l`, that matches an
/// advisory lock on one id: bind `$1` and `$2` to the two values of
/// [`encode`]. Held and awaited rows both match; add `l.granted` to tell
/// them apart.
pub const MATCHES: &str = matches_id!();

// The condition over a semaphore's permits, as a literal for `concat!`.
macro_rules! permits_of {
    () => {
        concat!(
            "(l.locktype = 'advisory' AND (",
            encoded!(),
            " & -1024) = $1::int8 AND l.objsubid = $2::int2)"
        )
    };
}

/// The SQL condition, over a `pg_locks` row named `l`, that matches every
/// permit of one semaphore, held or awaited: bind `$1` and `$2` to the two
/// values of [`encode`] of its [`PermitIds::base`](crate::PermitIds::base).
/// The permits of a semaphore share every bit but their low 10, whatever
/// its number of permits (see `docs/KEYS.md`).
///
/// ```no_run
/// use pglock_runtime::{Namespace, pg_locks};
///
/// static IMPORTS: Namespace = Namespace::named("imports:tenant");
///
/// # async fn run(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
/// // Which permits of tenant 7's semaphore are held, and by whom?
/// let sql = format!(
///     "SELECT {}, l.pid FROM pg_catalog.pg_locks l WHERE {} AND l.granted",
///     pg_locks::PERMIT_INDEX,
///     pg_locks::PERMITS_OF
/// );
/// let base = IMPORTS.permit_ids(&7_i64, 3).unwrap().base();
/// let (encoded, objsubid) = pg_locks::encode(base);
/// let held: Vec<(i32, i32)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
///     .bind(encoded)
///     .bind(objsubid)
///     .fetch_all(pool)
///     .await?;
/// # Ok(()) }
/// ```
pub const PERMITS_OF: &str = permits_of!();

/// The SQL expression, over a `pg_locks` row named `l` that
/// [`PERMITS_OF`] matches, of the permit's index, as an `int4`.
pub const PERMIT_INDEX: &str = concat!("((", encoded!(), " & 1023)::int4)");

/// The two values by which `pg_locks` knows `id`: `(classid << 32) | objid`
/// as an `i64`, and `objsubid`.
///
/// ```
/// use pglock_runtime::{LockId, pg_locks};
///
/// assert_eq!(pg_locks::encode(LockId::BigInt(-1)), (-1, 1));
/// assert_eq!(pg_locks::encode(LockId::Pair(1, -1)), (0x1_ffff_ffff, 2));
/// ```
pub const fn encode(id: LockId) -> (i64, i16) {
    match id {
        LockId::BigInt(id) => (id, 1),
        LockId::Pair(class, object) => (
            ((class as u32 as u64) << 32 | object as u32 as u64) as i64,
            2,
        ),
    }
}

/// The lock id of a `pg_locks` row, from the value of [`ENCODED`] and
/// `objsubid`; `None` for an `objsubid` no advisory lock has.
///
/// ```
/// use pglock_runtime::{LockId, pg_locks};
///
/// assert_eq!(pg_locks::decode(0x1_ffff_ffff, 2), Some(LockId::Pair(1, -1)));
/// assert_eq!(pg_locks::decode(5, 1), Some(LockId::BigInt(5)));
/// ```
pub const fn decode(encoded: i64, objsubid: i16) -> Option<LockId> {
    match objsubid {
        1 => Some(LockId::BigInt(encoded)),
        2 => Some(LockId::Pair((encoded >> 32) as i32, encoded as i32)),
        _ => None,
    }
}

/// The `mode` column of `pg_locks` for an advisory lock held in `mode`.
///
/// ```
/// # use pglock_runtime::{Mode, pg_locks};
/// assert_eq!(pg_locks::mode_name(Mode::Shared), "ShareLock");
/// ```
pub const fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Exclusive => "ExclusiveLock",
        Mode::Shared => "ShareLock",
    }
}

/// The mode of a `pg_locks` row's `mode` column; `None` for a mode no
/// advisory lock function takes.
pub fn mode(name: &str) -> Option<Mode> {
    [Mode::Exclusive, Mode::Shared]
        .into_iter()
        .find(|mode| mode_name(*mode) == name)
}

/// Whether this session holds a lock, in `pg_locks`: `$1`, `$2` the id as
/// [`encode`] gives it, `$3` the [`mode_name`]. Only granted locks of this
/// backend (`pg_backend_pid()`) in the current database count: a lock on
/// the same id held by another session, waited for by this one, or held in
/// another database of the server does not. Through a transaction pooler
/// the query may reach another backend, which holds nothing: that counts
/// as not held, as it is. Leases, the lock manager and the testing kit's
/// `holds` ask this.
///
/// ```no_run
/// use pglock_runtime::{Mode, Namespace, pg_locks};
///
/// static JOBS: Namespace = Namespace::named("jobs");
///
/// # async fn run(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
/// let (encoded, objsubid) = pg_locks::encode(JOBS.id(&7_i64));
/// let held: bool = sqlx::query_scalar(pg_locks::HELD_BY_THIS_SESSION)
///     .bind(encoded)
///     .bind(objsubid)
///     .bind(pg_locks::mode_name(Mode::Exclusive))
///     .fetch_one(conn)
///     .await?;
/// # Ok(()) }
/// ```
pub const HELD_BY_THIS_SESSION: &str = concat!(
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l WHERE ",
    matches_id!(),
    " AND l.pid = pg_catalog.pg_backend_pid() AND l.granted AND l.mode = $3 \
       AND l.database = (SELECT oid FROM pg_catalog.pg_database \
                         WHERE datname = pg_catalog.current_database()))"
);

/// The three settings that size the shared lock table, as `int4`s:
/// `max_locks_per_transaction`, `max_connections`,
/// `max_prepared_transactions`.
pub(crate) const LOCK_TABLE: &str = "SELECT \
     pg_catalog.current_setting('max_locks_per_transaction')::int4, \
     pg_catalog.current_setting('max_connections')::int4, \
     pg_catalog.current_setting('max_prepared_transactions')::int4";

/// How many advisory locks this session holds (one row per lock and mode,
/// however many times it was taken), as an `int8`. A lock manager's
/// connections send it as their heartbeat, so `pg_stat_activity.query`
/// shows this text on them.
///
/// ```no_run
/// use pglock_runtime::pg_locks;
///
/// # async fn run(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
/// let held: i64 = sqlx::query_scalar(pg_locks::COUNT_HELD_BY_THIS_SESSION)
///     .fetch_one(conn)
///     .await?;
/// # Ok(()) }
/// ```
pub const COUNT_HELD_BY_THIS_SESSION: &str = "SELECT count(*) FROM pg_catalog.pg_locks l \
     WHERE l.locktype = 'advisory' AND l.pid = pg_catalog.pg_backend_pid() AND l.granted";

/// Cancels backend `$3` if, at this instant, it waits for the lock `$1`,
/// `$2` in the statement that began at `$4` (`query_start` as text; NULL:
/// whatever statement waits), and answers that statement's start: the
/// check and the cancel are one statement, so a backend that got its lock
/// and went on to other work, or a later statement of the same backend
/// that waits for the same lock, is never cancelled.
pub(crate) const CANCEL_IF_WAITING: &str = concat!(
    "SELECT a.query_start::text, pg_catalog.pg_cancel_backend(l.pid) \
     FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid WHERE ",
    matches_id!(),
    " AND l.pid = $3 AND NOT l.granted \
     AND ($4::text IS NULL OR a.query_start::text = $4::text)"
);

// The classid of a wait ticket, as a literal for `concat!`; see
// [`TICKET_CLASSID`].
macro_rules! ticket_classid {
    () => {
        "2635876979"
    };
}

/// The high half of every wait ticket's bigint id, so its `pg_locks.classid`.
/// A contended acquisition that tries and waits in one statement takes, just
/// before it waits, a shared lock on a ticket of its own (this classid, and
/// a number of the process's as `objid`): that is how the cancel of an
/// abandoned wait finds the backend that waits, and only that one, without
/// knowing its pid. A ticket lasts until its transaction ends. Inspection
/// leaves tickets out; a lock of an application's own whose bigint id has
/// this high half (one in 2^32 of a named namespace's keys) is left out too.
pub(crate) const TICKET_CLASSID: u32 = 0x9d1c_4a73;

/// The id of the wait ticket numbered `number`.
pub(crate) const fn ticket(number: u32) -> LockId {
    LockId::BigInt(((TICKET_CLASSID as u64) << 32 | number as u64) as i64)
}

macro_rules! holds_ticket {
    ($pid:literal, $ticket:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM pg_catalog.pg_locks t WHERE t.pid = ",
            $pid,
            " AND t.locktype = 'advisory' AND t.granted AND t.objsubid = 1 \
               AND ((t.classid::int8 << 32) | t.objid::int8) = ",
            $ticket,
            ")"
        )
    };
}

/// Cancels the backend that holds the ticket `$3` if, at this instant, it
/// waits for the lock `$1`, `$2`; see [`CANCEL_IF_WAITING`].
pub(crate) const CANCEL_IF_TICKET_WAITING: &str = concat!(
    "SELECT pg_catalog.pg_cancel_backend(l.pid) FROM pg_catalog.pg_locks l WHERE ",
    matches_id!(),
    " AND NOT l.granted AND ",
    holds_ticket!("l.pid", "$3::int8")
);

/// Whether the backend that holds the ticket `$1` still runs a statement
/// (the one that took the ticket: until it answers, its connection can run
/// nothing else).
pub(crate) const TICKET_STILL_RUNNING: &str = concat!(
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a \
     WHERE a.state = 'active' AND ",
    holds_ticket!("a.pid", "$1::int8"),
    ")"
);

/// Every advisory lock of the current database, held and awaited, with
/// what `pg_stat_activity` says of its backend; wait tickets left out.
pub(crate) const INSPECT: &str = concat!(
    "SELECT l.pid, l.objsubid, ",
    encoded!(),
    ", l.mode, l.granted, \
        CASE WHEN l.granted THEN NULL \
             ELSE extract(epoch FROM pg_catalog.clock_timestamp() - l.waitstart)::float8 END, \
        CASE WHEN l.granted THEN '{}'::int4[] ELSE pg_catalog.pg_blocking_pids(l.pid) END, \
        a.query, a.application_name, pg_catalog.host(a.client_addr), a.state, \
        extract(epoch FROM pg_catalog.clock_timestamp() - a.state_change)::float8, \
        extract(epoch FROM pg_catalog.clock_timestamp() - a.xact_start)::float8, \
        extract(epoch FROM pg_catalog.clock_timestamp() - a.query_start)::float8 \
     FROM pg_catalog.pg_locks l \
     LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
     WHERE l.locktype = 'advisory' \
       AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()) \
       AND NOT (l.objsubid = 1 AND l.classid = ",
    ticket_classid!(),
    "::oid) \
     ORDER BY l.objsubid, l.classid, l.objid, l.granted DESC, l.waitstart NULLS FIRST, l.pid"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_columns_as_the_server_writes_them() {
        // classid 0xffffffff, objid 0xffffffff, objsubid 1: the bigint -1.
        assert_eq!(decode(-1, 1), Some(LockId::BigInt(-1)));
        // classid 0, objid 5, objsubid 1.
        assert_eq!(decode(5, 1), Some(LockId::BigInt(5)));
        // classid 0xffffffff (-1 as an oid), objid 7, objsubid 2.
        assert_eq!(
            decode(0xffff_ffff_0000_0007_u64 as i64, 2),
            Some(LockId::Pair(-1, 7))
        );
        assert_eq!(
            encode(LockId::Pair(-1, 7)),
            (0xffff_ffff_0000_0007_u64 as i64, 2)
        );
        assert_eq!(encode(LockId::BigInt(i64::MIN)), (i64::MIN, 1));
    }

    #[test]
    fn decodes_what_it_encodes_in_both_key_spaces() {
        for id in [
            LockId::BigInt(0),
            LockId::BigInt(i64::MIN),
            LockId::BigInt(i64::MAX),
            LockId::BigInt(-1),
            LockId::Pair(0, 0),
            LockId::Pair(i32::MIN, i32::MAX),
            LockId::Pair(-1, -1),
            LockId::Pair(0x7275_6e6c, 0x696e_7465),
        ] {
            let (encoded, objsubid) = encode(id);
            assert_eq!(decode(encoded, objsubid), Some(id), "{id}");
        }
        assert_eq!(decode(5, 0), None);
    }

    #[test]
    fn tickets_carry_their_classid_and_inspection_leaves_them_out() {
        assert_eq!(ticket_classid!(), TICKET_CLASSID.to_string());
        let (encoded, objsubid) = encode(ticket(7));
        assert_eq!((encoded as u64 >> 32) as u32, TICKET_CLASSID);
        assert_eq!((encoded as u32, objsubid), (7, 1));
        assert!(INSPECT.contains(&format!("l.classid = {TICKET_CLASSID}::oid")));
    }

    proptest::proptest! {
        #[test]
        fn pairs_round_trip(class in proptest::num::i32::ANY, object in proptest::num::i32::ANY) {
            let (encoded, objsubid) = encode(LockId::Pair(class, object));
            proptest::prop_assert_eq!(decode(encoded, objsubid), Some(LockId::Pair(class, object)));
        }
    }
}
