//! The lock manager's group (`--only manager`): for N locks held, the
//! connections that hold them, uncontended acquire + release per second
//! against a session lock on an open connection and sqlx's
//! `PgAdvisoryLock`, the same for lone pairs (each after quiet time), what
//! a fencing token costs, and the server load of the heartbeat at 10,000
//! locks. Prints its own JSON
//! lines.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use pglock::{
    CheckOptions, LockManager, ManagedGuard, ManagerOptions, Namespace, SessionTry, pg_locks,
};
use sqlx::Connection;
use sqlx::postgres::{PgAdvisoryLock, PgAdvisoryLockKey, PgConnectOptions, PgConnection};

use crate::proxy::{Proxy, Upstream};
use crate::stats::{Stream, median, paired_ratio, spread_pct};
use crate::{BoxError, Options, rotated};

static HELD: Namespace = Namespace::named("pglock-bench:manager:held");
static CYCLED: Namespace = Namespace::named("pglock-bench:manager:cycled");
static SESSION: Namespace = Namespace::named("pglock-bench:manager:session");
static COUNTED: Namespace = Namespace::named("pglock-bench:manager:counted");

/// Runs the group over one transport; returns its JSON lines.
pub(crate) async fn run(
    url: &str,
    transport: &str,
    options: &Options,
) -> Result<Vec<String>, BoxError> {
    let connect = PgConnectOptions::from_str(url)?;
    let sizes: &[usize] = if options.quick {
        &[10, 1_000]
    } else {
        &[10, 100, 1_000, 10_000]
    };
    let mut lines = Vec::new();
    for &locks in sizes {
        let manager = Arc::new(LockManager::new(connect.clone(), ManagerOptions::default()));
        let held = hold(&manager, locks).await?;
        let trips = hold_round_trips(url, &connect, locks).await?;
        lines.push(format!(
            "{{\"variant\": \"manager_hold_{locks}@{transport}\", \"locks\": {locks}, \"connections\": {}, \"connections_one_per_lock\": {locks}, \"round_trips\": {trips:.2}, \"transport\": \"{transport}\"}}",
            manager.connections()
        ));
        lines.extend(acquire_release(&manager, &connect, locks, transport, options).await?);
        lines.extend(lone_pairs(&manager, &connect, locks, transport, options).await?);
        if locks == sizes[0] {
            lines.extend(fencing(&manager, &connect, locks, transport, options).await?);
        }
        drop(held);
        manager.close().await;
    }
    lines.push(heartbeat(&connect, transport, options).await?);
    Ok(lines)
}

/// Round trips per lock of a manager of its own that takes `locks` locks
/// one after another, through the bench's counting proxy
/// (`crate::proxy`): its connections' set-up and every try, counted from
/// a manager that has no connection yet to one that holds them all.
async fn hold_round_trips(
    url: &str,
    connect: &PgConnectOptions,
    locks: usize,
) -> Result<f64, BoxError> {
    let proxy = Proxy::start(Upstream::of(url)?, Duration::ZERO)?;
    // Checks far apart: a check is background work, not the holding's.
    let manager = LockManager::new(
        proxy.connect_options(connect)?,
        ManagerOptions::default()
            .checks(CheckOptions::default().check_every(Duration::from_secs(600))),
    );
    let mut held = Vec::with_capacity(locks);
    for key in 0..locks {
        held.push(manager.lock(&COUNTED, &(key as i64)).acquire().await?);
    }
    let trips = proxy.round_trips() as f64 / locks as f64;
    drop(held);
    manager.close().await;
    Ok(trips)
}

/// Takes `locks` locks through `manager`, 16 at a time.
async fn hold(manager: &Arc<LockManager>, locks: usize) -> Result<Vec<ManagedGuard>, BoxError> {
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16_usize {
        let manager = Arc::clone(manager);
        tasks.spawn(async move {
            let mut held = Vec::new();
            for key in (worker..locks).step_by(16) {
                held.push(manager.lock(&HELD, &(key as i64)).acquire().await?);
            }
            Ok::<_, pglock::Error>(held)
        });
    }
    let mut held = Vec::new();
    while let Some(part) = tasks.join_next().await {
        held.extend(part??);
    }
    Ok(held)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Manager,
    Session,
    Sqlx,
    /// The manager's, with a fencing token.
    ManagerFenced,
    /// The session lock's, with a fencing token.
    SessionFenced,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Manager => "manager",
            Variant::Session => "session_lock",
            Variant::Sqlx => "sqlx",
            Variant::ManagerFenced => "manager_fenced",
            Variant::SessionFenced => "session_lock_fenced",
        }
    }
}

