//! The delayed groups (`--only delayed`): the main variants over TCP
//! through the bench's proxy ([`crate::proxy`]), which adds a fixed delay
//! each way, as the network between an application and its database does
//! (0.25 ms one way is a round trip within a cloud zone; 1 ms, a longer
//! one). At each delay the variants form one group: they take turns in
//! slices, in a rotated order, round after round, and each is compared with
//! the bare SQL (`baseline`) round by round, as in the other groups. Prints
//! its table and JSON lines, and gives the chart its points.
//!
//! A new variant joins the groups by being listed in [`VARIANTS`] (an
//! [`Op`], or a [`Subject`] of its own), and its round trips are counted
//! with the others' ([`crate::round_trips`]).

use std::fmt::Write as _;
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::ops::Op;
use crate::proxy::{Proxy, Upstream};
use crate::round_trips::RoundTrips;
use crate::stats::{median, paired_ratio_spread, spread_pct};
use crate::subject::{State, Subject};
use crate::{BoxError, Options, rotated};

/// The variants compared at each delay; the first is the baseline.
pub(crate) const VARIANTS: &[Subject] = &[
    Subject::Op(Op::Baseline),
    Subject::Op(Op::Runtime),
    Subject::Op(Op::Macro),
    Subject::Op(Op::SqlxAdvisoryLock),
    Subject::Op(Op::DistributedLock),
    Subject::Op(Op::HandWrittenTx),
    Subject::Manager,
    Subject::Lease,
];

/// One variant's turn: long enough for a few operations at 1 ms each way.
const SLICE: Duration = Duration::from_millis(20);

/// The one-way delays measured: `--quick` leaves out 1 ms, whose slices
/// hold few operations each.
pub(crate) fn delays(options: &Options) -> Vec<Duration> {
    let mut delays = vec![Duration::ZERO, Duration::from_micros(250)];
    if !options.quick {
        delays.push(Duration::from_millis(1));
    }
    delays
}

/// What one delay's group measured.
pub(crate) struct Group {
    pub(crate) delay: Duration,
    /// The median time of a prepared `SELECT` through the proxy at this delay.
    pub(crate) round_trip: Duration,
    /// Per variant of [`VARIANTS`], operations per second, one per round.
    pub(crate) rates: Vec<Vec<f64>>,
}

impl Group {
    /// `delay_0.25ms`: the transport's name in the JSON lines.
    pub(crate) fn name(&self) -> String {
        format!("delay_{}ms", ms(self.delay))
    }

    /// A variant's median rate, if it ran.
    pub(crate) fn median_of(&self, subject: Subject) -> Option<f64> {
        let index = VARIANTS.iter().position(|v| *v == subject)?;
        Some(median(&self.rates[index])).filter(|rate| rate.is_finite() && *rate > 0.0)
    }
}

