//! `permits = 4`: the attribute takes a permit of a semaphore of that many
//! permits instead of a lock. An integer literal from 1 to 1024 (the
//! runtime's `pglock::MAX_PERMITS`), checked at compile time.

use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ExprUnary, Lit, UnOp};

use crate::forms::{self, Form};

/// The most permits a semaphore may have, as the runtime's `MAX_PERMITS`.
pub(crate) const MAX: u64 = 1024;

pub(crate) const FORMS: &[Form] = &[Form {
    written: "permits = 4",
    meaning: Some("a semaphore: at most 4 transactions hold a permit at once"),
}];

/// "`permits` takes an integer literal from 1 to 1024, such as ...".
fn accepted() -> String {
    format!(
        "`permits` takes an integer literal from 1 to {MAX}, checked at compile time, such as {}",
        forms::described(FORMS)
    )
}

/// The number of permits.
pub(crate) fn parse(value: Expr) -> syn::Result<u32> {
    match &value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => {
            let number = int
                .base10_parse::<u64>()
                .ok()
                .filter(|n| (1..=MAX).contains(n));
            match number {
                Some(number) => Ok(number as u32),
                None => Err(syn::Error::new(
                    int.span(),
                    format!("`permits = {int}` is not usable: {}", accepted()),
                )),
            }
        }
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_), ..
        }) => Err(syn::Error::new(
            value.span(),
            format!("a semaphore has at least one permit: {}", accepted()),
        )),
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) if text.value().trim().parse::<u64>().is_ok() => Err(syn::Error::new(
            text.span(),
            format!(
                "write the number without quotes: `permits = {}`",
                text.value().trim()
            ),
        )),
        other => Err(syn::Error::new(
            other.span(),
            format!(
                "{}; for a number known only at run time, call \
                 `pglock::Namespace::semaphore(&key, permits)` in the body",
                accepted()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<u32, String> {
        parse(syn::parse_str(text).unwrap()).map_err(|error| error.to_string())
    }

    #[test]
    fn accepts_1_to_1024_and_says_the_forms_otherwise() {
        assert_eq!(parsed("1"), Ok(1));
        assert_eq!(parsed("1024"), Ok(1024));
        assert_eq!(parsed("4u32"), Ok(4));
        for refused in ["0", "1025", "-1", "n", "1.5", "\"4\""] {
            let message = parsed(refused).unwrap_err();
            assert!(
                message.contains("permits = 4") || message.contains("without quotes"),
                "{refused}: {message}"
            );
        }
        assert!(parsed("\"4\"").unwrap_err().contains("`permits = 4`"));
    }
}
