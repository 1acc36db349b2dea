//! Durations as operators type them (`250ms`, `1.5s`, `2min`, `1h`: the
//! grammar every pglock reader shares, `pglock_grammar::duration`) and as
//! the tables show them (`850ms`, `12.3s`, `15m02s`, `2h05m`).

use std::time::Duration;

/// The longest threshold: a week is longer than any wait or idle
/// transaction worth one.
const LONGEST: Duration = Duration::from_secs(7 * 86_400);

/// A duration as the command reads it: the shared grammar, up to a week.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let too_long = || format!("{text:?} is longer than a week");
    match pglock_grammar::duration::parse(text) {
        Ok(duration) if duration <= LONGEST => Ok(duration),
        Ok(_) => Err(too_long()),
        Err(refused) if refused.is_too_long() => Err(too_long()),
        Err(refused) => Err(refused.to_string()),
    }
}

/// A short human reading of a duration, precise where it matters: tenths
/// of a second under a minute, whole seconds under an hour, minutes after.
pub(crate) fn format(duration: Duration) -> String {
    let millis = duration.as_millis();
    let secs = duration.as_secs();
    if millis < 1_000 {
        format!("{millis}ms")
    } else if secs < 60 {
        match duration.subsec_millis() / 100 {
            0 => format!("{secs}s"),
            tenths => format!("{secs}.{tenths}s"),
        }
    } else if secs < 3_600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else if secs < 86_400 {
        format!("{}h{:02}m", secs / 3_600, secs % 3_600 / 60)
    } else {
        format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3_600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_shared_grammar_up_to_a_week() {
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1_500)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("168h"), Ok(LONGEST));
        assert!(parse("169h").unwrap_err().contains("longer than a week"));
        assert!(
            parse("99999999999999999999999h")
                .unwrap_err()
                .contains("longer than a week")
        );
    }

    #[test]
    fn a_refusal_says_what_the_grammar_accepts() {
        assert!(parse("5").unwrap_err().contains("accepted units are"));
    }

    #[test]
    fn shows_the_precision_that_matters() {
        assert_eq!(format(Duration::from_millis(850)), "850ms");
        assert_eq!(format(Duration::from_millis(12_345)), "12.3s");
        assert_eq!(format(Duration::from_millis(5_040)), "5s");
        assert_eq!(format(Duration::from_secs(15 * 60 + 2)), "15m02s");
        assert_eq!(format(Duration::from_secs(2 * 3_600 + 5 * 60)), "2h05m");
        assert_eq!(format(Duration::from_secs(3 * 86_400 + 4 * 3_600)), "3d04h");
    }
}
