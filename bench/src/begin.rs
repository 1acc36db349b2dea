//! Begin + lock + commit at a network delay (`--only begin`): a
//! transaction begun already holding its lock
//! (`NS.lock(&k).timeout(5s).begin(&pool)`: the lock statement and `BEGIN`
//! in one round trip) against the bare `pool.begin()` +
//! `SELECT pg_advisory_xact_lock($1)` + `commit()`.
//!
//! Each variant runs on a pool of its own (two connections, so that the
//! check sqlx makes of a connection it takes back runs while the other one
//! works), through a proxy of its own (`crate::proxy`) that holds every
//! chunk for a fixed delay each way and counts round trips. The pools come in two kinds: with sqlx's default check of a
//! connection before it is handed out (`test_before_acquire`, a round trip
//! of its own, paid by both variants alike), and without it. The variants of
//! one delay and one kind take turns, in a rotated order, round after round;
//! a ratio is the median of the per-round ratios with its spread. Prints its
//! own JSON lines.

use std::str::FromStr;
use std::time::{Duration, Instant};

use pglock::{Namespace, bare_sql};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::ops::{TIMEOUT, bigint};
use crate::proxy::{Proxy, Upstream};
use crate::stats::{median, paired_ratio_spread, spread_pct};
use crate::{BoxError, Options, rotated};

static BEGIN: Namespace = Namespace::named("pglock-bench:begin");

/// The bar for the one-message begin over the bare pattern, at
/// 1 ms each way.
const TARGET: f64 = 1.4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// `pool.begin()`, the bare lock statement, `commit()`.
    Bare,
    /// `BEGIN.lock(&k).timeout(5s).begin(&pool)`, `commit()`.
    Begin,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Bare => "bare",
            Variant::Begin => "begin",
        }
    }
}

struct Lane {
    variant: Variant,
    checked: bool,
    pool: PgPool,
    proxy: Proxy,
    key: i64,
    rates: Vec<f64>,
    ops: u64,
}

impl Lane {
    /// One begin + lock + commit.
    async fn once(&self) -> Result<(), BoxError> {
        match self.variant {
            Variant::Bare => {
                let mut tx = self.pool.begin().await?;
                sqlx::query(bare_sql::XACT_LOCK)
                    .bind(bigint(&BEGIN, self.key))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Variant::Begin => {
                let tx = BEGIN
                    .lock(&self.key)
                    .timeout(TIMEOUT)
                    .begin(&self.pool)
                    .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Runs for `turn`; returns the operations done and the time they took.
    async fn run_for(&mut self, turn: Duration) -> Result<(u64, Duration), BoxError> {
        let started = Instant::now();
        let mut done = 0;
        while started.elapsed() < turn {
            self.once().await?;
            done += 1;
        }
        Ok((done, started.elapsed()))
    }
}

/// Runs the group over the transport at `url`; returns its JSON lines.
pub(crate) async fn run(
    url: &str,
    transport: &str,
    options: &Options,
) -> Result<Vec<String>, BoxError> {
    let connect = PgConnectOptions::from_str(url)?;
    let delays: &[Duration] = if options.quick {
        &[Duration::from_millis(1)]
    } else {
        &[Duration::ZERO, Duration::from_millis(1)]
    };
    let turn = if options.quick {
        Duration::from_millis(60)
    } else {
        Duration::from_millis(250)
    };
    let mut lines = Vec::new();
    for &delay in delays {
        for checked in [false, true] {
            let mut lanes = Vec::new();
            for (index, variant) in [Variant::Bare, Variant::Begin].into_iter().enumerate() {
                let proxy = Proxy::start(Upstream::of(url)?, delay)?;
                let pool = PgPoolOptions::new()
                    .max_connections(2)
                    .min_connections(2)
                    .test_before_acquire(checked)
                    .connect_with(proxy.connect_options(&connect)?)
                    .await?;
                let mut lane = Lane {
                    variant,
                    checked,
                    pool,
                    proxy,
                    key: index as i64,
                    rates: Vec::new(),
                    ops: 0,
                };
                lane.run_for(turn / 2).await?;
                lanes.push(lane);
            }
            let trips_before: Vec<u64> =
                lanes.iter().map(|lane| lane.proxy.round_trips()).collect();
            let order: Vec<usize> = (0..lanes.len()).collect();
            for round in 0..options.rounds {
                for index in rotated(&order, round) {
                    let (done, took) = lanes[index].run_for(turn).await?;
                    lanes[index].ops += done;
                    lanes[index].rates.push(done as f64 / took.as_secs_f64());
                }
            }
            for (lane, before) in lanes.iter().zip(trips_before) {
                let trips = (lane.proxy.round_trips() - before) as f64 / lane.ops as f64;
                lines.push(lane_line(lane, delay, trips, transport));
            }
            lines.push(ratio_line(&lanes[1], &lanes[0], delay, transport));
            for lane in lanes {
                lane.pool.close().await;
            }
        }
    }
    Ok(lines)
}

fn lane_line(lane: &Lane, delay: Duration, trips: f64, transport: &str) -> String {
    let (low, high) = spread_pct(&lane.rates);
    format!(
        "{{\"variant\": \"begin_lock_commit_{}_{}_d{}us@{transport}\", \"tx_per_s\": {:.1}, \"spread_pct\": [{low:.1}, {high:.1}], \"round_trips\": {trips:.2}, \"delay_us_each_way\": {}, \"test_before_acquire\": {}, \"transport\": \"{transport}\"}}",
        lane.variant.name(),
        checked_name(lane.checked),
        delay.as_micros(),
        median(&lane.rates),
        delay.as_micros(),
        lane.checked,
    )
}

fn ratio_line(begin: &Lane, bare: &Lane, delay: Duration, transport: &str) -> String {
    let ratio = paired_ratio_spread(&begin.rates, &bare.rates);
    format!(
        "{{\"variant\": \"begin_vs_bare_{}_d{}us@{transport}\", \"ratio\": {:.3}, \"ratio_spread\": [{:.3}, {:.3}], \"target\": {TARGET}, \"verdict\": \"{}\", \"rounds\": {}, \"transport\": \"{transport}\"}}",
        checked_name(begin.checked),
        delay.as_micros(),
        ratio.median,
        ratio.low,
        ratio.high,
        ratio.verdict(TARGET).name(),
        begin.rates.len(),
    )
}

fn checked_name(checked: bool) -> &'static str {
    if checked { "checked" } else { "unchecked" }
}
