//! The charts of `docs/PERFORMANCE.md`, as SVG files: per transport, the
//! hand-off's critical sections per second against the number of tasks,
//! and the many-keys transactions per second against the keys per set;
//! and the delayed groups' operations per second against the delay.
//! Each point is a variant's median over rounds.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

/// How the x axis places its values: evenly by powers of `base`, so that
/// 1, 2, 4, 8, 16 tasks (or 1, 10, 100, 1000 keys) are equally apart, and
/// only those are labelled; or, with no base, as they are (a delay in
/// milliseconds), labelled every quarter.
#[derive(Clone, Copy)]
struct PowerAxis {
    base: Option<f64>,
}

impl PowerAxis {
    fn place(self, value: f64) -> f64 {
        self.base.map_or(value, |base| value.log(base))
    }

    fn label(self, place: f64) -> String {
        match self.base {
            Some(base) => format!("{:.0}", base.powf(place)),
            None => format!("{place:.2}"),
        }
    }

    /// How many labels a range up to `end` gets.
    fn labels(self, end: f64) -> usize {
        match self.base {
            Some(_) => end.floor() as usize + 1,
            None => (end * 4.0).floor() as usize + 1,
        }
    }
}

use crate::delayed::{self, Group};
use crate::ops::{HANDOFF_TASKS, Handoff, KeysBy, MANY_KEYS, Op};
use crate::stats::median;
use crate::subject::Subject;
use crate::{BoxError, Lane};

const SIZE: (u32, u32) = (720, 440);

/// One line of a chart: its legend, its colour, its points.
struct Line {
    legend: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// Writes the charts of every transport into `dir`; returns their paths.
/// A chart whose variants were not run (`--only`) is not written.
pub(crate) fn write(
    dir: &Path,
    transports: &[&str],
    lanes: &[Lane],
) -> Result<Vec<PathBuf>, BoxError> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (index, transport) in transports.iter().enumerate() {
        let median_of = |op: Op| {
            lanes
                .iter()
                .find(|lane| lane.transport == index && !lane.reference && lane.op == op)
                .map(|lane| median(&lane.rates))
                .filter(|rate| rate.is_finite() && *rate > 0.0)
        };
        let handoff = |legend: &str, color, lock| Line {
            legend: legend.to_owned(),
            color,
            points: HANDOFF_TASKS
                .iter()
                .filter_map(|&tasks| {
                    median_of(Op::Handoff { lock, tasks }).map(|rate| (tasks as f64, rate))
                })
                .collect(),
        };
        let handoffs = [
            handoff(
                "pglock, exclusive",
                RGBColor(200, 40, 40),
                Handoff::Exclusive,
            ),
            handoff(
                "bare SQL, exclusive",
                RGBColor(240, 150, 120),
                Handoff::RawExclusive,
            ),
            handoff("pglock, shared", RGBColor(30, 80, 190), Handoff::Shared),
            handoff(
                "bare SQL, shared",
                RGBColor(120, 170, 240),
                Handoff::RawShared,
            ),
        ];
        let path = dir.join(format!("handoff-{transport}.svg"));
        if chart(
            &path,
            &format!("One key handed off between tasks ({transport})"),
            ("tasks", PowerAxis { base: Some(2.0) }),
            "critical sections per second",
            (false, SeriesLabelPosition::UpperLeft),
            &handoffs,
        )? {
            written.push(path);
        }

        let many = |legend: &str, color, how| Line {
            legend: legend.to_owned(),
            color,
            points: MANY_KEYS
                .iter()
                .filter_map(|&keys| {
                    median_of(Op::ManyKeys { keys, how }).map(|rate| (keys as f64, rate))
                })
                .collect(),
        };
        let sets = [
            many(
                "lock_many (one call)",
                RGBColor(200, 40, 40),
                KeysBy::LockMany,
            ),
            many(
                "bare SQL, one statement (floor)",
                RGBColor(90, 90, 90),
                KeysBy::Floor,
            ),
            many(
                "one call per key",
                RGBColor(30, 80, 190),
                KeysBy::SingleCalls,
            ),
        ];
        let path = dir.join(format!("many-keys-{transport}.svg"));
        if chart(
            &path,
            &format!("Keys taken in one transaction ({transport})"),
            ("keys per set", PowerAxis { base: Some(10.0) }),
            "transactions per second",
            (true, SeriesLabelPosition::LowerLeft),
            &sets,
        )? {
            written.push(path);
        }
    }
    Ok(written)
}

