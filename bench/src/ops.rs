//! The variants: what one operation of each sends, and the SQL it sends.
//!
//! Every variant runs on connections of its own, made with the same
//! options, and every one that takes a transaction-scoped lock does it in
//! the same shape: `conn.begin()`, the lock, `tx.commit()`. Each uses keys
//! no other variant uses, so no variant ever waits for another.

use std::fmt;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use pglock::{LockId, Namespace, bare_sql};
use sqlx::postgres::{PgAdvisoryLock, PgAdvisoryLockKey, PgConnection};
use sqlx::{AssertSqlSafe, Connection, Postgres, Transaction};

use crate::BoxError;

/// The timeout every pglock variant asks for: the "5s".
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

/// Capped-statement and hand-written acquisitions per transaction in the
/// statement-shaped variants, each on a key of its own.
pub(crate) const STATEMENTS_PER_TX: usize = 50;

/// The contended hand-off's task counts.
pub(crate) const HANDOFF_TASKS: [usize; 5] = [1, 2, 4, 8, 16];

/// The many-keys variants' key counts.
pub(crate) const MANY_KEYS: [usize; 4] = [1, 10, 100, 1000];

/// The macro's namespace is its own `static`; this one reproduces its ids.
pub(crate) static RUNTIME: Namespace = Namespace::named("pglock-bench:runtime");
/// The namespace whose marker the reproduced capped-wait statement carries.
pub(crate) static CAPPED: Namespace = Namespace::named("pglock-bench:capped");
pub(crate) static HANDOFF: Namespace = Namespace::named("pglock-bench:handoff");
pub(crate) static MANY: Namespace = Namespace::named("pglock-bench:many");
/// A raw key space, as hand-written code uses.
pub(crate) static HAND_WRITTEN: Namespace = Namespace::raw(0x7275_6e6c_9e37_79b9, "hand-written");
static RAW: Namespace = Namespace::named("pglock-bench:raw");

/// A raw bigint lock id, for the variants that write their own SQL.
pub(crate) fn bigint(namespace: &Namespace, key: i64) -> i64 {
    match namespace.id(&key) {
        LockId::BigInt(id) => id,
        LockId::Pair(..) => unreachable!("the bench's namespaces are in the bigint space"),
    }
}

/// (1): the physical floor, prepared (sqlx caches the statement).
pub(crate) const BASELINE_SQL: &str = bare_sql::XACT_LOCK;
const BASELINE_SHARED_SQL: &str = bare_sql::XACT_LOCK_SHARED;

/// (3): the runtime's capped-wait statement for an exclusive lock in the
/// bigint space. The runtime sends it only after a try has failed, so a free
/// key can't reach it through the public API: before measuring,
/// `crate::checks::learn_capped_sql` lets the runtime wait for a held lock
/// and takes the statement's text from `pg_stat_activity`.
pub(crate) static CAPPED_SQL: OnceLock<Arc<str>> = OnceLock::new();

/// (4): the hand-written pattern, three statements. The cap reads the
/// previous setting and sets the cap in one statement (a stricter non-zero
/// setting is kept), returning the previous text for the restore.
pub(crate) const HAND_WRITTEN_CAP_SQL: &str = "WITH previous AS MATERIALIZED ( \
         SELECT current_setting('lock_timeout') AS setting \
     ) \
     SELECT previous.setting, set_config('lock_timeout', \
         CASE WHEN (extract(epoch FROM previous.setting::interval) * 1000)::int8 BETWEEN 1 AND $2 \
              THEN previous.setting ELSE $1 END, true) \
     FROM previous";
/// The wait, in the exclusive mode the runtime variant takes.
const HAND_WRITTEN_LOCK_SQL: &str = bare_sql::XACT_LOCK;
/// The restore of the exact previous text.
pub(crate) const HAND_WRITTEN_RESTORE_SQL: &str = "SELECT set_config('lock_timeout', $1, true)";
const HAND_WRITTEN_CAP_TEXT: &str = "5s";
const HAND_WRITTEN_CAP_MS: i64 = 5_000;

/// (5): sqlx's own lock, made once as an application would.
static SQLX_LOCK: LazyLock<PgAdvisoryLock> =
    LazyLock::new(|| PgAdvisoryLock::with_key(PgAdvisoryLockKey::BigInt(bigint(&RAW, 5))));

