//! How a duration is written, wherever pglock reads one: the attribute's
//! `timeout = "5s"` and the `pglock` command's `--slow`, `--wait`,
//! `--idle-in-transaction` and `--interval`.
//!
//! ```text
//! duration = number [spaces] unit
//! number   = digits ["." digits]      digits: 0-9, grouped by `_` after the first
//! unit     = "ms" | "s" | "min" | "h"
//! ```
//!
//! - The value is a whole number of milliseconds: `1.5s` is 1500 ms and
//!   `0.25min` 15000 ms, while `1.5ms` and `500us` are refused (PostgreSQL's
//!   `lock_timeout` counts whole milliseconds, and no threshold of the
//!   command needs finer).
//! - The unit is required: `5` would be seconds to one reader and
//!   milliseconds to another.
//! - `m` is refused: it reads as minutes or as milliseconds.
//! - Nothing comes before the number or after the unit.
//!
//! The units are PostgreSQL's own spellings for `lock_timeout` and its
//! kin, so a value copied from `postgresql.conf` reads the same.
//!
//! What is in range is the reader's to say, and each says it in its own
//! words: a lock timeout runs from 1 ms to PostgreSQL's largest,
//! `i32::MAX` ms; the command's thresholds from 0 to a week, its refresh
//! interval from 100 ms.

use std::fmt;
use std::time::Duration;

/// The units, with their length in milliseconds.
pub const UNITS: &[(&str, u64)] = &[("ms", 1), ("s", 1_000), ("min", 60_000), ("h", 3_600_000)];

/// The accepted forms, as a message ends: "write a number and a unit, such
/// as ...".
pub const FORMS: &str = "a number and a unit, such as \"250ms\", \"1.5s\", \"2min\" or \"1h\"";

/// The accepted units, as a message ends.
pub const UNIT_NAMES: &str = "accepted units are ms, s, min and h";

/// Why a text is not a duration; its `Display` is the message for the user,
/// which quotes the text and says what is accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurationError {
    text: String,
    problem: Problem,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Problem {
    /// Not a number and a unit at all.
    Shape,
    NoUnit {
        number: String,
    },
    UnknownUnit {
        number: String,
        unit: String,
        instead: Option<&'static str>,
    },
    /// `m`: minutes or milliseconds?
    AmbiguousMinutes {
        number: String,
    },
    /// `us`, `ns`: finer than any duration read here.
    FinerUnit,
    /// A fraction that is not a whole number of milliseconds.
    PartOfAMillisecond,
    /// More milliseconds than a `u64` counts.
    TooLong,
}

impl DurationError {
    fn new(text: &str, problem: Problem) -> Self {
        Self {
            text: text.to_owned(),
            problem,
        }
    }

    /// Whether the text is a duration too long to count in milliseconds: a
    /// reader with a bound of its own says that bound instead.
    pub fn is_too_long(&self) -> bool {
        self.problem == Problem::TooLong
    }
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = &self.text;
        match &self.problem {
            Problem::Shape => write!(f, "{text:?} is not a duration: write {FORMS}"),
            Problem::NoUnit { number } => write!(
                f,
                "{text:?} has no unit: write \"{number}s\" or \"{number}ms\"; {UNIT_NAMES}"
            ),
            Problem::UnknownUnit {
                number,
                instead: Some(unit),
                ..
            } => write!(
                f,
                "{text:?} has an unknown unit: write \"{number}{unit}\"; {UNIT_NAMES}"
            ),
            Problem::UnknownUnit {
                unit,
                instead: None,
                ..
            } => write!(f, "{text:?} has an unknown unit `{unit}`: {UNIT_NAMES}"),
            Problem::AmbiguousMinutes { number } => write!(
                f,
                "{text:?}: `m` could be minutes or milliseconds; write \"{number}min\" or \"{number}ms\""
            ),
            Problem::FinerUnit => write!(
                f,
                "{text:?} is finer than a millisecond: durations count whole milliseconds, \
                 so the shortest is \"1ms\"; {UNIT_NAMES}"
            ),
            Problem::PartOfAMillisecond => write!(
                f,
                "{text:?} is not a whole number of milliseconds: durations count whole \
                 milliseconds; write {FORMS}"
            ),
            Problem::TooLong => write!(f, "{text:?} is too long to count in milliseconds"),
        }
    }
}

impl std::error::Error for DurationError {}

/// The duration `text` writes.
///
/// ```
/// use std::time::Duration;
/// use pglock_grammar::duration;
///
/// assert_eq!(duration::parse("1.5s"), Ok(Duration::from_millis(1_500)));
/// assert!(duration::parse("5").is_err());
/// ```
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    parse_millis(text).map(Duration::from_millis)
}

