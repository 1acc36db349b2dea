//! `timeout = "5s"`: a string literal in the duration grammar every pglock
//! reader shares (`pglock_grammar::duration`), checked at compile time
//! against what PostgreSQL's `lock_timeout` can express (whole milliseconds,
//! from 1 to `i32::MAX`).

use pglock_grammar::duration::{self, FORMS, UNIT_NAMES};
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Lit};

/// PostgreSQL's largest `lock_timeout`, in milliseconds.
const MAX_MILLIS: u64 = i32::MAX as u64;

/// The timeout in milliseconds.
pub(crate) fn parse(value: Expr) -> syn::Result<u64> {
    let literal = match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) => text,
        // `timeout = 5s` lexes as the number 5 with the suffix `s`, and
        // `timeout = 1.5s` as 1.5 with `s`.
        Expr::Lit(ExprLit {
            lit: number @ (Lit::Int(_) | Lit::Float(_)),
            ..
        }) => {
            let (written, suffix) = match &number {
                Lit::Int(int) => (int.to_string(), int.suffix().to_owned()),
                Lit::Float(float) => (float.to_string(), float.suffix().to_owned()),
                _ => unreachable!("only numbers reach here"),
            };
            let message = if suffix.is_empty() {
                format!(
                    "`timeout = {written}` has no unit: write it as a string, such as \
                     `timeout = \"{written}s\"` or `timeout = \"{written}ms\"`; {UNIT_NAMES}"
                )
            } else {
                format!("write the timeout as a string: `timeout = \"{written}\"`")
            };
            return Err(syn::Error::new(number.span(), message));
        }
        other => {
            return Err(syn::Error::new(
                other.span(),
                format!(
                    "`timeout` takes a string literal, checked at compile time: {FORMS}; \
                     for a timeout known only at run time, call \
                     `pglock::Namespace::lock(..).timeout(..)` in the body"
                ),
            ));
        }
    };
    lock_timeout(&literal.value()).map_err(|message| syn::Error::new(literal.span(), message))
}

/// The milliseconds `text` writes, if PostgreSQL's `lock_timeout` can wait
/// that long.
fn lock_timeout(text: &str) -> Result<u64, String> {
    let too_long = || {
        format!(
            "{text:?} is longer than PostgreSQL's largest `lock_timeout`, {MAX_MILLIS}ms \
             (about 24.8 days, or \"596h\"); leave `timeout` out to wait without a cap"
        )
    };
    match duration::parse_millis(text) {
        Ok(0) => Err(format!(
            "{text:?} is zero, which PostgreSQL reads as \"wait forever\": use `no_wait` to \
             not wait at all, or leave `timeout` out to wait without a cap"
        )),
        Ok(millis) if millis > MAX_MILLIS => Err(too_long()),
        Ok(millis) => Ok(millis),
        Err(refused) if refused.is_too_long() => Err(too_long()),
        Err(refused) => Err(refused.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::lock_timeout;

    // The grammar is tested where it is defined; here, only the bounds of
    // `lock_timeout`.

    #[test]
    fn from_one_millisecond_to_postgres_largest_lock_timeout() {
        assert_eq!(lock_timeout("1ms"), Ok(1));
        assert_eq!(lock_timeout("2147483647ms"), Ok(2_147_483_647));
        assert_eq!(lock_timeout("596h"), Ok(2_145_600_000));
        assert_eq!(lock_timeout("1.5s"), Ok(1_500));
    }

    #[test]
    fn zero_is_refused_as_wait_forever() {
        assert!(lock_timeout("0s").unwrap_err().contains("wait forever"));
    }

    #[test]
    fn longer_than_postgres_can_wait_is_refused() {
        for text in ["2147483648ms", "597h", "99999999999999999999999s"] {
            assert!(
                lock_timeout(text)
                    .unwrap_err()
                    .contains("largest `lock_timeout`"),
                "{text:?}"
            );
        }
    }

    #[test]
    fn what_the_grammar_refuses_is_refused_in_its_words() {
        assert_eq!(
            lock_timeout("5m").unwrap_err(),
            pglock_grammar::duration::parse_millis("5m")
                .unwrap_err()
                .to_string()
        );
    }
}