/// (8): DistributedLock's PostgreSQL sequence for a timed acquire of a
/// session lock (its `PostgresAdvisoryLock`, a connection of its own, no
/// transaction): one command of three statements, sent in one flush (its
/// driver sends them with one Sync; here a simple query, which the server
/// also runs as one implicit transaction, so that `SET LOCAL` lasts until
/// the lock statement ends), then the unlock.
static DISTRIBUTED_LOCK_ACQUIRE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = {}; \
         SELECT pg_catalog.pg_advisory_lock({}) AS result",
        TIMEOUT.as_millis(),
        bigint(&RAW, 10)
    )
});
const DISTRIBUTED_LOCK_RELEASE_SQL: &str = "SELECT pg_catalog.pg_advisory_unlock($1)";

/// (2): an annotated function with a 5 s timeout, on a free key.
#[pglock::advisory_lock(ns = "pglock-bench:macro", key = key, timeout = "5s")]
pub(crate) async fn locked_by_macro(
    tx: &mut Transaction<'_, Postgres>,
    key: i64,
) -> Result<(), pglock::Error> {
    let _ = tx;
    Ok(())
}

/// (7'): the floor of a set of keys, one statement inside the transaction:
/// the ids sorted by the server and locked in that order, waiting as needed.
pub(crate) const MANY_KEYS_FLOOR_SQL: &str = bare_sql::XACT_LOCK_ALL;

/// The keys of a many-keys variant: the same ids for pglock and the floor
/// (each runs on its own connection, and its locks end with its
/// transaction), given in descending order so that both sort them.
pub(crate) fn many_keys(keys: usize) -> impl Iterator<Item = i64> {
    (0..keys as i64).rev()
}

/// How a many-keys variant takes its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeysBy {
    /// `lock_many(keys).timeout(5s)`: one call.
    LockMany,
    /// One `lock(&k).timeout(5s)` call per key.
    SingleCalls,
    /// The bare SQL floor, [`MANY_KEYS_FLOOR_SQL`].
    Floor,
}

/// What a hand-off task locks, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Handoff {
    /// pglock, exclusive, 5 s timeout: a try, then (busy) the capped wait.
    Exclusive,
    /// pglock, shared, 5 s timeout: nobody waits.
    Shared,
    /// [`bare_sql::XACT_LOCK`]: the bare SQL under the same contention.
    RawExclusive,
    /// [`bare_sql::XACT_LOCK_SHARED`].
    RawShared,
}

/// One kind of operation, as the bench counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Baseline,
    Macro,
    Runtime,
    CappedTx,
    CappedStatements,
    HandWrittenTx,
    HandWrittenStatements,
    SqlxAdvisoryLock,
    DistributedLock,
    Handoff { lock: Handoff, tasks: usize },
    ManyKeys { keys: usize, how: KeysBy },
}

impl Op {
    /// Every variant, in the order of the report.
    pub(crate) fn all() -> Vec<Op> {
        let mut all = vec![
            Op::Baseline,
            Op::Macro,
            Op::Runtime,
            Op::CappedTx,
            Op::CappedStatements,
            Op::HandWrittenTx,
            Op::HandWrittenStatements,
            Op::SqlxAdvisoryLock,
            Op::DistributedLock,
        ];
        for lock in [
            Handoff::RawExclusive,
            Handoff::Exclusive,
            Handoff::RawShared,
            Handoff::Shared,
        ] {
            all.extend(HANDOFF_TASKS.map(|tasks| Op::Handoff { lock, tasks }));
        }
        for keys in MANY_KEYS {
            for how in [KeysBy::SingleCalls, KeysBy::LockMany, KeysBy::Floor] {
                all.push(Op::ManyKeys { keys, how });
            }
        }
        all
    }

