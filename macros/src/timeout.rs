//! `timeout = "5s"`: a whole number and a unit, checked at compile time
//! against what PostgreSQL's `lock_timeout` can express (whole milliseconds,
//! from 1 to `i32::MAX`).

use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Lit};

/// The units, with their length in milliseconds.
const UNITS: &[(&str, u64)] = &[("ms", 1), ("s", 1_000), ("min", 60_000), ("h", 3_600_000)];

const ACCEPTED: &str =
    "a timeout is a whole number and a unit, such as \"250ms\", \"5s\", \"2min\" or \"1h\"";

/// PostgreSQL's largest `lock_timeout`, in milliseconds.
const MAX_MILLIS: u64 = i32::MAX as u64;

/// The timeout in milliseconds.
pub(crate) fn parse(value: Expr) -> syn::Result<u64> {
    let literal = match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) => text,
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => {
            // `timeout = 5s` lexes as the integer 5 with the suffix `s`.
            let message = if int.suffix().is_empty() {
                format!(
                    "`timeout = {int}` has no unit: write it as a string, such as \
                     `timeout = \"{int}s\"` or `timeout = \"{int}ms\"`; {UNIT_NAMES}"
                )
            } else {
                format!("write the timeout as a string: `timeout = \"{int}\"`")
            };
            return Err(syn::Error::new(int.span(), message));
        }
        Expr::Lit(ExprLit {
            lit: Lit::Float(float),
            ..
        }) => {
            return Err(syn::Error::new(
                float.span(),
                format!(
                    "write the timeout as a string, a whole number and a unit, such as `timeout = \"1500ms\"`; {UNIT_NAMES}"
                ),
            ));
        }
        other => {
            return Err(syn::Error::new(
                other.span(),
                format!(
                    "`timeout` takes a string literal, checked at compile time: {ACCEPTED}; \
                     for a timeout known only at run time, call `pglock::Namespace::lock(..).timeout(..)` in the body"
                ),
            ));
        }
    };
    parse_text(&literal.value()).map_err(|message| syn::Error::new(literal.span(), message))
}

const UNIT_NAMES: &str = "accepted units are ms, s, min and h";

fn parse_text(text: &str) -> Result<u64, String> {
    let quoted = format!("{text:?}");
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '_' || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_end);
    let unit = unit.trim_start();
    let unit_millis = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|&(_, millis)| millis);
    if number.contains('.') {
        // Say what the fraction is in whole milliseconds, when it is some.
        let hint = unit_millis
            .and_then(|millis| whole_millis(number, millis))
            .map(|millis| format!(": write \"{millis}ms\""))
            .unwrap_or_default();
        return Err(format!(
            "{quoted} has a fraction, and a timeout is a whole number of units{hint}"
        ));
    }
    let number = number.replace('_', "");
    if number.is_empty() {
        return Err(format!("{quoted} is not a timeout: {ACCEPTED}"));
    }
    if unit.is_empty() {
        return Err(format!(
            "{quoted} has no unit: write \"{number}s\" or \"{number}ms\"; {UNIT_NAMES}"
        ));
    }
    let Some(unit_millis) = unit_millis else {
        return Err(match unit {
            "us" | "µs" | "μs" | "ns" => format!(
                "{quoted} is shorter than a millisecond: PostgreSQL's `lock_timeout` counts \
                 whole milliseconds, so the smallest timeout is \"1ms\""
            ),
            "m" => format!(
                "{quoted}: `m` could be minutes or milliseconds; write \"{number}min\" or \"{number}ms\""
            ),
            _ => {
                let suggestion = match unit {
                    "sec" | "secs" | "second" | "seconds" => Some("s"),
                    "mins" | "minute" | "minutes" => Some("min"),
                    "hr" | "hrs" | "hour" | "hours" => Some("h"),
                    "msec" | "msecs" | "millis" | "millisecond" | "milliseconds" => Some("ms"),
                    _ => None,
                };
                match suggestion {
                    Some(unit) => format!(
                        "{quoted} has an unknown unit: write \"{number}{unit}\"; {UNIT_NAMES}"
                    ),
                    None => format!("{quoted} has an unknown unit `{unit}`: {UNIT_NAMES}"),
                }
            }
        });
    };
    let too_large = || {
        format!(
            "{quoted} is longer than PostgreSQL's largest `lock_timeout`, {MAX_MILLIS}ms \
             (about 24.8 days, or \"596h\"); leave `timeout` out to wait without a cap"
        )
    };
    let count: u64 = number.parse().map_err(|_| too_large())?;
    if count == 0 {
        return Err(format!(
            "{quoted} is zero, which PostgreSQL reads as \"wait forever\": use `no_wait` to \
             not wait at all, or leave `timeout` out to wait without a cap"
        ));
    }
    let millis = count.checked_mul(unit_millis).ok_or_else(too_large)?;
    if millis > MAX_MILLIS {
        return Err(too_large());
    }
    Ok(millis)
}