/// One uncontended acquire + release of a free key, by each variant: the
/// manager, a pglock session lock and sqlx's `PgAdvisoryLock`, the last two
/// on an open connection of their own.
struct Pairs<'a> {
    manager: &'a LockManager,
    session: Option<PgConnection>,
    sqlx_conn: PgConnection,
    sqlx_lock: PgAdvisoryLock,
}

impl<'a> Pairs<'a> {
    async fn new(manager: &'a LockManager, connect: &PgConnectOptions) -> Result<Self, BoxError> {
        Ok(Pairs {
            manager,
            session: Some(PgConnection::connect_with(connect).await?),
            sqlx_conn: PgConnection::connect_with(connect).await?,
            sqlx_lock: PgAdvisoryLock::with_key(PgAdvisoryLockKey::BigInt(
                SESSION.id(&-2_i64).bigint().expect("a bigint namespace"),
            )),
        })
    }

    async fn once(&mut self, variant: Variant) -> Result<(), BoxError> {
        match variant {
            Variant::Manager => {
                self.manager
                    .lock(&CYCLED, &-1_i64)
                    .acquire()
                    .await?
                    .release()
                    .await?;
            }
            Variant::ManagerFenced => {
                let guard = self
                    .manager
                    .lock(&CYCLED, &-1_i64)
                    .with_fencing_token()
                    .acquire()
                    .await?;
                if guard.fencing_token().is_none() {
                    return Err("no fencing token".into());
                }
                guard.release().await?;
            }
            Variant::Session | Variant::SessionFenced => {
                let conn = self.session.take().expect("the session connection");
                let request = SESSION.session_lock(&-1_i64);
                let request = match variant {
                    Variant::SessionFenced => request.with_fencing_token(),
                    _ => request,
                };
                let guard = match request.try_acquire(conn).await? {
                    SessionTry::Acquired(guard) => guard,
                    SessionTry::Busy(_) => return Err("the session key is busy".into()),
                };
                if variant == Variant::SessionFenced && guard.fencing_token().is_none() {
                    return Err("no fencing token".into());
                }
                self.session = Some(guard.release().await?);
            }
            Variant::Sqlx => {
                let guard = self.sqlx_lock.acquire(&mut self.sqlx_conn).await?;
                guard.release_now().await?;
            }
        }
        Ok(())
    }
}

/// How a comparison counts pairs.
#[derive(Clone, Copy, Debug)]
enum Measure {
    /// As many pairs as fit in this time, back to back.
    Stream(Duration),
    /// This many pairs, each after [`LONE_PAUSE`] of quiet: the rate of the
    /// median pair.
    Lone(u32),
}

impl Pairs<'_> {
    /// Pairs per second of `variant`, counted as `measure` says.
    async fn rate(&mut self, variant: Variant, measure: Measure) -> Result<f64, BoxError> {
        match measure {
            Measure::Stream(slice) => {
                let mut stream = Stream::for_slice(slice);
                while stream.more() {
                    self.once(variant).await?;
                }
                Ok(stream.per_second())
            }
            Measure::Lone(count) => {
                // The median pair: on a shared machine a pair now and then
                // waits for a core, and one such pair would outweigh the
                // others in a sum.
                let mut pairs = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    tokio::time::sleep(LONE_PAUSE).await;
                    let started = Instant::now();
                    self.once(variant).await?;
                    pairs.push(started.elapsed().as_secs_f64());
                }
                Ok(1.0 / median(&pairs))
            }
        }
    }

    /// Each variant's rate per round, the variants in turns, after one
    /// unmeasured round that warms the statements and connections up.
    async fn in_turns(
        &mut self,
        variants: &[Variant],
        measure: Measure,
        options: &Options,
    ) -> Result<Vec<Vec<f64>>, BoxError> {
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
        for round in 0..=options.rounds {
            for variant in rotated(variants, round) {
                let rate = self.rate(variant, measure).await?;
                if round > 0 {
                    let index = variants
                        .iter()
                        .position(|v| *v == variant)
                        .expect("a variant");
                    rates[index].push(rate);
                }
            }
        }
        Ok(rates)
    }
}

