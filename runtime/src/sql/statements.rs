//! The SQL that takes advisory locks.
//!
//! Every statement starts with a comment marker naming the namespace, so
//! `pg_stat_activity.query` shows what a backend waits on. A namespace builds
//! its texts once; sqlx prepares each text once per connection and reuses it.
//! Keys and timeouts are always bound parameters, except in the savepoint
//! wait, a simple-protocol query where they are integers formatted by this
//! crate; the marker label is sanitised (see [`super::marker`]).

use std::fmt::Write as _;
use std::sync::Arc;

use sqlx::Postgres;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;

use crate::contract::id::{LockId, Space};
use crate::contract::mode::Mode;
use crate::sql::marker;

/// The result of a try statement: one `int4` says what happened, so the
/// uncontended path is one statement with one column. A busy lock reports
/// the backend's pid, which an abandoned wait needs to be cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TryStatus {
    Acquired,
    Busy { pid: i32 },
    Standby,
}

impl TryStatus {
    pub(crate) fn from_code(code: i32) -> Self {
        match code {
            0 => TryStatus::Acquired,
            STANDBY => TryStatus::Standby,
            pid => TryStatus::Busy { pid },
        }
    }
}

/// The code of a try statement run on a hot standby.
pub(crate) const STANDBY: i32 = -2;

/// [`STANDBY`] as the statements write it.
const STANDBY_CODE: &str = "-2";

/// The guard every try statement starts with: a hot standby's advisory locks
/// exclude no one on the primary, so there the lock is not even tried. It
/// costs no round trip of its own.
pub(crate) const GUARD: &str = "CASE WHEN pg_catalog.pg_is_in_recovery() THEN -2";

/// Whether a server is the primary, as libpq's
/// `target_session_attrs=read-write` asks: in recovery (a standby), and
/// whether its transactions are read-only. One round trip, once per new
/// connection to one of several hosts.
pub(crate) const PRIMARY_CHECK: &str = "SELECT pg_catalog.pg_is_in_recovery(), \
     pg_catalog.current_setting('transaction_read_only') = 'on'";

/// The answer of a semaphore's try or wait when it took no permit.
pub(crate) const NONE: i32 = -1;

/// Whether a lock ends with its transaction or with its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    Xact,
    Session,
}

/// The suffix of the advisory lock functions of `mode`.
const fn function_suffix(mode: Mode) -> &'static str {
    match mode {
        Mode::Exclusive => "",
        Mode::Shared => "_shared",
    }
}

/// `pg_catalog.pg_[try_]advisory_[xact_]lock[_shared]`.
pub(super) fn lock_function(scope: Scope, mode: Mode, try_only: bool) -> String {
    format!(
        "pg_catalog.pg_{}advisory_{}lock{}",
        if try_only { "try_" } else { "" },
        match scope {
            Scope::Xact => "xact_",
            Scope::Session => "",
        },
        function_suffix(mode)
    )
}

/// Per-namespace SQL texts, indexed by [`Scope`] and [`Mode`].
#[derive(Debug)]
pub(crate) struct Statements {
    label: String,
    marker: String,
    try_lock: [[Arc<str>; 2]; 2],
    xact_wait: [Arc<str>; 2],
    xact_capped_wait: [Arc<str>; 2],
    xact_take_or_wait: [Arc<str>; 2],
    xact_take_or_capped_wait: [Arc<str>; 2],
    unlock: [Arc<str>; 2],
    try_prefix: Arc<str>,
    try_prefix_exclusive: Option<Arc<str>>,
    permit_try: [Arc<str>; 2],
}

