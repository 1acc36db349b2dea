//! The human table, the targets, the allocation check, and the JSON lines.

use std::fmt::Write as _;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::allocations::{LIVE_SLACK, Steady};
use crate::ops::{HANDOFF_TASKS, Handoff, KeysBy, MANY_KEYS, Op};
use crate::round_trips::RoundTrips;
use crate::stats::{Ratio, Verdict, median, paired_ratio_spread, spread_pct};
use crate::{BoxError, Lane, Options};

/// Where the numbers come from.
pub(crate) struct Machine {
    cpus: usize,
    cpu_model: String,
    server_version: String,
    load_at_start: String,
}

/// The 1-minute load average, from `/proc/loadavg`.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

impl Machine {
    pub(crate) async fn describe(url: &str) -> Result<Machine, BoxError> {
        let mut conn = PgConnection::connect(url).await?;
        let server_version: String = sqlx::query_scalar("SELECT version()")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
            .map(|(_, model)| model.trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        Ok(Machine {
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model,
            server_version,
            load_at_start: load_average(),
        })
    }
}

/// A target, for one transport: `a / b` must reach `bar`.
struct Target {
    what: String,
    ratio: Ratio,
    bar: f64,
}

/// `0.973 [0.95..0.99]`: a ratio and its spread.
fn with_spread(ratio: Ratio) -> String {
    format!("{:.3} [{:.3}..{:.3}]", ratio.median, ratio.low, ratio.high)
}

/// Prints everything; returns whether an acquisition's allocations grew.
pub(crate) fn print(
    options: &Options,
    machine: &Machine,
    (transports, lanes, counts): (&[&str], &[Lane], &RoundTrips),
    steady: &[Steady],
    elapsed: Duration,
) -> bool {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pglock-bench{}: {} rounds; in each, the variants compared with each other take \
         turns in {} ms slices (hand-offs {} ms) for {} ms; medians over rounds",
        if options.quick { " --quick" } else { "" },
        options.rounds,
        options.slice.as_millis(),
        crate::HANDOFF_SLICE.as_millis(),
        options.group_time.as_millis()
    );
    let _ = writeln!(
        out,
        "machine: {} CPUs ({}); {}",
        machine.cpus, machine.cpu_model, machine.server_version
    );
    let _ = writeln!(
        out,
        "load average (1 min) at start {}, at end {}: other work on the machine shares its CPUs",
        machine.load_at_start,
        load_average()
    );
    let _ = writeln!(
        out,
        "x(1) = median over rounds of variant / baseline (1), the baseline taking turns with it \
         in the same slices (each group runs a baseline of its own)"
    );

    for (index, transport) in transports.iter().enumerate() {
        let shown: Vec<&Lane> = lanes
            .iter()
            .filter(|l| l.transport == index && !l.reference)
            .collect();
        let _ = writeln!(out, "\n== {transport} ==");
        let _ = writeln!(
            out,
            "{:<4} {:<48} {:>9} {:<13} {:>15} {:>21}  compared",
            "#", "variant", "median", "unit", "spread", "x(1) [spread]"
        );
        for lane in &shown {
            let (low, high) = spread_pct(&lane.rates);
            let ratio = paired_ratio_spread(&lane.rates, &lanes[lane.baseline].rates);
            let _ = writeln!(
                out,
                "{:<4} {:<48} {:>9.0} {:<13} {:>15} {:>21}  {}",
                format!("({})", lane.op.number()),
                lane.op.describe(),
                median(&lane.rates),
                lane.op.unit(),
                format!("{low:+.1}%..{high:+.1}%"),
                with_spread(ratio),
                compared(&shown, lane)
            );
        }
    }