/// The JSON lines of one comparison: `<variant>_<kind>_<locks>@<transport>`,
/// each with its ratio to sqlx's rate round by round.
fn json_lines(
    variants: &[Variant],
    rates: &[Vec<f64>],
    kind: &str,
    unit: &str,
    locks: usize,
    transport: &str,
) -> Vec<String> {
    let sqlx = variants
        .iter()
        .position(|v| *v == Variant::Sqlx)
        .expect("sqlx is the baseline");
    let baseline = &rates[sqlx];
    variants
        .iter()
        .zip(rates)
        .map(|(variant, rates)| {
            let (low, high) = spread_pct(rates);
            format!(
                "{{\"variant\": \"{}_{kind}_{locks}@{transport}\", \"locks_held\": {locks}, \"ops_per_sec\": {:.1}, \"ratio_to_sqlx\": {:.4}, \"spread_pct\": [{low:.2}, {high:.2}], \"unit\": \"{unit}\", \"round_trips\": {}, \"rounds\": {}, \"transport\": \"{transport}\"}}",
                variant.name(),
                median(rates),
                paired_ratio(rates, baseline),
                round_trips_of(*variant),
                rates.len()
            )
        })
        .collect()
}

/// Uncontended acquire + release of one free key, per second, by the three
/// variants in turns, while the manager holds `locks` other locks.
async fn acquire_release(
    manager: &LockManager,
    connect: &PgConnectOptions,
    locks: usize,
    transport: &str,
    options: &Options,
) -> Result<Vec<String>, BoxError> {
    let mut pairs = Pairs::new(manager, connect).await?;
    let variants = [Variant::Manager, Variant::Session, Variant::Sqlx];
    let rates = pairs
        .in_turns(&variants, Measure::Stream(options.group_time / 4), options)
        .await?;
    Ok(json_lines(
        &variants,
        &rates,
        "acquire_release",
        "acquire+release/s",
        locks,
        transport,
    ))
}

/// What a fencing token costs: acquire + release with and without one, by
/// a session lock and the manager, against sqlx's `PgAdvisoryLock`. A token
/// is a durable commit: its cost is the server's WAL flush (with
/// `fsync = off`, as on the bench's throwaway server, only the write).
async fn fencing(
    manager: &LockManager,
    connect: &PgConnectOptions,
    locks: usize,
    transport: &str,
    options: &Options,
) -> Result<Vec<String>, BoxError> {
    let mut pairs = Pairs::new(manager, connect).await?;
    let variants = [
        Variant::Session,
        Variant::SessionFenced,
        Variant::Manager,
        Variant::ManagerFenced,
        Variant::Sqlx,
    ];
    let rates = pairs
        .in_turns(&variants, Measure::Stream(options.group_time / 4), options)
        .await?;
    Ok(json_lines(
        &variants,
        &rates,
        "fencing",
        "acquire+release/s",
        locks,
        transport,
    ))
}

/// Each variant's round trips per acquire + release, once counted.
static ROUND_TRIPS: OnceLock<Vec<(Variant, u64)>> = OnceLock::new();

/// A JSON line's `round_trips`: the count, or `null` before one.
fn round_trips_of(variant: Variant) -> String {
    ROUND_TRIPS
        .get()
        .and_then(|counts| counts.iter().find(|(counted, _)| *counted == variant))
        .map_or_else(|| "null".to_owned(), |(_, count)| count.to_string())
}