impl Statements {
    /// The texts of a namespace labelled `label` whose keys live in `space`.
    pub(crate) fn new(label: &str, space: Space) -> Self {
        // A raw namespace without a label shows its number.
        let label = match space {
            _ if !label.is_empty() => marker::sanitize(label),
            Space::BigInt(mask) => format!("{mask:#018x}"),
            Space::Pair(class) => format!("{class:#010x}"),
        };
        let marker = marker::comment(&label);
        let (args, next_param) = match space {
            Space::BigInt(_) => ("$1::int8", 2),
            Space::Pair(_) => ("$1::int4, $2::int4", 3),
        };
        let (cap, after_cap) = (format!("${next_param}::int8"), next_param + 1);
        let by_mode = |build: &dyn Fn(Mode) -> String| {
            [Mode::Exclusive, Mode::Shared].map(|mode| Arc::from(build(mode)))
        };
        let try_lock = |scope: Scope| {
            by_mode(&|mode| {
                format!(
                    "{marker} SELECT {GUARD} WHEN {}({args}) THEN 0 ELSE pg_catalog.pg_backend_pid() END",
                    lock_function(scope, mode, true)
                )
            })
        };
        Self {
            try_lock: [try_lock(Scope::Xact), try_lock(Scope::Session)],
            xact_wait: by_mode(&|mode| {
                format!(
                    "{marker} SELECT {}({args})::text",
                    lock_function(Scope::Xact, mode, false)
                )
            }),
            xact_capped_wait: by_mode(&|mode| {
                format!(
                    "{marker} {}",
                    capped_wait_sql(
                        &format!("{}({args})", lock_function(Scope::Xact, mode, false)),
                        &format!("${next_param}::int8"),
                    )
                )
            }),
            xact_take_or_wait: by_mode(&|mode| {
                format!(
                    "{marker} {}",
                    take_or_wait_sql(
                        mode,
                        args,
                        &format!("${next_param}::int8"),
                        None,
                        STANDBY_CODE
                    )
                )
            }),
            xact_take_or_capped_wait: by_mode(&|mode| {
                format!(
                    "{marker} {}",
                    take_or_wait_sql(
                        mode,
                        args,
                        &format!("${after_cap}::int8"),
                        Some(&cap),
                        STANDBY_CODE,
                    )
                )
            }),
            unlock: by_mode(&|mode| {
                format!(
                    "{marker} SELECT pg_catalog.pg_advisory_unlock{}({args})",
                    function_suffix(mode)
                )
            }),
            try_prefix: Arc::from(try_prefix_for_marker(&marker)),
            try_prefix_exclusive: match space {
                Space::BigInt(_) => Some(Arc::from(format!(
                    "{marker} {}",
                    try_prefix_exclusive_sql("$1::int8[]")
                ))),
                Space::Pair(_) => None,
            },
            permit_try: [Scope::Xact, Scope::Session].map(|scope| {
                let marker = marker::with_permits(&marker, None);
                Arc::from(permit_try_sql(&marker, space, scope))
            }),
            label,
            marker,
        }
    }

    pub(crate) fn try_lock(&self, scope: Scope, mode: Mode) -> Arc<str> {
        self.try_lock[scope as usize][mode as usize].clone()
    }

    pub(crate) fn xact_wait(&self, mode: Mode) -> Arc<str> {
        self.xact_wait[mode as usize].clone()
    }

    pub(crate) fn xact_capped_wait(&self, mode: Mode) -> Arc<str> {
        self.xact_capped_wait[mode as usize].clone()
    }

    /// The try that, when the lock is busy, goes on to wait in the same
    /// statement; see [`take_or_wait_sql`]. `capped`: with the cap parameter.
    pub(crate) fn xact_take_or_wait(&self, mode: Mode, capped: bool) -> Arc<str> {
        if capped {
            self.xact_take_or_capped_wait[mode as usize].clone()
        } else {
            self.xact_take_or_wait[mode as usize].clone()
        }
    }

    pub(crate) fn unlock(&self, mode: Mode) -> Arc<str> {
        self.unlock[mode as usize].clone()
    }

    pub(crate) fn try_prefix(&self) -> Arc<str> {
        self.try_prefix.clone()
    }

    /// The try of a list of exclusive bigint ids (`$1`), the usual set;
    /// `None` in the pair space.
    pub(crate) fn try_prefix_exclusive(&self) -> Option<Arc<str>> {
        self.try_prefix_exclusive.clone()
    }

