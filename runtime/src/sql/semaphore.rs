//! The SQL of semaphores: the wait that watches every permit until one is
//! taken, and the answers of the try and the wait (the try, a namespace's
//! prepared statement, is `statements::permit_try_sql`).
//!
//! A semaphore of N permits is N advisory locks (`contract::permit`). The
//! try is one prepared statement, the whole cost of a semaphore with a
//! free permit. The wait is one simple-protocol message: a PL/pgSQL `DO`
//! block that loops on the server, so the whole wait costs one round trip
//! whatever its length. Each turn of the loop tries every permit, then
//! waits for one of them (the same one each turn, so a cancel finds the
//! backend waiting for a known lock) with `lock_timeout` set to a short
//! slice ([`SLICE_MS`], doubling each turn up to [`MAX_SLICE_MS`]): a
//! permit the waiter waits for is granted to it the instant it is freed,
//! by the server's lock queue; any other permit that frees is found by the
//! next turn's tries, within one slice. A slice that ends
//! without the lock raises `lock_not_available`, which the block catches
//! (in a subtransaction of its own, so the caller's transaction is left as
//! it was). The caller's deadline (pglock's cap, or a stricter
//! `lock_timeout` of its own) is kept by the loop, which restores the exact
//! text of `lock_timeout` before it returns. A `DO` block returns nothing,
//! so it leaves its answer in the setting `pglock.permit`, which the next
//! statement of the same message reads.
//!
//! Two races of the server's are handled here and in the engine: a slice's
//! timeout that fires as its lock is granted leaves a session lock held
//! (a transaction's is freed with the slice's subtransaction), so a
//! session's wait looks in `pg_locks` after a timed-out slice; and a cancel
//! that arrives as a slice's timeout fires is reported as that timeout and
//! caught, so the cancel of an abandoned wait repeats while the statement
//! runs (`engine::cancel`). A `statement_timeout` that falls due with a
//! slice's timeout is lost the same way (the server reports the earlier of
//! the two and clears both), so the loop keeps the statement's deadline
//! too, and raises its error (`query_canceled`, uncaught) at the first
//! turn past it. The wait reads `pg_locks` once more, before its first
//! slice, for the check of sizes.

use crate::contract::id::LockId;
use crate::contract::permit::permit;
use crate::sql::pg_locks;
use crate::sql::statements::{NONE, Scope, try_function};

/// How long the first turn of a semaphore's wait waits for its one permit
/// before it tries all of them again. Each later turn waits twice as long,
/// up to [`MAX_SLICE_MS`]: a waiter that leaves its permit's queue loses
/// its place in it, so a waiter that has waited long stays longer, and
/// comes to the head of the queue (measured: the worst wait under a steady
/// overload falls from about 25 times the mean to about 5 times).
pub(crate) const SLICE_MS: u32 = 20;

/// The longest turn: the bound on how late a waiter finds a freed permit
/// other than the one it queues for (20 ms in its first turn, 40 ms in its
/// second, 80 ms in its third, then 100 ms).
pub(crate) const MAX_SLICE_MS: u32 = 100;

/// The answer of a permit's try or wait: the index of the permit taken, or
/// one of these codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PermitAnswer {
    /// Permit `index` is now held.
    Taken(u32),
    /// No permit was free (a try), or none was taken before the deadline
    /// (a wait).
    None,
    /// The server is a hot standby; nothing was tried.
    Standby,
    /// None of the caller's permits was free, and a permit beyond them is
    /// held: another holder uses at least `seen` permits.
    Mismatch { seen: u32 },
}

/// A mismatch's answer is this minus the least number of permits seen.
const MISMATCH: i32 = -1000;

impl PermitAnswer {
    pub(crate) fn from_code(code: i32) -> Self {
        match code {
            index if index >= 0 => PermitAnswer::Taken(index as u32),
            NONE => PermitAnswer::None,
            super::statements::STANDBY => PermitAnswer::Standby,
            code => PermitAnswer::Mismatch {
                seen: MISMATCH.saturating_sub(code).max(0) as u32,
            },
        }
    }
}

