//! Parsing the attribute's arguments.
//!
//! Every argument is `name` or `name = <expression>`, and has one row in
//! [`ARGUMENTS`]: its name, whether it is a flag or takes a value (with an
//! example), what to say when a required one is missing, and the words a
//! user may write for it. Every message that lists or shows the arguments is
//! derived from that table. Each row's setter checks its value on its own;
//! a second occurrence is refused; then [`Builder::build`] applies the rules
//! across arguments. Errors are collected rather than returned at the first
//! one, so a user sees every mistake in one build.

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Ident, Lit, LitInt, LitStr, Path, Token};

use crate::errors::Errors;
use crate::{suggest, timeout};

/// The arguments of one `#[advisory_lock(...)]`, checked.
pub(crate) struct Args {
    pub(crate) namespace: NamespaceArg,
    pub(crate) keys: KeyArg,
    pub(crate) shared: bool,
    pub(crate) wait: Wait,
    pub(crate) savepoint: bool,
    /// `tx = name`: the transaction parameter, when given.
    pub(crate) tx: Option<Ident>,
    /// The path of the pglock crate: `::pglock` unless `crate = "..."`.
    pub(crate) krate: Path,
}

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

pub(crate) enum KeyArg {
    /// `key = expr`.
    One(Expr),
    /// `key = [a, b, ...]`: several keys, taken in ascending id order.
    Many(Vec<Expr>),
}

pub(crate) enum Wait {
    /// Wait under the caller's own `lock_timeout`.
    Unbounded,
    /// `timeout = "5s"`: wait at most this many milliseconds.
    AtMost { millis: u64, span: Span },
    /// `no_wait`: try once, fail with `pglock::Error::Busy`.
    Never,
    /// `skip`: try once, return `Ok(None)` when busy.
    Skip,
}

/// One argument the attribute accepts.
struct Argument {
    name: &'static str,
    takes: Takes,
    /// What to say when the argument is not given; `None` when it may be
    /// left out.
    missing: Option<&'static str>,
    /// Words a user may write for this argument, which edit distance would
    /// not find; an unknown argument among them is reported as this one.
    synonyms: &'static [&'static str],
}

enum Takes {
    /// `name` alone; the setter records where it was written.
    Flag { set: fn(&mut Builder, Span) },
    /// `name = value`, such as `example`; the setter checks the value and
    /// records it with the span of the name.
    Value {
        example: &'static str,
        /// Every form the value takes, when one example can't show them.
        forms: Option<&'static str>,
        set: fn(&mut Builder, Span, Expr) -> syn::Result<()>,
    },
}