    /// The try of a semaphore's permits; see [`permit_try_sql`].
    pub(crate) fn permit_try(&self, scope: Scope) -> Arc<str> {
        self.permit_try[scope as usize].clone()
    }

    /// `/* pglock ns=<label> */`, the first thing in every statement.
    pub(crate) fn marker(&self) -> &str {
        &self.marker
    }

    /// The sanitised label the marker shows.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }
}

/// The try of a semaphore's permits, a prepared statement: the first free
/// permit from a starting index, taken, in one statement. Parameters: the
/// base permit (`$1` bigint, or `$1`, `$2` the pair's class and second
/// int), then the number of permits and the index to start from (`int4`s).
/// Returns the index taken ([`NONE`] when every permit is busy,
/// [`STANDBY`] on a hot standby) and the
/// backend's pid, which the cancel of an abandoned wait needs.
///
/// The permits are scanned from the starting index, wrapping around, and
/// the scan stops at the first try that succeeds (`LIMIT 1` pulls no row
/// after it), so a free semaphore costs one try; starting where the caller
/// says spreads the holders over the permits. A scalar subquery's rows are
/// pulled lazily, inside the `CASE` that checks for a standby first.
fn permit_try_sql(marker: &str, space: Space, scope: Scope) -> String {
    let (lock_args, next) = match space {
        Space::BigInt(_) => ("$1::int8 | p.i::int8".to_owned(), 2),
        Space::Pair(_) => ("$1::int4, $2::int4 | p.i".to_owned(), 3),
    };
    let (permits, start) = (format!("${next}::int4"), format!("${}::int4", next + 1));
    format!(
        "{marker} SELECT {GUARD} ELSE coalesce((SELECT p.i FROM \
             (SELECT (g % {permits})::int4 AS i \
              FROM pg_catalog.generate_series({start}, {start} + {permits} - 1) AS g) AS p \
             WHERE {}({lock_args}) LIMIT 1), {NONE}) END, \
         pg_catalog.pg_backend_pid()",
        try_function(scope)
    )
}

/// The try function of an exclusive advisory lock of `scope`.
pub(crate) const fn try_function(scope: Scope) -> &'static str {
    match scope {
        Scope::Xact => "pg_catalog.pg_try_advisory_xact_lock",
        Scope::Session => "pg_catalog.pg_try_advisory_lock",
    }
}

/// Binds `id` as the arguments of an advisory lock function: one `int8`, or
/// two `int4`.
pub(crate) fn bind_id(
    query: Query<'_, Postgres, PgArguments>,
    id: LockId,
) -> Query<'_, Postgres, PgArguments> {
    match id {
        LockId::BigInt(id) => query.bind(id),
        LockId::Pair(class, id) => query.bind(class).bind(id),
    }
}

/// One statement that caps `lock_timeout`, waits, and restores the exact
/// previous text of the setting.
///
/// Each step reads the previous one's output, and every step is a
/// `MATERIALIZED` CTE: the planner may neither inline nor reorder them, so
/// the previous value is read before the cap is set, the cap before the
/// wait, and the restore after the lock is held. (A plain CTE or a LATERAL
/// chain gets reordered and silently skips the restore.) A stricter
/// non-zero setting is kept; `0` (no limit) is capped. The setting's text
/// (`0`, `250ms`, `1min`, `1d`: always a number and a unit PostgreSQL's
/// interval input reads) is turned into milliseconds in place: reading
/// `pg_settings` instead would build a row for each of the server's few
/// hundred settings, which costs more than the round trips saved. The setting is
/// changed `LOCAL`ly, so a failed wait leaves nothing behind once the
/// transaction (or the savepoint) is rolled back.
fn capped_wait_sql(lock_call: &str, cap_ms: &str) -> String {
    format!(
        "WITH previous AS MATERIALIZED ( \
             SELECT t.setting, \
                 (extract(epoch FROM t.setting::interval) * 1000)::int8 AS ms \
             FROM (SELECT pg_catalog.current_setting('lock_timeout') AS setting) AS t \
         ), capped AS MATERIALIZED ( \
             SELECT pg_catalog.set_config('lock_timeout', \
                 CASE WHEN previous.ms > 0 AND previous.ms <= {cap_ms} THEN previous.setting \
                      ELSE ({cap_ms})::text || 'ms' END, true) AS applied \
             FROM previous \
         ), locked AS MATERIALIZED ( \
             SELECT {lock_call}::text AS held FROM capped WHERE capped.applied IS NOT NULL \
         ), restored AS MATERIALIZED ( \
             SELECT pg_catalog.set_config('lock_timeout', previous.setting, true) AS setting \
             FROM previous, locked WHERE locked.held IS NOT NULL \
         ) SELECT setting FROM restored"
    )
}