/// The number of milliseconds `text` writes.
pub fn parse_millis(text: &str) -> Result<u64, DurationError> {
    let fail = |problem| Err(DurationError::new(text, problem));
    let Some((whole, _, rest)) = digits(text) else {
        return fail(Problem::Shape);
    };
    let (fraction, rest) = match rest.strip_prefix('.') {
        Some(after_point) => match digits(after_point) {
            Some((value, places, rest)) => (Some((value, places)), rest),
            None => return fail(Problem::Shape),
        },
        None => (None, rest),
    };
    let number = &text[..text.len() - rest.len()];
    let unit = rest.trim_start();
    if unit.is_empty() {
        return fail(Problem::NoUnit {
            number: number.to_owned(),
        });
    }
    if !unit.chars().all(char::is_alphabetic) {
        return fail(Problem::Shape);
    }
    let Some(&(_, unit_millis)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return fail(unknown_unit(number, unit));
    };
    let unit_millis = u128::from(unit_millis);
    let Some(whole_millis) = whole.checked_mul(unit_millis) else {
        return fail(Problem::TooLong);
    };
    let fraction_millis = match fraction {
        None => 0,
        Some((value, places)) => {
            // Exact: `value / 10^places` units is a whole number of
            // milliseconds, or the text is refused.
            let scale = u32::try_from(places)
                .ok()
                .and_then(|p| 10u128.checked_pow(p));
            match (scale, value.checked_mul(unit_millis)) {
                (Some(scale), Some(scaled)) if scaled.is_multiple_of(scale) => scaled / scale,
                _ => return fail(Problem::PartOfAMillisecond),
            }
        }
    };
    let millis = whole_millis.checked_add(fraction_millis);
    match millis.and_then(|millis| u64::try_from(millis).ok()) {
        Some(millis) => Ok(millis),
        None => fail(Problem::TooLong),
    }
}

/// The value of the digits (grouped by `_` after the first) that `text`
/// starts with, how many digits there are, and what follows; `None` when
/// `text` starts with no digit. A value past `u128` saturates, which no unit
/// brings back within a `u64`.
fn digits(text: &str) -> Option<(u128, usize, &str)> {
    if !text.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(text.len());
    let digits = text[..end].bytes().filter(u8::is_ascii_digit);
    let count = digits.clone().count();
    let value = digits.fold(0u128, |value, digit| {
        value
            .saturating_mul(10)
            .saturating_add(u128::from(digit - b'0'))
    });
    Some((value, count, &text[end..]))
}

