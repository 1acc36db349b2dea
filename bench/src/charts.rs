//! The charts of `docs/PERFORMANCE.md`, as SVG files: per transport, the
//! hand-off's critical sections per second against the number of tasks,
//! and the many-keys transactions per second against the keys per set.
//! Each point is a variant's median over rounds.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

/// How the x axis places its values: evenly by powers of `base`, so that
/// 1, 2, 4, 8, 16 tasks (or 1, 10, 100, 1000 keys) are equally apart, and
/// only those are labelled.
#[derive(Clone, Copy)]
struct PowerAxis {
    base: f64,
}

impl PowerAxis {
    fn place(self, value: f64) -> f64 {
        value.log(self.base)
    }

    fn label(self, place: f64) -> String {
        format!("{:.0}", self.base.powf(place))
    }
}

use crate::ops::{HANDOFF_TASKS, Handoff, KeysBy, MANY_KEYS, Op};
use crate::stats::median;
use crate::{BoxError, Lane};

const SIZE: (u32, u32) = (720, 440);

/// One line of a chart: its legend, its colour, its points.
struct Line {
    legend: &'static str,
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
        let handoff = |legend, color, lock| Line {
            legend,
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
            ("tasks", PowerAxis { base: 2.0 }),
            "critical sections per second",
            false,
            &handoffs,
        )? {
            written.push(path);
        }

        let many = |legend, color, how| Line {
            legend,
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
            ("keys per set", PowerAxis { base: 10.0 }),
            "transactions per second",
            true,
            &sets,
        )? {
            written.push(path);
        }
    }
    Ok(written)
}

/// Draws `lines`, their x values placed by `x_axis` (and their y values
/// on a logarithmic axis, when `log_y`); returns false, writing nothing,
/// when no line has two points.
fn chart(
    path: &Path,
    title: &str,
    (x_label, x_axis): (&str, PowerAxis),
    y_label: &str,
    log_y: bool,
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
        let legend = SeriesLabelPosition::LowerLeft;
        draw(&root, title, x, (y_label, y_range), legend, lines)?;
    } else {
        let y_range = 0.0..y_max * 1.15;
        let legend = SeriesLabelPosition::UpperLeft;
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
    let x_labels = x_range.end.floor() as usize + 1;
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
            .label(line.legend)
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
