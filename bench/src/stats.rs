//! Medians and spreads over rounds.

use std::time::{Duration, Instant};

/// Runs back to back for a slice of time, counted:
/// `while stream.more() { run().await?; }`, then [`Stream::per_second`].
pub(crate) struct Stream {
    slice: Duration,
    started: Instant,
    runs: u64,
}

impl Stream {
    /// A stream that starts now and lasts `slice`.
    pub(crate) fn for_slice(slice: Duration) -> Self {
        Self {
            slice,
            started: Instant::now(),
            runs: 0,
        }
    }

    /// Whether there is time for one more run, counted as it is granted.
    pub(crate) fn more(&mut self) -> bool {
        let more = self.started.elapsed() < self.slice;
        self.runs += u64::from(more);
        more
    }

    /// The runs per second, over the time from the start until now.
    pub(crate) fn per_second(&self) -> f64 {
        self.runs as f64 / self.started.elapsed().as_secs_f64()
    }
}

/// The median of `values` (the mean of the middle two for an even count);
/// NaN when empty.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    }
}

/// How far the lowest and the highest of `values` lie from their median,
/// in percent of it: `(-3.0, 2.5)` for a spread of -3.0 % .. +2.5 %.
pub(crate) fn spread_pct(values: &[f64]) -> (f64, f64) {
    let median = median(values);
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (
        (low - median) / median * 100.0,
        (high - median) / median * 100.0,
    )
}

/// The median of the round-by-round ratios `a[r] / b[r]`: both were
/// measured in the same round, close in time.
pub(crate) fn paired_ratio(a: &[f64], b: &[f64]) -> f64 {
    let ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| a / b).collect();
    median(&ratios)
}

/// A ratio of two variants: the median of the round-by-round ratios, and
/// its spread, the range that holds the true median with about 95 %
/// confidence (from the order statistics of the ratios, which assumes
/// nothing of their distribution: the 4th to the 12th of 15 rounds; with
/// fewer than 6 rounds it can't be that sure, and is the lowest to the
/// highest ratio).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Ratio {
    pub(crate) median: f64,
    pub(crate) low: f64,
    pub(crate) high: f64,
}

/// What a ratio says of its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Met,
    Missed,
    /// The spread crosses the bar: this run can't tell.
    Undecided,
}

impl Verdict {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "missed",
            Verdict::Undecided => "undecided",
        }
    }
}

impl Ratio {
    /// Against a bar that the ratio must reach.
    pub(crate) fn verdict(self, bar: f64) -> Verdict {
        if self.low >= bar {
            Verdict::Met
        } else if self.high < bar {
            Verdict::Missed
        } else {
            Verdict::Undecided
        }
    }
}

/// [`paired_ratio`] with its spread.
pub(crate) fn paired_ratio_spread(a: &[f64], b: &[f64]) -> Ratio {
    let mut ratios: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(a, b)| a / b)
        .filter(|ratio| ratio.is_finite())
        .collect();
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    if n == 0 {
        return Ratio {
            median: f64::NAN,
            low: f64::NAN,
            high: f64::NAN,
        };
    }
    // The largest j (1-based) with P(Binomial(n, 1/2) < j) <= 2.5 %: the
    // j-th lowest and the j-th highest ratio bound the median.
    let mut j = 1;
    let mut below = 0.0; // P(X <= j - 1)
    let mut term = 0.5_f64.powi(n as i32); // P(X = j - 1)
    loop {
        below += term;
        if below > 0.025 || j >= n.div_ceil(2) {
            break;
        }
        term *= (n - (j - 1)) as f64 / j as f64;
        if below + term > 0.025 {
            break;
        }
        j += 1;
    }
    Ratio {
        median: median(&ratios),
        low: ratios[j - 1],
        high: ratios[n - j],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn paired_ratios_cancel_a_slow_round() {
        let variant = [100.0, 50.0, 100.0];
        let baseline = [200.0, 100.0, 200.0];
        assert_eq!(paired_ratio(&variant, &baseline), 0.5);
    }

    #[test]
    fn the_spread_of_fifteen_ratios_is_the_fourth_to_the_twelfth() {
        let variant: Vec<f64> = (1..=15).map(f64::from).collect();
        let baseline = vec![1.0; 15];
        let ratio = paired_ratio_spread(&variant, &baseline);
        assert_eq!((ratio.median, ratio.low, ratio.high), (8.0, 4.0, 12.0));
        // Three rounds can't bound a median at 95 %: all of them.
        let ratio = paired_ratio_spread(&[1.0, 3.0, 2.0], &[1.0; 3]);
        assert_eq!((ratio.low, ratio.high), (1.0, 3.0));
    }

    #[test]
    fn a_spread_that_crosses_the_bar_is_undecided() {
        let ratio = |low, high| Ratio {
            median: (low + high) / 2.0,
            low,
            high,
        };
        assert_eq!(ratio(0.96, 0.99).verdict(0.95), Verdict::Met);
        assert_eq!(ratio(0.90, 0.94).verdict(0.95), Verdict::Missed);
        assert_eq!(ratio(0.93, 0.97).verdict(0.95), Verdict::Undecided);
    }
}