/// `0`, `0.25`, `1`: a delay in milliseconds, as short as it can be said.
pub(crate) fn ms(delay: Duration) -> String {
    let text = format!("{:.3}", delay.as_secs_f64() * 1e3);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Runs every delay's group against the server at `url` (over TCP).
pub(crate) async fn run(url: &str, options: &Options) -> Result<Vec<Group>, BoxError> {
    let direct = PgConnectOptions::from_str(url)?;
    let mut groups = Vec::new();
    for delay in delays(options) {
        let proxy = Proxy::start(Upstream::of(url)?, delay)?;
        let through = proxy.connect_options(&direct)?;
        groups.push(one_delay(&proxy, &through, options).await?);
    }
    Ok(groups)
}

async fn one_delay(
    proxy: &Proxy,
    through: &PgConnectOptions,
    options: &Options,
) -> Result<Group, BoxError> {
    let round_trip = round_trip_time(through).await?;
    let mut states = Vec::new();
    for &subject in VARIANTS {
        let mut state = State::open(subject, through).await?;
        // Warm-up: statements prepared, connections opened.
        run_slice(&mut state, subject, 2 * SLICE).await?;
        states.push(state);
    }
    let indices: Vec<usize> = (0..VARIANTS.len()).collect();
    let mut rates = vec![Vec::new(); VARIANTS.len()];
    let group_time = options.group_time * 2;
    for round in 0..options.rounds {
        let mut done = vec![0_u64; VARIANTS.len()];
        let mut spent = vec![Duration::ZERO; VARIANTS.len()];
        let until = Instant::now() + group_time;
        let mut turn = round;
        while Instant::now() < until {
            for variant in rotated(&indices, turn) {
                let (ops, took) = run_slice(&mut states[variant], VARIANTS[variant], SLICE).await?;
                done[variant] += ops;
                spent[variant] += took;
            }
            turn += 1;
        }
        for variant in 0..VARIANTS.len() {
            rates[variant].push(done[variant] as f64 / spent[variant].as_secs_f64());
        }
    }
    for state in states {
        state.close().await?;
    }
    Ok(Group {
        delay: proxy.delay(),
        round_trip,
        rates,
    })
}

/// Repeats `subject`'s operation for `slice` (at least once); returns how
/// many were done and how long they took.
async fn run_slice(
    state: &mut State,
    subject: Subject,
    slice: Duration,
) -> Result<(u64, Duration), BoxError> {
    let started = Instant::now();
    let mut done = 0;
    loop {
        done += state.once(subject).await?;
        let now = Instant::now();
        if now >= started + slice {
            return Ok((done, now - started));
        }
    }
}

/// What a round trip takes through the proxy: the median of 30 prepared
/// statements, after one that prepares it.
async fn round_trip_time(through: &PgConnectOptions) -> Result<Duration, BoxError> {
    let mut conn = PgConnection::connect_with(through).await?;
    let mut times = Vec::new();
    for run in 0..31 {
        let started = Instant::now();
        let _: i32 = sqlx::query_scalar("SELECT $1::int4")
            .bind(1)
            .fetch_one(&mut conn)
            .await?;
        if run > 0 {
            times.push(started.elapsed().as_secs_f64());
        }
    }
    conn.close().await?;
    Ok(Duration::from_secs_f64(median(&times)))
}

/// The table and the JSON lines of every delay's group.
pub(crate) fn report(groups: &[Group], counts: &RoundTrips, options: &Options) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n== delayed groups: {} rounds; in each, the variants take turns in {} ms slices \
         for {} ms per delay; medians over rounds; load average (1 min) now {} ==",
        options.rounds,
        SLICE.as_millis(),
        (options.group_time * 2).as_millis(),
        crate::report::load_average()
    );
    for group in groups {
        let _ = writeln!(
            out,
            "\n== TCP through the proxy, {} ms each way (a prepared SELECT took {:.3} ms) ==",
            ms(group.delay),
            group.round_trip.as_secs_f64() * 1e3
        );
        let _ = writeln!(
            out,
            "{:<48} {:>9} {:<13} {:>15} {:>21} {:>11}",
            "variant", "median", "unit", "spread", "x bare SQL [spread]", "round trips"
        );
        for (index, subject) in VARIANTS.iter().enumerate() {
            let (low, high) = spread_pct(&group.rates[index]);
            let ratio = paired_ratio_spread(&group.rates[index], &group.rates[0]);
            let _ = writeln!(
                out,
                "{:<48} {:>9.0} {:<13} {:>15} {:>21} {:>11}",
                subject.describe(),
                median(&group.rates[index]),
                subject.unit(),
                format!("{low:+.1}%..{high:+.1}%"),
                format!("{:.3} [{:.3}..{:.3}]", ratio.median, ratio.low, ratio.high),
                counts.json(&subject.to_string())
            );
        }
    }
    out.push('\n');
    for group in groups {
        for (index, subject) in VARIANTS.iter().enumerate() {
            let rates = &group.rates[index];
            let ratio = paired_ratio_spread(rates, &group.rates[0]);
            let (low, high) = spread_pct(rates);
            let _ = writeln!(
                out,
                "{{\"variant\": \"{subject}@{}\", \"delay_ms\": {}, \"round_trip_ms\": {:.3}, \
                 \"ops_per_sec\": {:.1}, \"ratio_to_baseline\": {:.4}, \
                 \"ratio_spread\": [{:.4}, {:.4}], \"transport\": \"{}\", \"unit\": \"{}\", \
                 \"spread_pct\": [{low:.2}, {high:.2}], \"baseline_ops_per_sec\": {:.1}, \
                 \"round_trips\": {}, \"rounds\": {}}}",
                group.name(),
                ms(group.delay),
                group.round_trip.as_secs_f64() * 1e3,
                median(rates),
                ratio.median,
                ratio.low,
                ratio.high,
                group.name(),
                subject.unit(),
                median(&group.rates[0]),
                counts.json(&subject.to_string()),
                rates.len()
            );
        }
    }
    out
}