    /// The number for the variant.
    pub(crate) fn number(self) -> &'static str {
        match self {
            Op::Baseline => "1",
            Op::Macro => "2",
            Op::Runtime => "2'",
            Op::CappedTx | Op::CappedStatements => "3",
            Op::HandWrittenTx | Op::HandWrittenStatements => "4",
            Op::SqlxAdvisoryLock => "5",
            Op::DistributedLock => "8",
            Op::Handoff { .. } => "6",
            Op::ManyKeys { .. } => "7",
        }
    }

    /// What one counted operation is.
    pub(crate) fn unit(self) -> &'static str {
        match self {
            Op::CappedStatements | Op::HandWrittenStatements => "lock/s",
            Op::SqlxAdvisoryLock | Op::DistributedLock => "lock+unlock/s",
            Op::Handoff { .. } => "crit.sec/s",
            _ => "tx/s",
        }
    }

    /// What the variant sends, in a few words.
    pub(crate) fn describe(self) -> String {
        match self {
            Op::Baseline => "BEGIN; bare SQL exclusive lock; COMMIT".into(),
            Op::Macro => "BEGIN; #[advisory_lock(timeout=\"5s\")] fn; COMMIT".into(),
            Op::Runtime => "BEGIN; ns.lock(&k).timeout(5s).acquire; COMMIT".into(),
            Op::CappedTx => "BEGIN; runtime capped-wait statement; COMMIT".into(),
            Op::CappedStatements => {
                format!("capped-wait statement, {STATEMENTS_PER_TX} keys per tx")
            }
            Op::HandWrittenTx => "BEGIN; hand-written cap; lock; restore; COMMIT".into(),
            Op::HandWrittenStatements => {
                format!("hand-written cap+lock+restore, {STATEMENTS_PER_TX} per tx")
            }
            Op::SqlxAdvisoryLock => "sqlx PgAdvisoryLock acquire + release_now".into(),
            Op::DistributedLock => "DistributedLock's timed acquire + release".into(),
            Op::Handoff { lock, tasks } => format!(
                "{tasks:>2} tasks, one key, {}",
                match lock {
                    Handoff::Exclusive => "pglock exclusive",
                    Handoff::Shared => "pglock shared",
                    Handoff::RawExclusive => "bare SQL exclusive",
                    Handoff::RawShared => "bare SQL shared",
                }
            ),
            Op::ManyKeys { keys, how } => match how {
                KeysBy::LockMany => format!("1 tx, {keys:>4} keys: lock_many (one call)"),
                KeysBy::SingleCalls => format!("1 tx, {keys:>4} keys: one call per key"),
                KeysBy::Floor => format!("1 tx, {keys:>4} keys: bare SQL, one statement"),
            },
        }
    }

    /// The lock id a contended hand-off waits for, when the variant waits
    /// (an exclusive hand-off between two tasks or more): its round trips
    /// are those of a waiter, counted while another session holds the lock.
    pub(crate) fn contended_id(self) -> Option<i64> {
        match self {
            Op::Handoff { lock, tasks } if tasks > 1 => match lock {
                Handoff::Exclusive => Some(bigint(&HANDOFF, 6)),
                Handoff::RawExclusive => Some(bigint(&RAW, 8)),
                Handoff::Shared | Handoff::RawShared => None,
            },
            _ => None,
        }
    }

    /// Runs one operation on `conn`; returns how many it counts for.
    pub(crate) async fn run_once(self, conn: &mut PgConnection) -> Result<u64, BoxError> {
        match self {
            Op::Baseline => {
                let mut tx = conn.begin().await?;
                sqlx::query(BASELINE_SQL)
                    .bind(bigint(&RAW, 1))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(1)
            }
            Op::Macro => {
                let mut tx = conn.begin().await?;
                locked_by_macro(&mut tx, 2).await?;
                tx.commit().await?;
                Ok(1)
            }
            Op::Runtime => {
                let mut tx = conn.begin().await?;
                RUNTIME
                    .lock(&2_i64)
                    .timeout(TIMEOUT)
                    .acquire(&mut tx)
                    .await?;
                tx.commit().await?;
                Ok(1)
            }
            Op::CappedTx => {
                let mut tx = conn.begin().await?;
                capped_statement(&mut tx, bigint(&CAPPED, 3)).await?;
                tx.commit().await?;
                Ok(1)
            }
            Op::CappedStatements => {
                let mut tx = conn.begin().await?;
                for key in 0..STATEMENTS_PER_TX as i64 {
                    capped_statement(&mut tx, bigint(&CAPPED, 100 + key)).await?;
                }
                tx.commit().await?;
                Ok(STATEMENTS_PER_TX as u64)
            }
            Op::HandWrittenTx => {
                let mut tx = conn.begin().await?;
                hand_written_statements(&mut tx, bigint(&HAND_WRITTEN, 4)).await?;
                tx.commit().await?;
                Ok(1)
            }
            Op::HandWrittenStatements => {
                let mut tx = conn.begin().await?;
                for key in 0..STATEMENTS_PER_TX as i64 {
                    hand_written_statements(&mut tx, bigint(&HAND_WRITTEN, 100 + key)).await?;
                }
                tx.commit().await?;
                Ok(STATEMENTS_PER_TX as u64)
            }
            Op::SqlxAdvisoryLock => {
                let guard = SQLX_LOCK.acquire(&mut *conn).await?;
                guard.release_now().await?;
                Ok(1)
            }
            Op::DistributedLock => {
                sqlx::raw_sql(DISTRIBUTED_LOCK_ACQUIRE_SQL.as_str())
                    .execute(&mut *conn)
                    .await?;
                let released: bool = sqlx::query_scalar(DISTRIBUTED_LOCK_RELEASE_SQL)
                    .bind(bigint(&RAW, 10))
                    .fetch_one(&mut *conn)
                    .await?;
                if !released {
                    return Err("DistributedLock's sequence did not hold its lock".into());
                }
                Ok(1)
            }
            Op::Handoff { lock, .. } => {
                let mut tx = conn.begin().await?;
                match lock {
                    Handoff::Exclusive => {
                        HANDOFF
                            .lock(&6_i64)
                            .timeout(TIMEOUT)
                            .acquire(&mut tx)
                            .await?;
                    }
                    Handoff::Shared => {
                        HANDOFF
                            .lock(&7_i64)
                            .shared()
                            .timeout(TIMEOUT)
                            .acquire(&mut tx)
                            .await?;
                    }
                    Handoff::RawExclusive => {
                        sqlx::query(BASELINE_SQL)
                            .bind(bigint(&RAW, 8))
                            .execute(&mut *tx)
                            .await?;
                    }
                    Handoff::RawShared => {
                        sqlx::query(BASELINE_SHARED_SQL)
                            .bind(bigint(&RAW, 9))
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                tx.commit().await?;
                Ok(1)
            }
            Op::ManyKeys { keys, how } => {
                let mut tx = conn.begin().await?;
                match how {
                    KeysBy::LockMany => {
                        MANY.lock_many(many_keys(keys))
                            .timeout(TIMEOUT)
                            .acquire(&mut tx)
                            .await?;
                    }
                    KeysBy::SingleCalls => {
                        for key in many_keys(keys) {
                            MANY.lock(&key).timeout(TIMEOUT).acquire(&mut tx).await?;
                        }
                    }
                    KeysBy::Floor => {
                        let ids: Vec<i64> = many_keys(keys).map(|key| bigint(&MANY, key)).collect();
                        sqlx::query(MANY_KEYS_FLOOR_SQL)
                            .bind(ids)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                tx.commit().await?;
                Ok(1)
            }
        }
    }
}

impl fmt::Display for Op {
    /// The variant's name in the JSON lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Baseline => f.write_str("baseline"),
            Op::Macro => f.write_str("macro_uncontended"),
            Op::Runtime => f.write_str("runtime_uncontended"),
            Op::CappedTx => f.write_str("capped_statement_tx"),
            Op::CappedStatements => f.write_str("capped_statement"),
            Op::HandWrittenTx => f.write_str("hand_written_three_statements_tx"),
            Op::HandWrittenStatements => f.write_str("hand_written_three_statements"),
            Op::SqlxAdvisoryLock => f.write_str("sqlx_advisory_lock"),
            Op::DistributedLock => f.write_str("distributed_lock_timed_acquire"),
            Op::Handoff { lock, tasks } => {
                let lock = match lock {
                    Handoff::Exclusive => "exclusive",
                    Handoff::Shared => "shared",
                    Handoff::RawExclusive => "raw_exclusive",
                    Handoff::RawShared => "raw_shared",
                };
                write!(f, "handoff_{lock}_t{tasks}")
            }
            Op::ManyKeys { keys, how } => {
                let how = match how {
                    KeysBy::LockMany => "lock_many",
                    KeysBy::SingleCalls => "single_calls",
                    KeysBy::Floor => "floor",
                };
                write!(f, "many_keys_{how}_{keys}")
            }
        }
    }
}

/// The runtime's capped wait, sent the way the runtime sends it: the
/// shared text, prepared once per connection, the id then the cap in
/// milliseconds as `int8`.
pub(crate) async fn capped_statement(conn: &mut PgConnection, id: i64) -> Result<(), BoxError> {
    sqlx::query(AssertSqlSafe(Arc::clone(
        CAPPED_SQL
            .get()
            .expect("checks::learn_capped_sql runs before the bench"),
    )))
    .bind(id)
    .bind(TIMEOUT.as_millis() as i64)
    .execute(conn)
    .await?;
    Ok(())
}

/// The hand-written three round trips: cap, wait, restore the previous text.
pub(crate) async fn hand_written_statements(
    conn: &mut PgConnection,
    id: i64,
) -> Result<(), BoxError> {
    let previous: String = sqlx::query_scalar(HAND_WRITTEN_CAP_SQL)
        .bind(HAND_WRITTEN_CAP_TEXT)
        .bind(HAND_WRITTEN_CAP_MS)
        .fetch_one(&mut *conn)
        .await?;
    sqlx::query(HAND_WRITTEN_LOCK_SQL)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let _: String = sqlx::query_scalar(HAND_WRITTEN_RESTORE_SQL)
        .bind(previous)
        .fetch_one(&mut *conn)
        .await?;
    Ok(())
}