    let _ = writeln!(
        out,
        "\n== targets == (a ratio [its spread: the median's 95% range]; a spread that \
         crosses its bar is undecided)"
    );
    let mut verdicts = Vec::new();
    let mut target_lines = Vec::new();
    for (index, transport) in transports.iter().enumerate() {
        let lanes: Vec<&Lane> = lanes
            .iter()
            .filter(|l| l.transport == index && !l.reference)
            .collect();
        for target in targets(&lanes) {
            let verdict = target.ratio.verdict(target.bar);
            verdicts.push(verdict);
            let _ = writeln!(
                out,
                "{:<6} {:<52} {:>21} (bar {:.2})  {}",
                transport,
                target.what,
                with_spread(target.ratio),
                target.bar,
                verdict.name().to_uppercase()
            );
            target_lines.push(format!(
                "{{\"target\": \"{}\", \"transport\": \"{}\", \"ratio\": {:.4}, \
                 \"ratio_spread\": [{:.4}, {:.4}], \"bar\": {:.2}, \"verdict\": \"{}\"}}",
                target.what,
                transport,
                target.ratio.median,
                target.ratio.low,
                target.ratio.high,
                target.bar,
                verdict.name()
            ));
        }
        let informative = [
            (
                Op::CappedTx,
                Op::HandWrittenTx,
                "(3)/(4) as whole transactions (BEGIN..COMMIT)",
            ),
            (
                Op::Macro,
                Op::Runtime,
                "(2) macro / (2') the runtime call it expands to",
            ),
        ];
        for (a, b, what) in informative {
            if let (Some(a), Some(b)) = (find(&lanes, a), find(&lanes, b)) {
                let _ = writeln!(
                    out,
                    "{:<6} {:<52} {:>21}  (information)",
                    transport,
                    what,
                    with_spread(paired_ratio_spread(&a.rates, &b.rates))
                );
            }
        }
    }

    let grows = steady.iter().any(Steady::grows);
    let _ = writeln!(
        out,
        "{:<6} {:<58} {:>7}  {}",
        "all",
        "no allocation growth per acquisition after warm-up",
        "",
        if grows { "MISS" } else { "PASS" }
    );
    if grows {
        verdicts.push(Verdict::Missed);
    }

    let _ = writeln!(
        out,
        "\n== allocations per acquisition ({}, counted inside the acquisition's future) ==",
        transports[0]
    );
    let _ = writeln!(
        out,
        "{:<58} {:<34} {:>9} {:>10}  verdict",
        "acquisition", "allocations/op, window by window", "bytes/op", "live diff"
    );
    for result in steady {
        let windows: Vec<String> = result
            .allocations
            .iter()
            .map(|a| format!("{a:.2}"))
            .collect();
        let _ = writeln!(
            out,
            "{:<58} {:<34} {:>9.0} {:>+9}B  {}",
            result.name,
            windows.join(" "),
            median(&result.bytes),
            result.live_growth,
            if result.grows() {
                "GROWS"
            } else if result.pglock {
                "flat"
            } else {
                "flat (reference)"
            }
        );
    }
    let _ = writeln!(
        out,
        "(a window is {} acquisitions after a warm-up; live diff: process memory after the \
         last window minus after the first, allowed {} KiB)",
        if options.quick { 100 } else { 500 },
        LIVE_SLACK / 1024
    );

    let _ = writeln!(
        out,
        "\n{} in {:.1} s\n",
        if verdicts.contains(&Verdict::Missed) {
            "some targets missed: see docs/PERFORMANCE.md for why"
        } else if verdicts.contains(&Verdict::Undecided) {
            "no target missed, some undecided: their spread crosses the bar (more rounds, or a quieter machine, may decide them)"
        } else if options.only.is_some() {
            "the targets of the selected variants met"
        } else {
            "all targets met"
        },
        elapsed.as_secs_f64()
    );

    for lane in lanes.iter().filter(|lane| !lane.reference) {
        let baseline = &lanes[lane.baseline];
        let ratio = paired_ratio_spread(&lane.rates, &baseline.rates);
        let (low, high) = spread_pct(&lane.rates);
        let _ = writeln!(
            out,
            "{{\"variant\": \"{}@{}\", \"ops_per_sec\": {:.1}, \"ratio_to_baseline\": {:.4}, \
             \"ratio_spread\": [{:.4}, {:.4}], \
             \"transport\": \"{}\", \"unit\": \"{}\", \"spread_pct\": [{:.2}, {:.2}], \
             \"baseline_ops_per_sec\": {:.1}, \"round_trips\": {}, \"rounds\": {}}}",
            lane.op,
            transports[lane.transport],
            median(&lane.rates),
            ratio.median,
            ratio.low,
            ratio.high,
            transports[lane.transport],
            lane.op.unit(),
            low,
            high,
            median(&baseline.rates),
            counts.json(&lane.op.to_string()),
            lane.rates.len()
        );
    }
    for line in target_lines {
        let _ = writeln!(out, "{line}");
    }
    print!("{out}");
    grows
}