/// Every argument, in the order the messages list them.
const ARGUMENTS: &[Argument] = &[
    Argument {
        name: "ns",
        takes: Takes::Value {
            example: "ns = \"billing:invoice\"",
            forms: Some("`ns = \"...\"`, `ns = 0x...` or `ns = pair(...)`"),
            set: |builder, span, value| {
                builder.namespace = Some((span, namespace(value)?));
                Ok(())
            },
        },
        missing: Some(
            "missing `ns`: name the lock namespace, such as `ns = \"billing:invoice\"`, \
             an integer literal (`ns = 0x7275_6e6c_9e37_79b9`), `pair(..)` of either \
             for the int4 pair key space, or the path of a `static` `pglock::Namespace` \
             or `pglock::LockFamily<K>`",
        ),
        synonyms: &["namespace", "name", "family", "lock"],
    },
    Argument {
        name: "key",
        takes: Takes::Value {
            example: "key = invoice_id",
            forms: None,
            set: |builder, span, value| {
                builder.keys = Some((span, keys(value)?));
                Ok(())
            },
        },
        missing: Some(
            "missing `key`: say what to lock, such as `key = invoice_id` (any expression \
             over the parameters whose type implements `pglock::LockKey`), or \
             `key = [from, to]` for several keys",
        ),
        synonyms: &["keys", "id", "ids"],
    },
    Argument {
        name: "mode",
        takes: Takes::Value {
            example: "mode = shared",
            forms: None,
            set: |builder, span, value| {
                builder.shared = Some((span, shared(value)?));
                Ok(())
            },
        },
        missing: None,
        // A bare mode word (`shared`) is suggested as `mode = shared`, from
        // `MODES`.
        synonyms: &[],
    },
    Argument {
        name: "timeout",
        takes: Takes::Value {
            example: "timeout = \"5s\"",
            forms: None,
            set: |builder, span, value| {
                let value_span = value.span();
                builder.timeout = Some((span, timeout::parse(value)?, value_span));
                Ok(())
            },
        },
        missing: None,
        synonyms: &["lock_timeout", "wait", "max_wait"],
    },
    Argument {
        name: "no_wait",
        takes: Takes::Flag {
            set: |builder, span| builder.no_wait = Some(span),
        },
        missing: None,
        synonyms: &["nowait", "try", "try_lock", "no_block", "nonblocking"],
    },
    Argument {
        name: "skip",
        takes: Takes::Flag {
            set: |builder, span| builder.skip = Some(span),
        },
        missing: None,
        synonyms: &["skip_locked", "skip_if_busy", "or_skip"],
    },
    Argument {
        name: "savepoint",
        takes: Takes::Flag {
            set: |builder, span| builder.savepoint = Some(span),
        },
        missing: None,
        synonyms: &["in_savepoint", "save_point"],
    },
    Argument {
        name: "tx",
        takes: Takes::Value {
            example: "tx = conn",
            forms: None,
            set: |builder, span, value| {
                builder.tx = Some((span, transaction(value)?));
                Ok(())
            },
        },
        missing: None,
        synonyms: &["transaction", "txn", "conn", "connection", "executor"],
    },
    Argument {
        name: "crate",
        takes: Takes::Value {
            example: "crate = \"::my_pglock\"",
            forms: None,
            set: |builder, span, value| {
                builder.krate = Some((span, krate(value)?));
                Ok(())
            },
        },
        missing: None,
        synonyms: &["krate", "pglock", "crate_path"],
    },
];

/// The modes `mode = ...` accepts, and whether each is shared; the first is
/// the default.
const MODES: &[(&str, bool)] = &[("exclusive", false), ("shared", true)];

/// "accepted arguments are `ns`, `key`, ... and `crate`".
fn accepted_arguments() -> String {
    let names = ARGUMENTS
        .iter()
        .map(|argument| format!("`{}`", argument.name));
    format!("accepted arguments are {}", listed(names))
}

/// "accepted modes are `exclusive` (the default) and `shared`".
fn accepted_modes() -> String {
    let modes = MODES
        .iter()
        .enumerate()
        .map(|(index, (name, _))| match index {
            0 => format!("`{name}` (the default)"),
            _ => format!("`{name}`"),
        });
    format!("accepted modes are {}", listed(modes))
}

/// "a", "a and b", "a, b and c".
fn listed(items: impl Iterator<Item = String>) -> String {
    let mut items: Vec<String> = items.collect();
    let last = items.pop().unwrap_or_default();
    if items.is_empty() {
        last
    } else {
        format!("{} and {last}", items.join(", "))
    }
}

/// Parses the attribute's arguments; every error is in the `Err`.
pub(crate) fn parse(args: TokenStream) -> syn::Result<Args> {
    let raw = Punctuated::<RawArg, Token![,]>::parse_terminated.parse2(args)?;
    let mut builder = Builder::default();
    for arg in raw {
        if let Err(error) = builder.set(arg) {
            builder.errors.push(error);
        }
    }
    builder.build()
}

/// One argument as written: `name`, `name = value`, or `name(...)` (which
/// is refused, with a hint).
struct RawArg {
    name: Ident,
    value: RawValue,
}

enum RawValue {
    None,
    Expr(Expr),
    /// `name(...)`: the tokens, to report them.
    List(proc_macro2::Group),
}