/// The delayed groups' chart, `delays.svg`: each variant's operations per
/// second against the one-way delay; none when fewer than two delays ran.
pub(crate) fn delays(dir: &Path, groups: &[Group]) -> Result<Option<PathBuf>, BoxError> {
    std::fs::create_dir_all(dir)?;
    const COLORS: [RGBColor; 8] = [
        RGBColor(90, 90, 90),
        RGBColor(200, 40, 40),
        RGBColor(240, 150, 120),
        RGBColor(30, 80, 190),
        RGBColor(120, 170, 240),
        RGBColor(150, 110, 40),
        RGBColor(40, 150, 80),
        RGBColor(150, 60, 170),
    ];
    let lines: Vec<Line> = delayed::VARIANTS
        .iter()
        .enumerate()
        .map(|(index, &subject)| Line {
            legend: legend(subject),
            color: COLORS[index % COLORS.len()],
            points: groups
                .iter()
                .filter_map(|group| {
                    let delay = group.delay.as_secs_f64() * 1e3;
                    group.median_of(subject).map(|rate| (delay, rate))
                })
                .collect(),
        })
        .collect();
    let path = dir.join("delays.svg");
    let drawn = chart(
        &path,
        "Critical sections per second against the network's delay (TCP)",
        ("one-way delay, ms", PowerAxis { base: None }),
        "operations per second",
        (true, SeriesLabelPosition::UpperRight),
        &lines,
    )?;
    Ok(drawn.then_some(path))
}

fn legend(subject: Subject) -> String {
    match subject {
        Subject::Op(Op::Baseline) => "bare SQL: begin, lock, commit".into(),
        Subject::Op(Op::Runtime) => "pglock runtime call (begin, lock, commit)".into(),
        Subject::Op(Op::Macro) => "pglock attribute (begin, lock, commit)".into(),
        Subject::Op(Op::SqlxAdvisoryLock) => "sqlx PgAdvisoryLock".into(),
        Subject::Op(Op::DistributedLock) => "DistributedLock's sequence".into(),
        Subject::Op(Op::HandWrittenTx) => "seed 003's three statements".into(),
        Subject::Manager => "pglock lock manager".into(),
        Subject::Lease => "pglock lease".into(),
        other => other.to_string(),
    }
}

/// Draws `lines`, their x values placed by `x_axis` (and their y values
/// on a logarithmic axis, when `log_y`), the legend at `legend`; returns
/// false, writing nothing, when no line has two points.
fn chart(
    path: &Path,
    title: &str,
    (x_label, x_axis): (&str, PowerAxis),
    y_label: &str,
    (log_y, legend): (bool, SeriesLabelPosition),
    lines: &[Line],
) -> Result<bool, BoxError> {
    let points = lines.iter().flat_map(|line| line.points.iter());
    let (mut x_max, mut y_min, mut y_max) = (1.0_f64, f64::INFINITY, 0.0_f64);
    for &(x, y) in points {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if lines.iter().all(|line| line.points.len() < 2) {
        return Ok(false);
    }
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    // A little room at both ends, so that the last value is labelled too.
    let x_range = -0.05..x_axis.place(x_max) + 0.05;
    let x = (x_label, x_axis, x_range);
    if log_y {
        let y_range = (y_min / 2.0..y_max * 2.0).log_scale();
        draw(&root, title, x, (y_label, y_range), legend, lines)?;
    } else {
        let y_range = 0.0..y_max * 1.15;
        draw(&root, title, x, (y_label, y_range), legend, lines)?;
    }
    root.present()?;
    Ok(true)
}

fn draw<Y>(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    (x_label, x_axis, x_range): (&str, PowerAxis, std::ops::Range<f64>),
    (y_label, y_range): (&str, Y),
    legend: SeriesLabelPosition,
    lines: &[Line],
) -> Result<(), BoxError>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let x_labels = x_axis.labels(x_range.end);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, y_range)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_labels(x_labels)
        .x_label_formatter(&|x| x_axis.label(*x))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .light_line_style(WHITE)
        .draw()?;
    for line in lines.iter().filter(|line| !line.points.is_empty()) {
        let color = line.color;
        chart
            .draw_series(LineSeries::new(
                line.points.iter().map(|&(x, y)| (x_axis.place(x), y)),
                color.stroke_width(2),
            ))?
            .label(line.legend.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