/// `number` (with one decimal point) times `unit_millis`, if that is a whole,
/// non-zero number of milliseconds.
fn whole_millis(number: &str, unit_millis: u64) -> Option<u64> {
    let (whole, fraction) = number.split_once('.')?;
    let whole = whole.replace('_', "");
    let fraction = fraction.replace('_', "");
    if fraction.len() > 9 || fraction.contains('.') {
        return None;
    }
    let scale = 10u64.pow(fraction.len() as u32);
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let fraction: u64 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    let scaled = whole.checked_mul(scale)?.checked_add(fraction)?;
    let product = scaled.checked_mul(unit_millis)?;
    (product % scale == 0 && product > 0).then(|| product / scale)
}

#[cfg(test)]
mod tests {
    use super::parse_text;

    #[test]
    fn whole_numbers_with_a_unit_become_milliseconds() {
        assert_eq!(parse_text("250ms"), Ok(250));
        assert_eq!(parse_text("5s"), Ok(5_000));
        assert_eq!(parse_text("2min"), Ok(120_000));
        assert_eq!(parse_text("1h"), Ok(3_600_000));
        assert_eq!(parse_text("1_500ms"), Ok(1_500));
        assert_eq!(parse_text("2147483647ms"), Ok(2_147_483_647));
        assert_eq!(parse_text("596h"), Ok(2_145_600_000));
    }

    #[test]
    fn a_fraction_is_refused_with_its_value_in_milliseconds() {
        assert!(parse_text("1.5s").unwrap_err().contains("\"1500ms\""));
        assert!(parse_text("0.25min").unwrap_err().contains("\"15000ms\""));
        assert!(!parse_text("1.5ms").unwrap_err().contains("write"));
    }

    #[test]
    fn what_postgres_cannot_express_is_refused() {
        for text in [
            "",
            "5",
            "s",
            "0s",
            "500us",
            "1.5s",
            "5m",
            "2147483648ms",
            "597h",
            "99999999999999999999s",
            "-5s",
            "5 parsecs",
        ] {
            assert!(parse_text(text).is_err(), "{text:?} was accepted");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_text(text in "\\PC{0,24}") {
            let _ = parse_text(&text);
        }

        #[test]
        fn accepts_every_whole_number_with_a_unit_that_postgres_can_express(
            count in 1u64..=3_000_000_000,
            unit in 0usize..4,
            separator in "[ ]{0,2}",
        ) {
            let (name, millis) = super::UNITS[unit];
            let text = format!("{count}{separator}{name}");
            match count.checked_mul(millis).filter(|&total| total <= super::MAX_MILLIS) {
                Some(total) => proptest::prop_assert_eq!(parse_text(&text), Ok(total)),
                None => proptest::prop_assert!(parse_text(&text).is_err()),
            }
        }

        #[test]
        fn accepts_nothing_outside_the_grammar(text in "[0-9_. a-z\\-µ]{0,12}") {
            if let Ok(total) = parse_text(&text) {
                // Accepted: digits (with `_` separators), optional spaces, a unit.
                let compact: String = text.chars().filter(|c| *c != '_').collect();
                let digits: String = compact.chars().take_while(char::is_ascii_digit).collect();
                let unit = compact[digits.len()..].trim_start();
                let millis = super::UNITS
                    .iter()
                    .find(|(name, _)| *name == unit)
                    .map(|&(_, millis)| millis);
                proptest::prop_assert!(millis.is_some(), "{text:?} accepted with unit {unit:?}");
                proptest::prop_assert!(!digits.is_empty());
                let count: u64 = digits.parse().unwrap();
                proptest::prop_assert_eq!(Some(total), count.checked_mul(millis.unwrap()));
                proptest::prop_assert!((1..=super::MAX_MILLIS).contains(&total));
            }
        }
    }
}