impl Parse for RawArg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        // `crate` is a keyword; `parse_any` takes it as an identifier.
        let lookahead = input.lookahead1();
        if !lookahead.peek(Ident::peek_any) {
            let mut error = lookahead.error();
            error.combine(syn::Error::new(
                error.span(),
                format!("expected an argument name: {}", accepted_arguments()),
            ));
            return Err(error);
        }
        let name = Ident::parse_any(input)?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            if input.is_empty() || input.peek(Token![,]) {
                return Err(syn::Error::new(
                    name.span(),
                    format!("`{name} =` needs a value"),
                ));
            }
            RawValue::Expr(input.parse()?)
        } else if input.peek(syn::token::Paren) {
            RawValue::List(input.parse()?)
        } else {
            RawValue::None
        };
        Ok(RawArg { name, value })
    }
}

/// Arguments seen so far, each with the span of its name so that a
/// duplicate and a contradiction can point at the guilty one.
#[derive(Default)]
struct Builder {
    /// Every argument name given, valid or not: a second one is a duplicate,
    /// and a missing required one is reported only when it was not given.
    seen: Vec<(String, Span)>,
    /// Arguments suggested for unknown ones, or given in a wrong form: not
    /// to be reported missing as well.
    suggested: Vec<String>,
    errors: Errors,
    namespace: Option<(Span, NamespaceArg)>,
    keys: Option<(Span, KeyArg)>,
    shared: Option<(Span, bool)>,
    timeout: Option<(Span, u64, Span)>,
    no_wait: Option<Span>,
    skip: Option<Span>,
    savepoint: Option<Span>,
    tx: Option<(Span, Ident)>,
    krate: Option<(Span, Path)>,
}

impl Builder {
    fn set(&mut self, arg: RawArg) -> syn::Result<()> {
        let RawArg { name, value } = arg;
        let span = name.span();
        let key = name.to_string();
        let key = key.as_str();
        let Some(argument) = ARGUMENTS.iter().find(|argument| argument.name == key) else {
            let suggestion = suggest_argument(key);
            if let Some(argument) = &suggestion {
                // Reported as a typo of `argument`: don't also say it's missing.
                self.suggested.push(argument.clone());
            }
            return Err(unknown_argument(&name, suggestion.as_deref()));
        };
        let value = match value {
            RawValue::None => None,
            RawValue::Expr(expr) => Some(expr),
            RawValue::List(group) => {
                let hint = match argument.takes {
                    Takes::Flag { .. } => format!("`{key}` is a flag: write `{key}` alone"),
                    Takes::Value {
                        forms: Some(forms), ..
                    } => format!("write {forms}"),
                    Takes::Value { example, .. } => {
                        format!("write `{key} = ...`, such as `{example}`")
                    }
                };
                // Given, if in the wrong form: don't also say it's missing.
                self.suggested.push(key.to_owned());
                return Err(syn::Error::new(
                    group.span(),
                    format!("unexpected parentheses after `{key}`: {hint}"),
                ));
            }
        };
        if self.seen.iter().any(|(seen, _)| seen == key) {
            return Err(syn::Error::new(
                span,
                format!("duplicate argument `{key}`: it is given once already"),
            ));
        }
        self.seen.push((key.to_owned(), span));
        match (&argument.takes, value) {
            (Takes::Flag { set }, None) => {
                set(self, span);
                Ok(())
            }
            (Takes::Flag { .. }, Some(expr)) => Err(syn::Error::new(
                expr.span(),
                format!(
                    "`{key}` is a flag and takes no value: write `{key}` alone, or leave it out"
                ),
            )),
            (Takes::Value { set, .. }, Some(expr)) => set(self, span, expr),
            (Takes::Value { example, .. }, None) => Err(syn::Error::new(
                span,
                format!("`{key}` needs a value, such as `{example}`"),
            )),
        }
    }