/// One statement that tries the lock and, only when it is busy, waits for
/// it: the contended acquisition's single round trip. Returns `0` when the
/// try took the lock, `1` when it was taken after waiting, and
/// [`STANDBY`] on a hot standby (where nothing is tried).
///
/// The steps are the `WHEN`s of one `CASE`, which PostgreSQL evaluates in
/// order, each only when the ones before it did not decide: the standby
/// guard, the try, the ticket (a shared lock on a number of the caller's
/// that no one else takes, by which an abandoned wait is found and
/// cancelled without knowing the backend's pid), the cap, the wait, the
/// restore. None of them can be `NULL`, so each falls through to the next.
/// With a cap (`cap`, milliseconds as `int8`), the previous setting is read
/// once, by a `MATERIALIZED` CTE that the planner may not inline, before
/// any step runs: the restore puts back that exact text. A stricter
/// non-zero setting is kept; `0` (no limit, the default, so checked first:
/// it needs no conversion to milliseconds) is capped. `standby`: what the
/// statement answers on a hot standby ([`STANDBY`], or an expression that
/// fails).
///
/// When the try takes the lock, the ticket, the cap and the restore never
/// run: the statement then costs a few microseconds of server time more
/// than the plain try, which is why it is sent only for a lock found busy
/// lately (see `engine::contention`).
pub(super) fn take_or_wait_sql(
    mode: Mode,
    args: &str,
    ticket: &str,
    cap: Option<&str>,
    standby: &str,
) -> String {
    let try_call = format!("{}({args})", lock_function(Scope::Xact, mode, true));
    let lock_call = format!("{}({args})", lock_function(Scope::Xact, mode, false));
    let ticket_call = format!("pg_catalog.pg_try_advisory_xact_lock_shared({ticket})");
    match cap {
        None => format!(
            "SELECT CASE WHEN pg_catalog.pg_is_in_recovery() THEN {standby} \
                 WHEN {try_call} THEN 0 \
                 WHEN {ticket_call} IS NULL THEN NULL \
                 WHEN {lock_call}::text IS NULL THEN NULL \
                 ELSE 1 END"
        ),
        Some(cap) => format!(
            "WITH previous AS MATERIALIZED ( \
                 SELECT pg_catalog.current_setting('lock_timeout') AS setting \
             ) SELECT CASE WHEN pg_catalog.pg_is_in_recovery() THEN {standby} \
                 WHEN {try_call} THEN 0 \
                 WHEN {ticket_call} IS NULL THEN NULL \
                 WHEN pg_catalog.set_config('lock_timeout', \
                     CASE WHEN previous.setting = '0' THEN ({cap})::text || 'ms' \
                          WHEN (extract(epoch FROM previous.setting::interval) * 1000)::int8 \
                              <= {cap} THEN previous.setting \
                          ELSE ({cap})::text || 'ms' END, true) IS NULL THEN NULL \
                 WHEN {lock_call}::text IS NULL THEN NULL \
                 WHEN pg_catalog.set_config('lock_timeout', previous.setting, true) IS NULL \
                     THEN NULL \
                 ELSE 1 END \
             FROM previous"
        ),
    }
}

