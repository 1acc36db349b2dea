//! Medians and spreads over rounds.

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
}