    /// The rules across arguments.
    fn build(self) -> syn::Result<Args> {
        let mut errors = self.errors;
        let given = |name: &str| {
            self.seen.iter().any(|(seen, _)| seen == name)
                || self.suggested.iter().any(|suggested| suggested == name)
        };
        for argument in ARGUMENTS {
            if let Some(missing) = argument.missing
                && !given(argument.name)
            {
                errors.push(syn::Error::new(Span::call_site(), missing));
            }
        }
        // The later of two contradicting arguments is the guilty one.
        let position = |name: &str| self.seen.iter().position(|(seen, _)| seen == name);
        let contradictions = [
            (
                "no_wait",
                "timeout",
                "`no_wait` tries the lock once and never waits, `timeout` bounds a wait; keep one of them",
            ),
            (
                "skip",
                "timeout",
                "`skip` tries the lock once and never waits, `timeout` bounds a wait; keep one of them",
            ),
            (
                "no_wait",
                "skip",
                "on a busy lock `no_wait` fails with `pglock::Error::Busy` and `skip` returns `Ok(None)`; keep the one you mean",
            ),
            (
                "no_wait",
                "savepoint",
                "`savepoint` guards a wait, and `no_wait` never waits; remove `savepoint`",
            ),
            (
                "skip",
                "savepoint",
                "`savepoint` guards a wait, and `skip` never waits; remove `savepoint`",
            ),
        ];
        for (first, second, why) in contradictions {
            if let (Some(first_at), Some(second_at)) = (position(first), position(second)) {
                let later = self.seen[first_at.max(second_at)].1;
                errors.push(syn::Error::new(
                    later,
                    format!("`{first}` and `{second}` contradict each other: {why}"),
                ));
            }
        }
        errors.finish()?;
        // No error was recorded, so every argument given has its value.
        let wait = match (self.timeout, self.skip, self.no_wait) {
            (Some((_, millis, span)), _, _) => Wait::AtMost { millis, span },
            (None, Some(_), _) => Wait::Skip,
            (None, None, Some(_)) => Wait::Never,
            (None, None, None) => Wait::Unbounded,
        };
        Ok(Args {
            namespace: self.namespace.expect("checked above").1,
            keys: self.keys.expect("checked above").1,
            shared: self.shared.is_some_and(|(_, shared)| shared),
            wait,
            savepoint: self.savepoint.is_some(),
            tx: self.tx.map(|(_, tx)| tx),
            krate: self
                .krate
                .map(|(_, krate)| krate)
                .unwrap_or_else(|| syn::parse_quote!(::pglock)),
        })
    }
}

fn unknown_argument(name: &Ident, suggestion: Option<&str>) -> syn::Error {
    let written = name.to_string();
    let message = match suggestion {
        Some(suggestion) => {
            format!("unknown argument `{written}`: did you mean `{suggestion}`?")
        }
        None => format!("unknown argument `{written}`: {}", accepted_arguments()),
    };
    syn::Error::new(name.span(), message)
}

/// What an unknown argument was probably meant to be, from the table.
fn suggest_argument(written: &str) -> Option<String> {
    let arguments: Vec<(&str, &[&str])> = ARGUMENTS
        .iter()
        .map(|argument| (argument.name, argument.synonyms))
        .collect();
    let modes: Vec<&str> = MODES.iter().map(|(name, _)| *name).collect();
    suggest::argument(written, &arguments, &modes)
}

