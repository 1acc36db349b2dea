//! Round trips per operation, counted through the bench's proxy
//! ([`crate::proxy`]), apart from the timed runs: every variant's
//! operation runs a few times alone on a connection through a proxy that
//! adds no delay, and its count is the proxy's count over one operation
//! (divided by what the operation counts for: 50 statements in a
//! statement-shaped variant). The first runs are not counted (a statement's
//! first use prepares it); the counted ones must agree, or the bench fails.
//!
//! A contended hand-off (exclusive, two tasks or more) counts a waiter's
//! round trips: another session holds the lock, the operation waits for it
//! (seen in `pg_locks`), and the holder commits. pglock's exclusive path
//! remembers a lock found busy, so its count is that of a lock known busy:
//! its first contended acquisition costs one round trip more (a try, then
//! the wait).
//!
//! [`EXPECTED`] is what the main variants must count: a change that costs a
//! round trip fails the bench (`--quick` runs in CI).

use std::str::FromStr;
use std::time::Duration;

use pglock::LockId;
use pglock::testing;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{Connection, PgPool};

use crate::BoxError;
use crate::ops::{Handoff, KeysBy, Op};
use crate::proxy::{Proxy, Upstream};
use crate::subject::{State, Subject};

/// Runs before the counted ones.
const WARM: usize = 3;
/// Counted runs, which must agree.
const COUNTED: usize = 3;

/// What each variant counted, per operation.
pub(crate) struct RoundTrips {
    counts: Vec<(String, f64)>,
}

impl RoundTrips {
    /// The count of the variant named `name` (its JSON name without the
    /// transport), if it was counted.
    pub(crate) fn of(&self, name: &str) -> Option<f64> {
        self.counts
            .iter()
            .find(|(counted, _)| counted == name)
            .map(|(_, count)| *count)
    }

    /// `3`, `1.04`, or `null` when not counted: a JSON value.
    pub(crate) fn json(&self, name: &str) -> String {
        match self.of(name) {
            Some(count) if count.fract() == 0.0 => format!("{count:.0}"),
            Some(count) => format!("{count:.2}"),
            None => "null".to_owned(),
        }
    }
}

/// The main variants' round trips per critical section, as the bench must
/// count them (and `docs/PERFORMANCE.md` shows them).
pub(crate) const EXPECTED: &[(&str, f64)] = &[
    // BEGIN; the lock; COMMIT.
    ("baseline", 3.0),
    // BEGIN; the try (free: the lock is granted); COMMIT.
    ("runtime_uncontended", 3.0),
    ("macro_uncontended", 3.0),
    // A waiter on a lock known busy: BEGIN; one statement; COMMIT.
    ("handoff_exclusive_t2", 3.0),
    ("handoff_raw_exclusive_t2", 3.0),
    // BEGIN; one statement for the whole set; COMMIT.
    ("many_keys_lock_many_100", 3.0),
    ("many_keys_floor_100", 3.0),
    // The lock, the unlock.
    ("sqlx_advisory_lock", 2.0),
    // Three statements in one flush, the unlock.
    ("distributed_lock_timed_acquire", 2.0),
    // BEGIN; cap; lock; restore; COMMIT.
    ("hand_written_three_statements_tx", 5.0),
    // A try, an unlock (a lone pair, fewer than 1,000 locks held).
    ("manager_acquire_release", 2.0),
    // The keepalive settings, the try, the unlock.
    ("lease_acquire_release", 3.0),
];

/// Counts every variant of `subjects` against the server at `url`, after
/// checking the counter on statements of known cost.
pub(crate) async fn count(url: &str, subjects: &[Subject]) -> Result<RoundTrips, BoxError> {
    let proxy = Proxy::start(Upstream::of(url)?, Duration::ZERO)?;
    let direct = PgConnectOptions::from_str(url)?;
    let through = proxy.connect_options(&direct)?;
    counter_works(&proxy, &through).await?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(direct)
        .await?;
    let mut counts = Vec::new();
    for &subject in subjects {
        let contended = match subject {
            Subject::Op(op) => op.contended_id(),
            _ => None,
        };
        let count = match contended {
            Some(id) => waiter(&proxy, &through, &pool, subject, id).await?,
            None => alone(&proxy, &through, subject).await?,
        };
        counts.push((subject.to_string(), count));
    }
    pool.close().await;
    Ok(RoundTrips { counts })
}

