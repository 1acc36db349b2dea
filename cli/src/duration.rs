//! Durations as operators type them (`250ms`, `5s`, `2min`, `1h`) and as
//! the tables show them (`850ms`, `12.3s`, `15m02s`, `2h05m`).

use std::time::Duration;

/// Parses a number followed by a unit: `ms`, `s`, `m` or `min`, `h`. The
/// unit is required, so `5` can't be read as seconds by one reader and
/// minutes by another.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    const ACCEPTED: &str = "a number and a unit: 250ms, 5s, 2min, 1h";
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let millis_per_unit = match unit {
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" | "min" => 60_000.0,
        "h" => 3_600_000.0,
        "" => return Err(format!("`{text}` has no unit; give {ACCEPTED}")),
        _ => return Err(format!("`{text}` is not a duration; give {ACCEPTED}")),
    };
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; give {ACCEPTED}"))?;
    let millis = number * millis_per_unit;
    // A week is longer than any wait or idle transaction worth a threshold.
    if !(0.0..=7.0 * 86_400_000.0).contains(&millis) {
        return Err(format!("`{text}` is longer than a week"));
    }
    Ok(Duration::from_micros((millis * 1_000.0).round() as u64))
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
    fn reads_every_unit() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1_500)));
        assert_eq!(parse("2min"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_a_number_without_unit_and_nonsense() {
        assert!(parse("5").unwrap_err().contains("no unit"));
        assert!(parse("5 parsecs").is_err());
        assert!(parse("s").is_err());
        assert!(parse("-1s").is_err());
        assert!(parse("1.2.3s").is_err());
        assert!(parse("8d").is_err());
        assert!(parse("200h").unwrap_err().contains("week"));
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
