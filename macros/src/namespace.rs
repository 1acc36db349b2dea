//! `ns = ...`: a name, a raw number, either in `pair(..)`, or the path of a
//! `static` namespace or family. A name follows the namespace-name rule of
//! `pglock_grammar::namespace`, with its words, as the runtime does; a raw
//! number must fit its key space.

use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Lit, LitInt, LitStr, Path};

use crate::forms::Form;

/// Which key space a namespace places its keys in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Space {
    /// One `bigint`.
    BigInt,
    /// Two `int4`, written `pair(..)`.
    Pair,
}

pub(crate) enum NamespaceArg {
    /// `ns = "billing:invoice"` or `ns = pair("tenant:migrate")`.
    Named { name: LitStr, space: Space },
    /// `ns = 0x7275_6e6c_9e37_79b9` or `ns = pair(0x7275_6e6c)`: the value,
    /// and the literal as written, which labels the namespace.
    Raw {
        value: u64,
        literal: LitInt,
        space: Space,
    },
    /// `ns = INVOICES`: a `static` `Namespace` or `LockFamily<K>`.
    Path(Path),
}

const NAMED: Form = Form {
    written: "ns = \"billing:invoice\"",
    meaning: Some("a name"),
};
const RAW: Form = Form {
    written: "ns = 0x7275_6e6c_9e37_79b9",
    meaning: Some("a raw 64-bit namespace"),
};
const NAMED_PAIR: Form = Form {
    written: "ns = pair(\"tenant:migrate\")",
    meaning: Some("a name, in the int4 pair key space"),
};
const RAW_PAIR: Form = Form {
    written: "ns = pair(0x7275_6e6c)",
    meaning: Some("the pair's first int4, raw"),
};
const STATIC: Form = Form {
    written: "ns = INVOICES",
    meaning: Some("the path of a `static` `pglock::Namespace` or `pglock::LockFamily<K>`"),
};

/// Every form of `ns`, in the order the messages list them.
pub(crate) const FORMS: &[Form] = &[NAMED, RAW, NAMED_PAIR, RAW_PAIR, STATIC];

/// What `pair(..)` holds: `"tenant:migrate"` of `pair("tenant:migrate")`.
fn in_pair(form: Form) -> &'static str {
    let value = form.value();
    value
        .strip_prefix("pair(")
        .and_then(|inside| inside.strip_suffix(')'))
        .unwrap_or(value)
}

/// "a string literal (`pair("tenant:migrate")`) or an integer literal for
/// the first int4 (`pair(0x7275_6e6c)`)".
fn pair_forms() -> String {
    format!(
        "a string literal (`{}`) or an integer literal for the first int4 (`{}`)",
        NAMED_PAIR.value(),
        RAW_PAIR.value()
    )
}

/// The namespace `ns = value` names.
pub(crate) fn parse(value: Expr) -> syn::Result<NamespaceArg> {
    match value {
        Expr::Lit(ExprLit { lit, .. }) if matches!(lit, Lit::Str(_) | Lit::Int(_)) => {
            literal(lit, Space::BigInt)
        }
        Expr::Call(call) if is_ident(&call.func, "pair") => {
            let mut args = call.args.into_iter();
            let (Some(arg), None) = (args.next(), args.next()) else {
                return Err(syn::Error::new(
                    call.paren_token.span.join(),
                    format!("`pair(..)` takes one argument: {}", pair_forms()),
                ));
            };
            match arg {
                Expr::Lit(ExprLit { lit, .. }) if matches!(lit, Lit::Str(_) | Lit::Int(_)) => {
                    literal(lit, Space::Pair)
                }
                other => Err(syn::Error::new(
                    other.span(),
                    format!(
                        "`pair(..)` takes {}; a `static` namespace carries its own key space, \
                         pass it as `ns = PATH`",
                        pair_forms()
                    ),
                )),
            }
        }
        Expr::Path(path) if path.qself.is_none() && path.attrs.is_empty() => {
            Ok(NamespaceArg::Path(path.path))
        }
        Expr::Unary(syn::ExprUnary {
            op: syn::UnOp::Neg(_),
            ..
        }) => Err(syn::Error::new(
            value.span(),
            format!(
                "a raw namespace is a 64-bit number written as a non-negative integer literal, \
                 such as `{}`",
                RAW.written
            ),
        )),
        other => Err(syn::Error::new(
            other.span(),
            format!("`ns` takes {}", crate::forms::described(FORMS)),
        )),
    }
}

/// A namespace written as a literal: a name to hash, or a raw number.
fn literal(literal: Lit, space: Space) -> syn::Result<NamespaceArg> {
    match literal {
        Lit::Str(name) => {
            pglock_grammar::namespace::check(&name.value())
                .map_err(|refused| syn::Error::new(name.span(), refused.message()))?;
            Ok(NamespaceArg::Named { name, space })
        }
        Lit::Int(literal) => raw(literal, space),
        _ => unreachable!("only string and integer literals reach here"),
    }
}

fn raw(literal: LitInt, space: Space) -> syn::Result<NamespaceArg> {
    let (kind, max, max_text, example) = match space {
        Space::BigInt => (
            "a raw namespace is a 64-bit number",
            u64::MAX,
            "0xffff_ffff_ffff_ffff",
            RAW.value(),
        ),
        Space::Pair => (
            "a raw `pair(..)` namespace is the first int4 of the pair, a 32-bit number",
            u64::from(u32::MAX),
            "0xffff_ffff",
            in_pair(RAW_PAIR),
        ),
    };
    if !literal.suffix().is_empty() {
        return Err(syn::Error::new(
            literal.span(),
            format!("{kind}: write it without a type suffix, such as `{example}`"),
        ));
    }
    match literal.base10_parse::<u64>() {
        Ok(value) if value <= max => Ok(NamespaceArg::Raw {
            value,
            literal,
            space,
        }),
        _ => Err(syn::Error::new(
            literal.span(),
            format!("{kind}: `{literal}` does not fit; the largest is `{max_text}`"),
        )),
    }
}

fn is_ident(expr: &Expr, name: &str) -> bool {
    matches!(expr, Expr::Path(path) if path.qself.is_none() && path.path.is_ident(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(form: Form) -> syn::Result<NamespaceArg> {
        parse(syn::parse_str(form.value()).unwrap())
    }

    #[test]
    fn every_form_the_messages_show_is_accepted_as_it_says() {
        assert!(matches!(
            parsed(NAMED),
            Ok(NamespaceArg::Named {
                space: Space::BigInt,
                ..
            })
        ));
        assert!(matches!(
            parsed(RAW),
            Ok(NamespaceArg::Raw {
                space: Space::BigInt,
                ..
            })
        ));
        assert!(matches!(
            parsed(NAMED_PAIR),
            Ok(NamespaceArg::Named {
                space: Space::Pair,
                ..
            })
        ));
        assert!(matches!(
            parsed(RAW_PAIR),
            Ok(NamespaceArg::Raw {
                space: Space::Pair,
                ..
            })
        ));
        assert!(matches!(parsed(STATIC), Ok(NamespaceArg::Path(_))));
        assert_eq!(in_pair(RAW_PAIR), "0x7275_6e6c");
    }

    #[test]
    fn a_name_is_refused_in_the_runtime_s_words() {
        let error = parse(syn::parse_quote!("a */ b")).err().unwrap();
        assert_eq!(
            error.to_string(),
            pglock_grammar::namespace::NameError::CommentEnd.message()
        );
    }
}