/// The wait for a permit of the semaphore whose permit 0 is `base` and
/// which has `permits` permits (see the module's text): one
/// simple-protocol message, whose last statement answers the index taken
/// ([`PermitAnswer`]). `target` is the permit each turn waits for, and
/// where its tries start. `cap_ms`: the longest wait, as for a lock (a
/// stricter non-zero `lock_timeout` of the caller's is kept; without a cap,
/// the caller's `lock_timeout` bounds the wait, and `0` means none). The
/// numbers are integers this crate formats.
///
/// Before it waits, the block looks in `pg_locks` for a held permit of the
/// same semaphore with an index of `permits` or more: another holder uses
/// more permits, and the block answers [`PermitAnswer::Mismatch`] instead.
///
/// A session-level wait sets `client_connection_check_interval` first, by
/// a statement of its own, as a session lock's wait does
/// ([`super::statements::session_wait_sql`]).
pub(crate) fn permit_wait_sql(
    marker: &str,
    scope: Scope,
    base: LockId,
    permits: u32,
    target: u32,
    cap_ms: Option<u32>,
) -> String {
    let (encoded, objsubid) = pg_locks::encode(base);
    let (try_args, lock_args) = match base {
        LockId::BigInt(base) => (
            format!("({base})::int8 | p.i::int8"),
            format!("({base})::int8 | ({target})::int8"),
        ),
        LockId::Pair(class, base) => (
            format!("({class})::int4, ({base})::int4 | p.i"),
            format!("({class})::int4, ({base})::int4 | ({target})::int4"),
        ),
    };
    let limit = match cap_ms {
        Some(cap) => format!(
            "CASE WHEN previous <> '0' \
                  AND (extract(epoch FROM previous::interval) * 1000)::int8 <= {cap} \
                 THEN (extract(epoch FROM previous::interval) * 1000)::int8 ELSE {cap} END"
        ),
        None => "(extract(epoch FROM previous::interval) * 1000)::int8".to_owned(),
    };
    let check = match scope {
        Scope::Session => "SET LOCAL client_connection_check_interval = '1s'; ",
        Scope::Xact => "",
    };
    // A lock timeout can fire as the lock is granted: the subtransaction's
    // abort then frees a transaction's lock, but a session lock outlives
    // it, so a session's wait looks whether it holds its permit after all.
    let at_the_edge = match scope {
        Scope::Xact => "NULL;".to_owned(),
        Scope::Session => {
            let (target_encoded, _) = pg_locks::encode(permit(base, target));
            format!(
                "IF EXISTS (SELECT 1 FROM pg_catalog.pg_locks l \
                     WHERE l.locktype = 'advisory' AND l.pid = pg_catalog.pg_backend_pid() \
                       AND l.granted AND {} = ({target_encoded})::int8 \
                       AND l.objsubid = {objsubid}) THEN taken := {target}; END IF;",
                pg_locks::ENCODED
            )
        }
    };
    format!(
        "{marker} {check}DO $pglock$ \
         DECLARE \
             previous text := pg_catalog.current_setting('lock_timeout'); \
             limit_ms int8; \
             started timestamptz := pg_catalog.clock_timestamp(); \
             left_ms int8; \
             slice int8 := {SLICE_MS}; \
             statement_ms int8 := (extract(epoch FROM \
                 pg_catalog.current_setting('statement_timeout')::interval) * 1000)::int8; \
             taken int4; \
             seen int4; \
         BEGIN \
             limit_ms := {limit}; \
             SELECT max({index}) + 1 INTO seen FROM pg_catalog.pg_locks l \
                 WHERE l.locktype = 'advisory' AND ({encoded_expr} & -1024) = ({encoded})::int8 \
                   AND l.objsubid = {objsubid} AND l.granted \
                   AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d \
                                     WHERE d.datname = pg_catalog.current_database()); \
             IF seen > {permits} THEN \
                 PERFORM pg_catalog.set_config('pglock.permit', ({MISMATCH} - seen)::text, true); \
                 RETURN; \
             END IF; \
             LOOP \
                 SELECT p.i INTO taken FROM \
                     (SELECT (g % {permits})::int4 AS i \
                      FROM pg_catalog.generate_series({target}, {target} + {permits} - 1) AS g) AS p \
                     WHERE {try_function}({try_args}) LIMIT 1; \
                 EXIT WHEN taken IS NOT NULL; \
                 IF statement_ms > 0 AND pg_catalog.clock_timestamp() \
                        >= started + statement_ms * interval '1 ms' THEN \
                     RAISE EXCEPTION 'canceling statement due to statement timeout' \
                         USING ERRCODE = 'query_canceled'; \
                 END IF; \
                 left_ms := CASE WHEN limit_ms = 0 THEN slice ELSE limit_ms \
                     - (extract(epoch FROM pg_catalog.clock_timestamp() - started) * 1000)::int8 END; \
                 IF left_ms <= 0 THEN \
                     taken := {NONE}; \
                     EXIT; \
                 END IF; \
                 BEGIN \
                     PERFORM pg_catalog.set_config('lock_timeout', \
                         least(left_ms, slice)::text || 'ms', true); \
                     PERFORM {lock_function}({lock_args}); \
                     taken := {target}; \
                 EXCEPTION WHEN lock_not_available THEN {at_the_edge} \
                 END; \
                 EXIT WHEN taken IS NOT NULL; \
                 slice := least(slice * 2, {MAX_SLICE_MS}); \
             END LOOP; \
             PERFORM pg_catalog.set_config('lock_timeout', previous, true); \
             PERFORM pg_catalog.set_config('pglock.permit', taken::text, true); \
         END $pglock$; \
         SELECT pg_catalog.current_setting('pglock.permit')::int4",
        index = pg_locks::PERMIT_INDEX,
        encoded_expr = pg_locks::ENCODED,
        try_function = try_function(scope),
        lock_function = lock_function(scope),
    )
}

/// The waiting function of an exclusive advisory lock of `scope`.
const fn lock_function(scope: Scope) -> &'static str {
    match scope {
        Scope::Xact => "pg_catalog.pg_advisory_xact_lock",
        Scope::Session => "pg_catalog.pg_advisory_lock",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_decode_each_code() {
        assert_eq!(PermitAnswer::from_code(0), PermitAnswer::Taken(0));
        assert_eq!(PermitAnswer::from_code(1023), PermitAnswer::Taken(1023));
        assert_eq!(PermitAnswer::from_code(NONE), PermitAnswer::None);
        assert_eq!(PermitAnswer::from_code(-2), PermitAnswer::Standby);
        assert_eq!(
            PermitAnswer::from_code(MISMATCH - 5),
            PermitAnswer::Mismatch { seen: 5 }
        );
    }
}