fn unknown_unit(number: &str, unit: &str) -> Problem {
    let instead = match unit {
        "m" => {
            return Problem::AmbiguousMinutes {
                number: number.to_owned(),
            };
        }
        "us" | "µs" | "μs" | "ns" => return Problem::FinerUnit,
        "msec" | "msecs" | "millis" | "millisecond" | "milliseconds" => Some("ms"),
        "sec" | "secs" | "second" | "seconds" => Some("s"),
        "mins" | "minute" | "minutes" => Some("min"),
        "hr" | "hrs" | "hour" | "hours" => Some("h"),
        _ => None,
    };
    Problem::UnknownUnit {
        number: number.to_owned(),
        unit: unit.to_owned(),
        instead,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(text: &str) -> String {
        parse_millis(text).unwrap_err().to_string()
    }

    #[test]
    fn a_whole_number_and_a_unit_is_that_many_milliseconds() {
        assert_eq!(parse_millis("250ms"), Ok(250));
        assert_eq!(parse_millis("5s"), Ok(5_000));
        assert_eq!(parse_millis("2min"), Ok(120_000));
        assert_eq!(parse_millis("1h"), Ok(3_600_000));
        assert_eq!(parse_millis("0s"), Ok(0));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
    }

    #[test]
    fn digits_may_be_grouped_with_underscores() {
        assert_eq!(parse_millis("1_500ms"), Ok(1_500));
        assert_eq!(parse_millis("1_0.2_5s"), Ok(10_250));
        assert!(parse_millis("_5s").is_err());
    }

    #[test]
    fn spaces_may_separate_the_number_and_the_unit_only() {
        assert_eq!(parse_millis("5 s"), Ok(5_000));
        assert_eq!(parse_millis("5  min"), Ok(300_000));
        assert!(parse_millis(" 5s").is_err());
        assert!(parse_millis("5s ").is_err());
    }

    #[test]
    fn a_fraction_that_is_whole_milliseconds_is_read_exactly() {
        assert_eq!(parse_millis("1.5s"), Ok(1_500));
        assert_eq!(parse_millis("0.25min"), Ok(15_000));
        assert_eq!(parse_millis("1.5min"), Ok(90_000));
        assert_eq!(parse_millis("0.001s"), Ok(1));
        assert_eq!(parse_millis("2.000ms"), Ok(2));
    }

    #[test]
    fn a_part_of_a_millisecond_is_refused() {
        assert!(refusal("1.5ms").contains("not a whole number of milliseconds"));
        assert!(refusal("0.0001s").contains("not a whole number of milliseconds"));
        assert!(refusal("500us").contains("the shortest is \"1ms\""));
        assert!(refusal("5ns").contains("finer than a millisecond"));
    }

    #[test]
    fn the_unit_is_required_and_suggested() {
        assert_eq!(
            refusal("5"),
            "\"5\" has no unit: write \"5s\" or \"5ms\"; accepted units are ms, s, min and h"
        );
        assert!(refusal("5 seconds").contains("write \"5s\""));
        assert!(refusal("2 minutes").contains("write \"2min\""));
        assert!(refusal("5 parsecs").contains("unknown unit `parsecs`"));
    }

    #[test]
    fn m_is_refused_as_minutes_or_milliseconds() {
        assert_eq!(
            refusal("15m"),
            "\"15m\": `m` could be minutes or milliseconds; write \"15min\" or \"15ms\""
        );
    }

    #[test]
    fn what_is_not_a_number_and_a_unit_is_refused_with_the_forms() {
        for text in [
            "", "s", "-5s", ".5s", "5.s", "1.2.3s", "soon", "5s5", "1h30min",
        ] {
            let message = refusal(text);
            assert!(
                message.contains(FORMS) || message.contains(UNIT_NAMES),
                "{text:?}: {message}"
            );
        }
    }

    #[test]
    fn a_count_past_a_u64_of_milliseconds_is_too_long() {
        assert_eq!(parse_millis("18446744073709551615ms"), Ok(u64::MAX));
        assert!(
            parse_millis("18446744073709551616ms")
                .unwrap_err()
                .is_too_long()
        );
        assert!(
            parse_millis("99999999999999999999999999999999999999999h")
                .unwrap_err()
                .is_too_long()
        );
        assert!(!parse_millis("5").unwrap_err().is_too_long());
    }

    /// An independent reading of the grammar in the module's docs, for the
    /// properties below.
    fn reference(text: &str) -> Option<u128> {
        let unit_start = text.find(|c: char| !(c.is_ascii_digit() || c == '_' || c == '.'))?;
        let (number, rest) = text.split_at(unit_start);
        let unit = rest.trim_start();
        let millis = UNITS.iter().find(|(name, _)| *name == unit)?.1;
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let grouped = |digits: &str| {
            digits.starts_with(|c: char| c.is_ascii_digit()) && !digits.contains('.')
        };
        if !grouped(whole) || (number.contains('.') && !grouped(fraction)) {
            return None;
        }
        let whole: String = whole.chars().filter(|c| *c != '_').collect();
        let fraction: String = fraction.chars().filter(|c| *c != '_').collect();
        let scale = 10u128.checked_pow(fraction.len() as u32)?;
        let value = format!("{whole}{fraction}").parse::<u128>().ok()?;
        let total = value.checked_mul(u128::from(millis))?;
        total.is_multiple_of(scale).then_some(total / scale)
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_text(text in "\\PC{0,24}") {
            let _ = parse_millis(&text);
        }

        #[test]
        fn accepts_every_whole_number_with_a_unit(
            count in 0u64..=u64::MAX / 3_600_000,
            unit in 0usize..4,
            separator in "[ ]{0,2}",
        ) {
            let (name, millis) = UNITS[unit];
            let text = format!("{count}{separator}{name}");
            proptest::prop_assert_eq!(parse_millis(&text), Ok(count * millis));
        }

        #[test]
        fn reads_a_fraction_exactly_or_refuses_it(
            whole in 0u64..100_000,
            fraction in "[0-9]{1,5}",
            unit in 0usize..4,
        ) {
            let (name, millis) = UNITS[unit];
            let text = format!("{whole}.{fraction}{name}");
            let scale = 10u64.pow(fraction.len() as u32);
            let exact = (whole * scale + fraction.parse::<u64>().unwrap()) * millis;
            match parse_millis(&text) {
                Ok(total) => proptest::prop_assert_eq!(total * scale, exact),
                Err(_) => proptest::prop_assert!(!exact.is_multiple_of(scale)),
            }
        }

        #[test]
        fn accepts_exactly_what_the_grammar_describes(text in "[0-9_. a-z\\-µ]{0,12}") {
            let expected = reference(&text).and_then(|total| u64::try_from(total).ok());
            proptest::prop_assert_eq!(parse_millis(&text).ok(), expected, "{:?}", text);
        }
    }
}