/// Tries the locks of a list in order and stops at the first busy one, so a
/// caller holds a prefix of an ascending list and may then wait for the next
/// key without breaking the lock order. Parameters: `$1` bigint ids (NULL
/// for a pair), `$2`/`$3` the pair's ints, `$4` shared flags. Returns the
/// number of locks taken (-2 on a standby) and the backend's pid.
pub(crate) fn try_prefix_for_marker(marker: &str) -> String {
    let arrays = ["$1::int8[]", "$2::int4[]", "$3::int4[]", "$4::bool[]"];
    format!("{marker} {}", try_prefix_sql(arrays))
}

/// The rows of the list are tried in the list's order, and the scan stops
/// at the first row whose try fails: that is the one row the filter lets
/// through, and `LIMIT 1` pulls no row after it, so no key after a busy
/// one is tried. A scalar subquery's `LIMIT` is evaluated lazily, inside the
/// `CASE` that checks for a standby first. Per key, the server does one
/// function call and one filter, about what the bare
/// [`XACT_LOCK_ALL`](super::bare_sql::XACT_LOCK_ALL) over the list does.
pub(super) fn try_prefix_sql([bigints, classes, objects, shared]: [&str; 4]) -> String {
    let mut sql = String::new();
    let _ = write!(
        sql,
        "SELECT CASE WHEN pg_catalog.pg_is_in_recovery() THEN {STANDBY} \
             ELSE coalesce((SELECT k.i FROM \
                 unnest({bigints}, {classes}, {objects}, {shared}) \
                     WITH ORDINALITY AS k(id, class, object, shared, i) \
                 WHERE NOT CASE \
                     WHEN k.id IS NOT NULL AND k.shared \
                         THEN pg_catalog.pg_try_advisory_xact_lock_shared(k.id) \
                     WHEN k.id IS NOT NULL THEN pg_catalog.pg_try_advisory_xact_lock(k.id) \
                     WHEN k.shared \
                         THEN pg_catalog.pg_try_advisory_xact_lock_shared(k.class, k.object) \
                     ELSE pg_catalog.pg_try_advisory_xact_lock(k.class, k.object) END \
                 LIMIT 1)::int4 - 1, pg_catalog.cardinality({bigints})) END, \
             pg_catalog.pg_backend_pid()"
    );
    sql
}

/// [`try_prefix_sql`] for a list of exclusive bigint ids: one array, one
/// call per key.
fn try_prefix_exclusive_sql(bigints: &str) -> String {
    format!(
        "SELECT CASE WHEN pg_catalog.pg_is_in_recovery() THEN {STANDBY} \
             ELSE coalesce((SELECT k.i FROM unnest({bigints}) WITH ORDINALITY AS k(id, i) \
                 WHERE NOT pg_catalog.pg_try_advisory_xact_lock(k.id) LIMIT 1)::int4 - 1, \
                 pg_catalog.cardinality({bigints})) END, \
             pg_catalog.pg_backend_pid()"
    )
}

/// Several keys tried without waiting, all or nothing: the try runs in a
/// savepoint that the caller releases when every key was taken, and rolls
/// back to (releasing the keys taken before the busy one) when not. A
/// simple-protocol message, so the savepoint and the try cost one round
/// trip; the ids are integers this crate formats.
pub(crate) fn try_all_or_nothing_sql(marker: &str, ids: &[(LockId, Mode)]) -> String {
    let [bigints, classes, objects, shared] = literal_arrays(ids);
    format!(
        "{marker} SAVEPOINT {TRY_SAVEPOINT}; {}",
        try_prefix_sql([&bigints, &classes, &objects, &shared])
    )
}

/// The four arrays [`try_prefix_sql`] reads, written in as integers and
/// booleans this crate formats.
pub(super) fn literal_arrays(ids: &[(LockId, Mode)]) -> [String; 4] {
    let mut bigints = String::from("ARRAY[");
    let mut classes = String::from("ARRAY[");
    let mut objects = String::from("ARRAY[");
    let mut shared = String::from("ARRAY[");
    for (index, (id, mode)) in ids.iter().enumerate() {
        let separator = if index == 0 { "" } else { "," };
        let (bigint, class, object) = match id {
            LockId::BigInt(id) => (format!("({id})"), 0, 0),
            LockId::Pair(class, object) => ("NULL".to_owned(), *class, *object),
        };
        let _ = write!(bigints, "{separator}{bigint}");
        let _ = write!(classes, "{separator}({class})");
        let _ = write!(objects, "{separator}({object})");
        let _ = write!(shared, "{separator}{}", *mode == Mode::Shared);
    }
    [
        format!("{bigints}]::int8[]"),
        format!("{classes}]::int4[]"),
        format!("{objects}]::int4[]"),
        format!("{shared}]::bool[]"),
    ]
}