fn find<'a>(lanes: &[&'a Lane], op: Op) -> Option<&'a Lane> {
    lanes.iter().copied().find(|lane| lane.op == op)
}

/// The comparison that explains a row, if it has one.
fn compared(lanes: &[&Lane], lane: &Lane) -> String {
    let (other, against) = match lane.op {
        Op::CappedTx => (Op::HandWrittenTx, "vs (4) same shape"),
        Op::CappedStatements => (Op::HandWrittenStatements, "vs (4) same shape"),
        Op::Handoff { lock, tasks } => match lock {
            Handoff::Exclusive => (
                Op::Handoff {
                    lock: Handoff::RawExclusive,
                    tasks,
                },
                "vs bare SQL",
            ),
            Handoff::Shared => (
                Op::Handoff {
                    lock: Handoff::RawShared,
                    tasks,
                },
                "vs bare SQL",
            ),
            _ => return String::new(),
        },
        Op::ManyKeys {
            keys,
            how: KeysBy::LockMany,
        } => (
            Op::ManyKeys {
                keys,
                how: KeysBy::Floor,
            },
            "vs the bare SQL floor",
        ),
        Op::ManyKeys {
            keys,
            how: KeysBy::SingleCalls,
        } => (
            Op::ManyKeys {
                keys,
                how: KeysBy::Floor,
            },
            "vs the bare SQL floor",
        ),
        _ => return String::new(),
    };
    match find(lanes, other) {
        Some(other) => format!(
            "{} {against}",
            with_spread(paired_ratio_spread(&lane.rates, &other.rates))
        ),
        None => String::new(),
    }
}

fn targets(lanes: &[&Lane]) -> Vec<Target> {
    let mut pairs: Vec<(Op, Op, String, f64)> = vec![
        (
            Op::Macro,
            Op::Baseline,
            "(2) macro, uncontended / (1) baseline".to_owned(),
            0.97,
        ),
        (
            Op::Runtime,
            Op::Baseline,
            "(2') runtime call, uncontended / (1) baseline".to_owned(),
            0.97,
        ),
        (
            Op::CappedStatements,
            Op::HandWrittenStatements,
            "(3) capped-wait statement / (4) the hand-written three".to_owned(),
            1.5,
        ),
    ];
    for tasks in HANDOFF_TASKS {
        if tasks > 1 {
            pairs.push((
                Op::Handoff {
                    lock: Handoff::Exclusive,
                    tasks,
                },
                Op::Handoff {
                    lock: Handoff::RawExclusive,
                    tasks,
                },
                format!("(6) exclusive hand-off, {tasks:>2} tasks / bare SQL"),
                0.95,
            ));
        }
    }
    for tasks in HANDOFF_TASKS {
        pairs.push((
            Op::Handoff {
                lock: Handoff::Shared,
                tasks,
            },
            Op::Handoff {
                lock: Handoff::RawShared,
                tasks,
            },
            format!(
                "(6) shared hand-off, {tasks:>2} task{} / bare SQL",
                if tasks == 1 { "" } else { "s" }
            ),
            0.97,
        ));
    }
    for keys in MANY_KEYS {
        if keys > 1 {
            pairs.push((
                Op::ManyKeys {
                    keys,
                    how: KeysBy::LockMany,
                },
                Op::ManyKeys {
                    keys,
                    how: KeysBy::Floor,
                },
                format!("(7) lock_many of {keys:>4} keys / the one-statement floor"),
                0.95,
            ));
        }
    }
    pairs.push((
        Op::ManyKeys {
            keys: 100,
            how: KeysBy::LockMany,
        },
        Op::ManyKeys {
            keys: 100,
            how: KeysBy::SingleCalls,
        },
        "(7) lock_many of 100 keys / 100 single calls".to_owned(),
        5.0,
    ));
    pairs
        .into_iter()
        .filter_map(|(a, b, what, bar)| {
            let (a, b) = (find(lanes, a)?, find(lanes, b)?);
            Some(Target {
                what,
                ratio: paired_ratio_spread(&a.rates, &b.rates),
                bar,
            })
        })
        .collect()
}