/// The counter, on what is known: a prepared statement is one round trip,
/// BEGIN and COMMIT one each.
async fn counter_works(proxy: &Proxy, through: &PgConnectOptions) -> Result<(), BoxError> {
    let mut conn = PgConnection::connect_with(through).await?;
    let mut counts = Vec::new();
    for _ in 0..WARM + COUNTED {
        let before = proxy.round_trips();
        let _: i32 = sqlx::query_scalar("SELECT $1::int4")
            .bind(1)
            .fetch_one(&mut conn)
            .await?;
        let one = proxy.round_trips() - before;
        let tx = conn.begin().await?;
        tx.commit().await?;
        counts.push((one, proxy.round_trips() - before - one));
    }
    conn.close().await?;
    if counts[WARM..].iter().any(|&counted| counted != (1, 2)) {
        return Err(format!(
            "the round-trip counter is wrong: a prepared statement, then BEGIN and \
             COMMIT, counted {counts:?} (after warm-up: (1, 2) each time)"
        )
        .into());
    }
    Ok(())
}

/// `subject`'s round trips per operation, alone on its connection(s).
async fn alone(
    proxy: &Proxy,
    through: &PgConnectOptions,
    subject: Subject,
) -> Result<f64, BoxError> {
    let mut state = State::open(subject, through).await?;
    let mut counted = Vec::new();
    for run in 0..WARM + COUNTED {
        let before = proxy.round_trips();
        let ops = state.once(subject).await?;
        if run >= WARM {
            counted.push((proxy.round_trips() - before) as f64 / ops as f64);
        }
    }
    state.close().await?;
    agreed(subject, &counted)
}

/// `subject`'s round trips per operation as a waiter: each time, a session
/// of `pool` holds the lock `id` until the operation waits for it.
async fn waiter(
    proxy: &Proxy,
    through: &PgConnectOptions,
    pool: &PgPool,
    subject: Subject,
    id: i64,
) -> Result<f64, BoxError> {
    let Subject::Op(op) = subject else {
        return Err(format!("{subject} has no contended form").into());
    };
    let mut conn = Some(PgConnection::connect_with(through).await?);
    let mut counted = Vec::new();
    for run in 0..WARM + COUNTED {
        let mut holder = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(id)
            .execute(&mut *holder)
            .await?;
        let before = proxy.round_trips();
        let mut waiting = conn.take().ok_or("the waiter's connection was lost")?;
        let wait = tokio::spawn(async move {
            let ops = op.run_once(&mut waiting).await?;
            Ok::<_, BoxError>((waiting, ops))
        });
        let waiters =
            testing::wait_for_waiters(pool, LockId::BigInt(id), 1, Duration::from_secs(10)).await?;
        holder.commit().await?;
        let (waited, ops) = wait.await??;
        conn = Some(waited);
        if waiters.is_empty() {
            return Err(format!("{subject} never waited for the held lock").into());
        }
        if run >= WARM {
            counted.push((proxy.round_trips() - before) as f64 / ops as f64);
        }
    }
    if let Some(conn) = conn {
        conn.close().await?;
    }
    agreed(subject, &counted)
}

fn agreed(subject: Subject, counted: &[f64]) -> Result<f64, BoxError> {
    match counted {
        [first, rest @ ..] if rest.iter().all(|count| count == first) => Ok(*first),
        _ => Err(format!(
            "the round trips of {subject} differ from one operation to the next: {counted:?}"
        )
        .into()),
    }
}