pub(crate) const TRY_SAVEPOINT: &str = "pglock_try";

/// Keeps what the all-or-nothing try took.
pub(crate) const TRY_SAVEPOINT_RELEASE: &str = "RELEASE SAVEPOINT pglock_try";

/// Gives back what the all-or-nothing try took.
pub(crate) const TRY_SAVEPOINT_ROLLBACK: &str =
    "ROLLBACK TO SAVEPOINT pglock_try; RELEASE SAVEPOINT pglock_try";

/// The arguments of an advisory lock function for `id`, written in as
/// integers this crate formats.
pub(super) fn literal_args(id: LockId) -> String {
    // Parenthesised: `-9223372036854775808::int8` would parse as the
    // negation of an out-of-range `int8`.
    match id {
        LockId::BigInt(id) => format!("({id})::int8"),
        LockId::Pair(class, id) => format!("({class})::int4, ({id})::int4"),
    }
}

/// A wait with its key and cap written in as integers this crate formats,
/// for the simple-protocol waits below.
fn literal_wait_sql(scope: Scope, id: LockId, mode: Mode, cap_ms: Option<u32>) -> String {
    let lock_call = format!(
        "{}({})",
        lock_function(scope, mode, false),
        literal_args(id)
    );
    match cap_ms {
        Some(cap_ms) => capped_wait_sql(&lock_call, &format!("{cap_ms}::int8")),
        None => format!("SELECT {lock_call}::text"),
    }
}

/// The savepoint form of a transaction-scoped wait: one simple-protocol
/// round trip that opens a savepoint, waits, and releases the savepoint. On
/// failure the caller rolls back to the savepoint, which also undoes the cap.
pub(crate) fn savepoint_wait_sql(
    marker: &str,
    id: LockId,
    mode: Mode,
    cap_ms: Option<u32>,
) -> String {
    let wait = literal_wait_sql(Scope::Xact, id, mode, cap_ms);
    format!("{marker} SAVEPOINT {SAVEPOINT}; {wait}; RELEASE SAVEPOINT {SAVEPOINT}")
}

/// A session-level wait. The server must notice when the waiting client is
/// gone (an abandoned acquisition closes the connection), or it would go on
/// waiting and then hold the lock for no one. `client_connection_check_interval`
/// does that, but only if it is set when a statement starts: so it is set by
/// a statement of its own, in the same message. The message's statements
/// form one implicit transaction, and the `LOCAL` setting ends with it.
pub(crate) fn session_wait_sql(
    marker: &str,
    id: LockId,
    mode: Mode,
    cap_ms: Option<u32>,
) -> String {
    let wait = literal_wait_sql(Scope::Session, id, mode, cap_ms);
    format!(
        "{marker} SET LOCAL client_connection_check_interval = '{CLIENT_CHECK_INTERVAL}'; {wait}"
    )
}

/// How often a backend waiting for a session lock checks its client.
const CLIENT_CHECK_INTERVAL: &str = "1s";

pub(crate) const SAVEPOINT: &str = "pglock_wait";

/// Undoes a failed savepoint wait: the transaction is usable again and keeps
/// every lock it held before the wait.
pub(crate) const SAVEPOINT_ROLLBACK: &str =
    "ROLLBACK TO SAVEPOINT pglock_wait; RELEASE SAVEPOINT pglock_wait";