fn namespace(value: Expr) -> syn::Result<NamespaceArg> {
    match value {
        Expr::Lit(ExprLit { lit, .. }) if matches!(lit, Lit::Str(_) | Lit::Int(_)) => {
            literal_namespace(lit, Space::BigInt)
        }
        Expr::Call(call) if is_ident(&call.func, "pair") => {
            let mut args = call.args.into_iter();
            let (Some(arg), None) = (args.next(), args.next()) else {
                return Err(syn::Error::new(
                    call.paren_token.span.join(),
                    "`pair(..)` takes one argument: a string literal (`pair(\"tenant:migrate\")`) \
                     or an integer literal for the first int4 (`pair(0x7275_6e6c)`)",
                ));
            };
            match arg {
                Expr::Lit(ExprLit { lit, .. }) if matches!(lit, Lit::Str(_) | Lit::Int(_)) => {
                    literal_namespace(lit, Space::Pair)
                }
                other => Err(syn::Error::new(
                    other.span(),
                    "`pair(..)` takes a string literal (`pair(\"tenant:migrate\")`) or an \
                     integer literal for the first int4 (`pair(0x7275_6e6c)`); a `static` \
                     namespace carries its own key space, pass it as `ns = PATH`",
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
            "a raw namespace is a 64-bit number written as a non-negative integer literal, \
             such as `ns = 0x7275_6e6c_9e37_79b9`",
        )),
        other => Err(syn::Error::new(
            other.span(),
            "`ns` takes a string literal (`ns = \"billing:invoice\"`), an integer literal \
             (`ns = 0x7275_6e6c_9e37_79b9`), either of them in `pair(..)` for the int4 pair \
             key space, or the path of a `static` `pglock::Namespace` or `pglock::LockFamily<K>`",
        )),
    }
}

/// A namespace written as a literal: a name to hash, or a raw number.
fn literal_namespace(literal: Lit, space: Space) -> syn::Result<NamespaceArg> {
    match literal {
        Lit::Str(name) => {
            check_namespace_name(&name)?;
            Ok(NamespaceArg::Named { name, space })
        }
        Lit::Int(literal) => raw_namespace(literal, space),
        _ => unreachable!("only string and integer literals reach here"),
    }
}

/// A namespace name becomes part of a `/* ... */` comment in every lock
/// statement: refuse what could end or nest that comment, or hide in logs.
fn check_namespace_name(name: &LitStr) -> syn::Result<()> {
    let value = name.value();
    if value.is_empty() {
        return Err(syn::Error::new(
            name.span(),
            "the namespace name is empty: name the lock family, such as `ns = \"billing:invoice\"`",
        ));
    }
    if value.trim().is_empty() {
        return Err(syn::Error::new(
            name.span(),
            "the namespace name is only whitespace: name the lock family, such as `ns = \"billing:invoice\"`",
        ));
    }
    for forbidden in ["*/", "/*"] {
        if value.contains(forbidden) {
            return Err(syn::Error::new(
                name.span(),
                format!(
                    "a namespace name can't contain `{forbidden}`: the name is written into an \
                     SQL comment (`/* pglock ns=... */`) that `pg_stat_activity` shows, and \
                     `{forbidden}` would end or nest it; use letters, digits and `:_-.`"
                ),
            ));
        }
    }
    if let Some(control) = value.chars().find(|c| c.is_control()) {
        return Err(syn::Error::new(
            name.span(),
            format!(
                "a namespace name can't contain control characters (found {:?}): the name \
                 labels every lock in SQL comments and logs; use letters, digits and `:_-.`",
                control
            ),
        ));
    }
    Ok(())
}

fn raw_namespace(literal: LitInt, space: Space) -> syn::Result<NamespaceArg> {
    let (kind, max, max_text, example) = match space {
        Space::BigInt => (
            "a raw namespace is a 64-bit number",
            u64::MAX,
            "0xffff_ffff_ffff_ffff",
            "0x7275_6e6c_9e37_79b9",
        ),
        Space::Pair => (
            "a raw `pair(..)` namespace is the first int4 of the pair, a 32-bit number",
            u64::from(u32::MAX),
            "0xffff_ffff",
            "0x7275_6e6c",
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

fn keys(value: Expr) -> syn::Result<KeyArg> {
    match value {
        Expr::Array(array) if array.attrs.is_empty() => {
            if array.elems.is_empty() {
                return Err(syn::Error::new(
                    array.bracket_token.span.join(),
                    "`key = [..]` needs at least one key, such as `key = [from, to]`",
                ));
            }
            Ok(KeyArg::Many(array.elems.into_iter().collect()))
        }
        other => Ok(KeyArg::One(other)),
    }
}

fn shared(value: Expr) -> syn::Result<bool> {
    let mode = |word: &str| MODES.iter().find(|(name, _)| *name == word);
    match &value {
        Expr::Path(path) if path.qself.is_none() => {
            if let Some(ident) = path.path.get_ident() {
                let written = ident.to_string();
                if let Some(&(_, shared)) = mode(&written) {
                    return Ok(shared);
                }
                let names: Vec<&str> = MODES.iter().map(|(name, _)| *name).collect();
                let hint = match suggest::closest(&written, &names) {
                    Some(near) => format!(" did you mean `{near}`?"),
                    None => String::new(),
                };
                return Err(syn::Error::new(
                    ident.span(),
                    format!("unknown mode `{written}`:{hint} {}", accepted_modes()),
                ));
            }
        }
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) => {
            let value = text.value();
            if mode(&value).is_some() {
                return Err(syn::Error::new(
                    text.span(),
                    format!("write the mode without quotes: `mode = {value}`"),
                ));
            }
        }
        _ => {}
    }
    Err(syn::Error::new(
        value.span(),
        format!(
            "`mode` takes a bare word: {}, as in `mode = shared`",
            accepted_modes()
        ),
    ))
}

fn transaction(value: Expr) -> syn::Result<Ident> {
    if let Expr::Path(path) = &value
        && path.qself.is_none()
        && let Some(ident) = path.path.get_ident()
    {
        return Ok(ident.clone());
    }
    Err(syn::Error::new(
        value.span(),
        "`tx` names the transaction parameter, such as `tx = conn` for a parameter \
         `conn: &mut sqlx::Transaction<'_, Postgres>`",
    ))
}

fn krate(value: Expr) -> syn::Result<Path> {
    if let Expr::Lit(ExprLit {
        lit: Lit::Str(text),
        ..
    }) = &value
    {
        return text.parse::<Path>().map_err(|_| {
            syn::Error::new(
                text.span(),
                format!(
                    "`{}` is not a path: `crate` takes the path of the pglock crate as a \
                     string, such as `crate = \"::my_pglock\"`",
                    text.value()
                ),
            )
        });
    }
    Err(syn::Error::new(
        value.span(),
        "`crate` takes the path of the pglock crate as a string, such as `crate = \"::my_pglock\"`",
    ))
}

fn is_ident(expr: &Expr, name: &str) -> bool {
    matches!(expr, Expr::Path(path) if path.qself.is_none() && path.path.is_ident(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<&'static str> {
        ARGUMENTS.iter().map(|argument| argument.name).collect()
    }

    #[test]
    fn typos_suggest_the_nearest_argument() {
        let names = names();
        assert_eq!(suggest::closest("timout", &names), Some("timeout"));
        assert_eq!(suggest::closest("tiemout", &names), Some("timeout"));
        assert_eq!(suggest::closest("nowait", &names), Some("no_wait"));
        assert_eq!(
            suggest::closest("sheared", &["exclusive", "shared"]),
            Some("shared")
        );
        assert_eq!(suggest::closest("banana", &names), None);
    }

    #[test]
    fn synonyms_and_bare_modes_suggest_the_argument_meant() {
        assert_eq!(suggest_argument("namespace").as_deref(), Some("ns"));
        assert_eq!(suggest_argument("conn").as_deref(), Some("tx"));
        assert_eq!(suggest_argument("shared").as_deref(), Some("mode = shared"));
        assert_eq!(suggest_argument("savepont").as_deref(), Some("savepoint"));
        assert_eq!(suggest_argument("banana"), None);
    }

    #[test]
    fn the_accepted_lists_name_every_row_in_order() {
        assert_eq!(
            accepted_arguments(),
            "accepted arguments are `ns`, `key`, `mode`, `timeout`, `no_wait`, `skip`, \
             `savepoint`, `tx` and `crate`"
        );
        assert_eq!(
            accepted_modes(),
            "accepted modes are `exclusive` (the default) and `shared`"
        );
    }

    #[test]
    fn no_word_is_the_synonym_of_two_arguments_or_an_argument_itself() {
        let names = names();
        let mut synonyms: Vec<&str> = ARGUMENTS
            .iter()
            .flat_map(|argument| argument.synonyms.iter().copied())
            .collect();
        let count = synonyms.len();
        synonyms.sort_unstable();
        synonyms.dedup();
        assert_eq!(synonyms.len(), count);
        assert!(synonyms.iter().all(|synonym| !names.contains(synonym)));
    }
}