/// Fails when a main variant's count is not [`EXPECTED`]'s.
pub(crate) fn check(counts: &RoundTrips) -> Result<(), BoxError> {
    let wrong: Vec<String> = EXPECTED
        .iter()
        .filter_map(|&(name, expected)| {
            let counted = counts.of(name)?;
            (counted != expected).then(|| format!("{name}: {counted} (expected {expected})"))
        })
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "round trips per critical section changed: {}; if that is meant, \
             update round_trips::EXPECTED and docs/PERFORMANCE.md",
            wrong.join(", ")
        )
        .into())
    }
}

/// Every variant the bench counts: each [`Op`], the manager's pair, a lease.
pub(crate) fn all_subjects() -> Vec<Subject> {
    let mut all: Vec<Subject> = Op::all().into_iter().map(Subject::Op).collect();
    all.extend([Subject::Manager, Subject::Lease]);
    all
}

/// The rows of the round-trip table of `docs/PERFORMANCE.md`.
pub(crate) const TABLE: &[(&str, Subject)] = &[
    (
        "bare SQL: BEGIN; pg_advisory_xact_lock; COMMIT",
        Subject::Op(Op::Baseline),
    ),
    (
        "pglock: BEGIN; lock(&k).timeout(5s).acquire; COMMIT",
        Subject::Op(Op::Runtime),
    ),
    (
        "pglock: #[advisory_lock(timeout = \"5s\")]",
        Subject::Op(Op::Macro),
    ),
    (
        "pglock: a waiter on a lock known busy",
        Subject::Op(Op::Handoff {
            lock: Handoff::Exclusive,
            tasks: 2,
        }),
    ),
    (
        "bare SQL: a waiter",
        Subject::Op(Op::Handoff {
            lock: Handoff::RawExclusive,
            tasks: 2,
        }),
    ),
    (
        "pglock: lock_many of 100 keys",
        Subject::Op(Op::ManyKeys {
            keys: 100,
            how: KeysBy::LockMany,
        }),
    ),
    (
        "pglock: the lock manager's acquire + release",
        Subject::Manager,
    ),
    ("pglock: a lease, acquire + release", Subject::Lease),
    (
        "sqlx PgAdvisoryLock: acquire + release_now",
        Subject::Op(Op::SqlxAdvisoryLock),
    ),
    (
        "DistributedLock: timed acquire + release",
        Subject::Op(Op::DistributedLock),
    ),
    (
        "seed 003: BEGIN; cap; lock; restore; COMMIT",
        Subject::Op(Op::HandWrittenTx),
    ),
];

/// The round-trip table, for the human output.
pub(crate) fn table(counts: &RoundTrips) -> String {
    let mut out =
        String::from("\n== round trips per critical section (counted through the proxy) ==\n");
    for (what, subject) in TABLE {
        out.push_str(&format!(
            "{:<58} {:>5}\n",
            what,
            counts.json(&subject.to_string())
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected() -> RoundTrips {
        RoundTrips {
            counts: EXPECTED
                .iter()
                .map(|&(name, count)| (name.to_owned(), count))
                .collect(),
        }
    }

    #[test]
    fn a_count_is_a_json_number_or_null() {
        let counts = RoundTrips {
            counts: vec![("whole".into(), 3.0), ("per_lock".into(), 52.0 / 50.0)],
        };
        assert_eq!(counts.json("whole"), "3");
        assert_eq!(counts.json("per_lock"), "1.04");
        assert_eq!(counts.json("not_counted"), "null");
    }

    #[test]
    fn one_round_trip_more_fails_the_check() {
        assert!(check(&expected()).is_ok());
        let mut counts = expected();
        counts
            .counts
            .iter_mut()
            .find(|(name, _)| name == "runtime_uncontended")
            .expect("the runtime call is expected")
            .1 = 4.0;
        let error = check(&counts).expect_err("a round trip more").to_string();
        assert!(
            error.contains("runtime_uncontended: 4 (expected 3)"),
            "{error}"
        );
    }
}