/// Issues a fencing token (see `front::fencing`): a new transaction id, in
/// a read-write transaction of its own whose commit is durable before the
/// answer, whatever the session's `synchronous_commit`. PostgreSQL commits
/// a transaction that wrote nothing to the WAL asynchronously, however
/// `synchronous_commit` is set, so the transaction writes an empty logical
/// decoding message (prefix `pglock.fence`): then its commit waits for the
/// flush.
///
/// The session must be in no transaction: inside one, `BEGIN` would only
/// warn, the id would be that transaction's (handed out before the grant),
/// and `COMMIT` would commit the caller's work. A transaction this message
/// began started when the message arrived, so its `now()` is the
/// statement's timestamp; otherwise the statement fails (with
/// [`NOT_ALONE`] in its message) before the `COMMIT` runs. (The failing
/// cast reads `now()`, so that the planner can't fold it, and fail, ahead of
/// the `CASE`.)
pub(crate) const FENCING_TOKEN: &str = "BEGIN READ WRITE; \
     SET LOCAL synchronous_commit = on; \
     SELECT CASE WHEN pg_catalog.now() = pg_catalog.statement_timestamp() \
                 THEN pg_catalog.pg_current_xact_id()::text::int8 \
                 ELSE ('pglock: a fencing token needs a session in no transaction' \
                       || pg_catalog.left(pg_catalog.now()::text, 0))::int8 END, \
            pg_catalog.pg_logical_emit_message(true, 'pglock.fence', ''); \
     COMMIT";

/// What the failure of [`FENCING_TOKEN`] inside a transaction says.
pub(crate) const NOT_ALONE: &str = "pglock: a fencing token needs a session in no transaction";

/// Sets how the server's kernel probes a session's client once it goes
/// silent, so that a server behind a network that stops answering ends the
/// session (and frees its locks) within a known time: after `idle_s`
/// seconds without a packet from the client, `count` probes `interval_s`
/// seconds apart; and, from PostgreSQL 12 (`user_timeout_ms` is then
/// given), data the client leaves unacknowledged for that long ends it too.
/// Session-level `SET`s, which outlive the implicit transaction of the
/// message; the numbers are integers this crate formats.
pub(crate) fn server_keepalive_sql(
    idle_s: u32,
    interval_s: u32,
    count: u32,
    user_timeout_ms: Option<u32>,
) -> String {
    let mut sql = format!(
        "SET tcp_keepalives_idle = {idle_s}; SET tcp_keepalives_interval = {interval_s}; \
         SET tcp_keepalives_count = {count}"
    );
    if let Some(ms) = user_timeout_ms {
        let _ = write!(sql, "; SET tcp_user_timeout = {ms}");
    }
    sql
}

/// Releases every session-level advisory lock of the session: a lock
/// manager's connection, as the manager closes.
pub(crate) const UNLOCK_ALL: &str = "SELECT pg_catalog.pg_advisory_unlock_all()";

/// Opens the transaction a lock manager's busy connection runs its tries
/// and releases in (see `front::manager::batch`). READ COMMITTED whatever
/// the session's default, so that between statements it holds no snapshot;
/// the idle-in-transaction timeout is off for it alone, because a session
/// ended by that timeout would take every lock it holds with it. The
/// statements run in a savepoint: a transaction that fails undoes its
/// `SET LOCAL`s at once, and the session's timeout would run until the
/// rollback arrives, while a failed savepoint leaves them in force.
pub(crate) const BATCH_BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED; \
     SET LOCAL idle_in_transaction_session_timeout = 0; SAVEPOINT pglock_batch";

/// [`BATCH_BEGIN`] for PostgreSQL 17 and later, whose `transaction_timeout`
/// ends the session too.
pub(crate) const BATCH_BEGIN_17: &str = "BEGIN ISOLATION LEVEL READ COMMITTED; \
     SET LOCAL idle_in_transaction_session_timeout = 0; SET LOCAL transaction_timeout = 0; \
     SAVEPOINT pglock_batch";

/// Ends that transaction. Session locks taken or released in it stay so
/// whether it commits or rolls back.
pub(crate) const BATCH_COMMIT: &str = "COMMIT";

/// Ends that transaction after a statement in it failed.
pub(crate) const BATCH_ROLLBACK: &str = "ROLLBACK";