/// Counts each variant's round trips for one lone acquire + release (after
/// [`LONE_PAUSE`] of quiet), through the bench's proxy, by a manager of its
/// own that holds no other lock (on a connection that holds 1,000 locks or
/// more, the manager's pair also opens a transaction); the JSON lines carry
/// them from then on.
pub(crate) async fn count_round_trips(url: &str) -> Result<(), BoxError> {
    let proxy = Proxy::start(Upstream::of(url)?, Duration::ZERO)?;
    let through = proxy.connect_options(&PgConnectOptions::from_str(url)?)?;
    let manager = LockManager::new(through.clone(), ManagerOptions::default());
    let mut pairs = Pairs::new(&manager, &through).await?;
    let mut counts = Vec::new();
    for variant in [
        Variant::Manager,
        Variant::Session,
        Variant::Sqlx,
        Variant::ManagerFenced,
        Variant::SessionFenced,
    ] {
        let mut counted = Vec::new();
        for run in 0..6 {
            tokio::time::sleep(LONE_PAUSE).await;
            let before = proxy.round_trips();
            pairs.once(variant).await?;
            if run >= 3 {
                counted.push(proxy.round_trips() - before);
            }
        }
        if counted.iter().any(|count| *count != counted[0]) {
            return Err(format!(
                "the round trips of the manager group's {} differ: {counted:?}",
                variant.name()
            )
            .into());
        }
        counts.push((variant, counted[0]));
    }
    drop(pairs);
    manager.close().await;
    let _ = ROUND_TRIPS.set(counts);
    Ok(())
}

/// Quiet time before each lone pair: longer than the time after which a
/// manager's connection stops counting statements as one stream.
const LONE_PAUSE: Duration = Duration::from_millis(5);

/// One acquire + release at a time, each after [`LONE_PAUSE`] of quiet (a
/// lock taken now and then, not a stream): pairs per second of their own
/// time, the manager against sqlx's `PgAdvisoryLock` on an open connection,
/// while the manager holds `locks` other locks. Without a stream, a
/// manager's pair is two plain statements on its light connection, the one
/// that holds the fewest locks.
async fn lone_pairs(
    manager: &LockManager,
    connect: &PgConnectOptions,
    locks: usize,
    transport: &str,
    options: &Options,
) -> Result<Vec<String>, BoxError> {
    let mut pairs = Pairs::new(manager, connect).await?;
    let variants = [Variant::Manager, Variant::Sqlx];
    let count = if options.quick { 5 } else { 40 };
    let rates = pairs
        .in_turns(&variants, Measure::Lone(count), options)
        .await?;
    let unit = format!(
        "acquire+release/s of the median pair, each after {} ms of quiet",
        LONE_PAUSE.as_millis()
    );
    Ok(json_lines(
        &variants,
        &rates,
        "lone_pair",
        &unit,
        locks,
        transport,
    ))
}

/// The heartbeat's statements per second at 10,000 locks, seen in
/// `pg_stat_activity` (every statement a backend starts changes its
/// `query_start`), with a check every second.
async fn heartbeat(
    connect: &PgConnectOptions,
    transport: &str,
    options: &Options,
) -> Result<String, BoxError> {
    let locks = if options.quick { 1_000 } else { 10_000 };
    let interval = Duration::from_secs(1);
    let manager = Arc::new(LockManager::new(
        connect.clone(),
        ManagerOptions::default().checks(CheckOptions::default().check_every(interval)),
    ));
    let held = hold(&manager, locks).await?;
    let mut observer = PgConnection::connect_with(connect).await?;
    let watch = if options.quick {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(6)
    };
    let started = Instant::now();
    let mut seen: HashSet<(i32, String)> = HashSet::new();
    while started.elapsed() < watch {
        let rows: Vec<(i32, String)> = sqlx::query_as(
            "SELECT pid, query_start::text FROM pg_catalog.pg_stat_activity \
             WHERE query = $1 AND query_start IS NOT NULL",
        )
        // The statement every heartbeat sends.
        .bind(pg_locks::COUNT_HELD_BY_THIS_SESSION)
        .fetch_all(&mut observer)
        .await?;
        seen.extend(rows);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    // Each heartbeat statement is a message of its own: a round trip.
    let rounds = seconds / interval.as_secs_f64();
    if seen.is_empty() {
        return Err("no heartbeat seen in pg_stat_activity".into());
    }
    let connections = manager.connections();
    drop(held);
    manager.close().await;
    observer.close().await?;
    Ok(format!(
        "{{\"variant\": \"manager_heartbeat_{locks}@{transport}\", \"locks\": {locks}, \"connections\": {connections}, \"check_interval_ms\": {}, \"statements_per_sec\": {:.2}, \"lease_per_lock_statements_per_sec\": {:.1}, \"round_trips\": {:.0}, \"transport\": \"{transport}\"}}",
        interval.as_millis(),
        seen.len() as f64 / seconds,
        locks as f64 / interval.as_secs_f64(),
        seen.len() as f64 / rounds,
    ))
}
