//! The messages that take a lock and begin a transaction in one round trip.
//!
//! sqlx's `Pool::begin_with` sends the text that begins a transaction as
//! one simple-protocol message and waits for its end. Here that text is the
//! lock statement followed by `BEGIN`, in that order: the statements of one
//! message run in one implicit transaction block, and a `BEGIN` after them
//! turns that block into a regular one, which keeps what they did (the
//! lock, and the exact restore of `lock_timeout`). If the lock statement
//! fails, the `BEGIN` never runs and the implicit block is rolled back: the
//! session is left in no transaction, with its settings as they were, and
//! its connection goes back to the pool clean. (With `BEGIN` first, a
//! failure would leave an aborted transaction block that sqlx does not know
//! of.)
//!
//! sqlx reads no row of that message, only its errors and whether it left
//! the session in a transaction. So every outcome but "taken" is an error
//! the statement raises itself: a cast of a text of this crate's to `int4`,
//! whose message (`invalid input syntax for type integer: "pglock: …"`)
//! carries that text. The keys, the cap and the ticket are integers this
//! crate formats.

use crate::contract::id::LockId;
use crate::contract::mode::Mode;
use crate::sql::statements::{
    STANDBY, Scope, literal_args, literal_arrays, lock_function, take_or_wait_sql, try_prefix_sql,
};

/// What a message below raises on a hot standby.
const STANDBY_TEXT: &str = "pglock: a hot standby takes no lock";

/// What the message of a lock that is not waited for raises when the lock
/// is busy.
const BUSY_TEXT: &str = "pglock: the lock is busy";

/// What the message of a set raises when a key is busy, followed by the
/// number of keys taken before it ([`STANDBY`] on a hot standby).
const SET_BUSY_TEXT: &str = "pglock: a key of the set is busy after ";

/// An expression that fails with `text` in its message. It reads `now()`,
/// so the planner can't fold it, and fail, ahead of the `CASE` that chooses
/// it.
fn fail(text: &str) -> String {
    format!("('{text}' || pg_catalog.left(pg_catalog.now()::text, 0))::int4")
}

/// Takes `id`, waiting for it when it is busy (with `lock_timeout` capped at
/// `cap_ms` and restored exactly in the same statement), then begins the
/// transaction that holds it. `ticket`: the encoded id of the wait's ticket,
/// by which an abandoned wait is cancelled.
pub(crate) fn locked_sql(
    marker: &str,
    id: LockId,
    mode: Mode,
    ticket: i64,
    cap_ms: Option<u32>,
) -> String {
    let cap = cap_ms.map(|ms| format!("({ms})::int8"));
    let lock = take_or_wait_sql(
        mode,
        &literal_args(id),
        &format!("({ticket})::int8"),
        cap.as_deref(),
        &fail(STANDBY_TEXT),
    );
    format!("{marker} {lock}; BEGIN")
}

/// Tries `id` without waiting, then begins the transaction that holds it.
pub(crate) fn tried_sql(marker: &str, id: LockId, mode: Mode) -> String {
    format!(
        "{marker} SELECT CASE WHEN pg_catalog.pg_is_in_recovery() THEN {} \
             WHEN {}({}) THEN 0 ELSE {} END; BEGIN",
        fail(STANDBY_TEXT),
        lock_function(Scope::Xact, mode, true),
        literal_args(id),
        fail(BUSY_TEXT)
    )
}

/// Tries every key of a set in order without waiting, then begins the
/// transaction that holds them all; fails at the first busy key, which
/// gives back the keys before it.
pub(crate) fn set_tried_sql(marker: &str, ids: &[(LockId, Mode)]) -> String {
    let [bigints, classes, objects, shared] = literal_arrays(ids);
    let try_prefix = try_prefix_sql([&bigints, &classes, &objects, &shared]);
    format!(
        "{marker} WITH t(taken, pid) AS MATERIALIZED ({try_prefix}) \
         SELECT CASE WHEN t.taken = {} THEN 0 \
             ELSE ('{SET_BUSY_TEXT}' || t.taken::text)::int4 END FROM t; BEGIN",
        ids.len()
    )
}

/// What a failed message of this module raised itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Raised {
    Standby,
    Busy,
    /// A set's key was busy after this many were taken.
    SetBusyAfter(usize),
}

/// What `error` says, when the statement raised it itself. The server's
/// message quotes the text that failed the cast, in whatever language its
/// `lc_messages` says and with that language's quotes: the text is found by
/// its prefix, and read up to where it ends.
pub(crate) fn raised(error: &sqlx::Error) -> Option<Raised> {
    let error = error.as_database_error()?;
    if error.code().as_deref() != Some("22P02") {
        return None;
    }
    let message = error.message();
    let text = &message[message.find("pglock: ")?..];
    if text.starts_with(STANDBY_TEXT) {
        return Some(Raised::Standby);
    }
    if text.starts_with(BUSY_TEXT) {
        return Some(Raised::Busy);
    }
    let count = text.strip_prefix(SET_BUSY_TEXT)?;
    let end = count
        .char_indices()
        .find(|&(index, c)| !(c.is_ascii_digit() || (index == 0 && c == '-')))
        .map_or(count.len(), |(index, _)| index);
    match count[..end].parse::<i32>().ok()? {
        STANDBY => Some(Raised::Standby),
        taken => usize::try_from(taken).ok().map(Raised::SetBusyAfter),
    }
}
