//! Parsing the attribute's arguments.
//!
//! Every argument is `name` or `name = <expression>`, and has one row in
//! [`ARGUMENTS`]: its name, whether it is a flag or takes a value (with its
//! forms), what it is for when a required one is missing, and the words a
//! user may write for it. The messages about arguments (an unknown one, a
//! missing one, one in the wrong shape) are derived from that table, and a
//! value's message shows the forms of its row (a timeout's, those of the
//! shared duration grammar). Each row's setter checks its value on its own
//! (`ns` in `namespace`, `timeout` in `timeout`); a second
//! occurrence is refused; a missing required one is reported. Errors are
//! collected rather than returned at the first one, so a user sees every
//! mistake in one build. The rules across arguments (`skip` with `timeout`,
//! say) are `valid`'s: here each argument is kept as given, with where and
//! in which order.

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Ident, Lit, Path, Token};

use crate::errors::Errors;
use crate::forms::{self, Form};
use crate::namespace::{self, NamespaceArg};
use crate::{permits, suggest, timeout};

/// The arguments of one `#[advisory_lock(...)]`, each checked on its own.
pub(crate) struct Args {
    pub(crate) namespace: NamespaceArg,
    pub(crate) keys: KeyArg,
    pub(crate) shared: bool,
    /// How to wait, as given; `valid::wait` reads these four together.
    pub(crate) timeout: Option<Given<Timeout>>,
    pub(crate) no_wait: Option<Given>,
    pub(crate) skip: Option<Given>,
    pub(crate) savepoint: Option<Given>,
    /// `permits = 4`: a permit of a semaphore instead of a lock.
    pub(crate) permits: Option<Given<u32>>,
    /// `tx = name`: the transaction parameter, when given.
    pub(crate) tx: Option<Ident>,
    /// The path of the pglock crate: `::pglock` unless `crate = "..."`.
    pub(crate) krate: Path,
}

/// An argument as given: its name (from its row), where the name was
/// written, its place among the arguments, and its value.
#[derive(Clone, Copy)]
pub(crate) struct Given<T = ()> {
    pub(crate) name: &'static str,
    pub(crate) span: Span,
    pub(crate) position: usize,
    pub(crate) value: T,
}

/// `timeout = "5s"`, in milliseconds, and where the value was written.
#[derive(Clone, Copy)]
pub(crate) struct Timeout {
    pub(crate) millis: u64,
    pub(crate) span: Span,
}

pub(crate) enum KeyArg {
    /// `key = expr`.
    One(Expr),
    /// `key = [a, b, ...]`: several keys, taken in ascending id order.
    Many(Vec<Expr>),
}

/// One argument the attribute accepts.
struct Argument {
    name: &'static str,
    takes: Takes,
    /// What the argument is for, said when it is not given ("say what to
    /// lock"), before its forms; `None` when it may be left out.
    required: Option<&'static str>,
    /// Words a user may write for this argument, which edit distance would
    /// not find; an unknown argument among them is reported as this one.
    synonyms: &'static [&'static str],
}

enum Takes {
    /// `name` alone; the setter records where it was written.
    Flag { set: fn(&mut Builder, Given) },
    /// `name = value`, written as one of `forms` (the first is the
    /// example); the setter checks the value and records it.
    Value {
        forms: &'static [Form],
        set: fn(&mut Builder, Given<Expr>) -> syn::Result<()>,
    },
}

const KEY: Form = Form {
    written: "key = invoice_id",
    meaning: Some("any expression over the parameters whose type implements `pglock::LockKey`"),
};
const KEYS: Form = Form {
    written: "key = [from, to]",
    meaning: Some("several keys"),
};
/// The modes `mode = ...` accepts, and whether each is shared; the first is
/// the default.
const MODES: &[(&str, bool)] = &[("exclusive", false), ("shared", true)];
const MODE: Form = Form {
    written: "mode = shared",
    meaning: None,
};
const TIMEOUT: Form = Form {
    written: "timeout = \"5s\"",
    meaning: None,
};
const TX: Form = Form {
    written: "tx = conn",
    meaning: Some("for a parameter `conn: &mut sqlx::Transaction<'_, Postgres>`"),
};
const CRATE: Form = Form {
    written: "crate = \"::my_pglock\"",
    meaning: None,
};

/// Every argument, in the order the messages list them.
const ARGUMENTS: &[Argument] = &[
    Argument {
        name: "ns",
        takes: Takes::Value {
            forms: namespace::FORMS,
            set: |builder, given| {
                builder.namespace = Some(given.try_map(namespace::parse)?);
                Ok(())
            },
        },
        required: Some("name the lock namespace"),
        synonyms: &["namespace", "name", "family", "lock"],
    },
    Argument {
        name: "key",
        takes: Takes::Value {
            forms: &[KEY, KEYS],
            set: |builder, given| {
                builder.keys = Some(given.try_map(keys)?);
                Ok(())
            },
        },
        required: Some("say what to lock"),
        synonyms: &["keys", "id", "ids"],
    },
    Argument {
        name: "mode",
        takes: Takes::Value {
            forms: &[MODE],
            set: |builder, given| {
                builder.shared = Some(given.try_map(shared)?);
                Ok(())
            },
        },
        required: None,
        // A bare mode word (`shared`) is suggested as `mode = shared`, from
        // `MODES`.
        synonyms: &[],
    },
    Argument {
        name: "timeout",
        takes: Takes::Value {
            forms: &[TIMEOUT],
            set: |builder, given| {
                builder.timeout = Some(given.try_map(|value| {
                    let span = value.span();
                    let millis = timeout::parse(value)?;
                    Ok(Timeout { millis, span })
                })?);
                Ok(())
            },
        },
        required: None,
        synonyms: &["lock_timeout", "wait", "max_wait"],
    },
    Argument {
        name: "no_wait",
        takes: Takes::Flag {
            set: |builder, given| builder.no_wait = Some(given),
        },
        required: None,
        synonyms: &["nowait", "try", "try_lock", "no_block", "nonblocking"],
    },
    Argument {
        name: "skip",
        takes: Takes::Flag {
            set: |builder, given| builder.skip = Some(given),
        },
        required: None,
        synonyms: &["skip_locked", "skip_if_busy", "or_skip"],
    },
    Argument {
        name: "savepoint",
        takes: Takes::Flag {
            set: |builder, given| builder.savepoint = Some(given),
        },
        required: None,
        synonyms: &["in_savepoint", "save_point"],
    },
    Argument {
        name: "permits",
        takes: Takes::Value {
            forms: permits::FORMS,
            set: |builder, given| {
                builder.permits = Some(given.try_map(permits::parse)?);
                Ok(())
            },
        },
        required: None,
        synonyms: &["semaphore", "slots", "max_holders", "concurrency"],
    },
    Argument {
        name: "tx",
        takes: Takes::Value {
            forms: &[TX],
            set: |builder, given| {
                builder.tx = Some(given.try_map(transaction)?);
                Ok(())
            },
        },
        required: None,
        synonyms: &["transaction", "txn", "conn", "connection", "executor"],
    },
    Argument {
        name: "crate",
        takes: Takes::Value {
            forms: &[CRATE],
            set: |builder, given| {
                builder.krate = Some(given.try_map(krate)?);
                Ok(())
            },
        },
        required: None,
        synonyms: &["krate", "pglock", "crate_path"],
    },
];

impl<T> Given<T> {
    /// Which argument, where and in which place, without its value.
    pub(crate) fn place(&self) -> Given {
        Given {
            name: self.name,
            span: self.span,
            position: self.position,
            value: (),
        }
    }

    fn try_map<U>(self, check: impl FnOnce(T) -> syn::Result<U>) -> syn::Result<Given<U>> {
        Ok(Given {
            name: self.name,
            span: self.span,
            position: self.position,
            value: check(self.value)?,
        })
    }
}

/// "accepted arguments are `ns`, `key`, ... and `crate`".
fn accepted_arguments() -> String {
    let names = ARGUMENTS
        .iter()
        .map(|argument| format!("`{}`", argument.name));
    format!("accepted arguments are {}", forms::listed(names, "and"))
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
    format!("accepted modes are {}", forms::listed(modes, "and"))
}

/// "missing `key`: say what to lock, such as `key = invoice_id` (...) or ...".
fn missing(argument: &Argument, purpose: &str) -> String {
    match argument.takes {
        Takes::Value { forms, .. } => format!(
            "missing `{}`: {purpose}, such as {}",
            argument.name,
            forms::described(forms)
        ),
        Takes::Flag { .. } => format!("missing `{}`: {purpose}", argument.name),
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
/// duplicate can point at the guilty one.
#[derive(Default)]
struct Builder {
    /// Every argument name given, valid or not: a second one is a duplicate,
    /// and a missing required one is reported only when it was not given.
    seen: Vec<String>,
    /// Arguments suggested for unknown ones, or given in a wrong form: not
    /// to be reported missing as well.
    suggested: Vec<String>,
    errors: Errors,
    namespace: Option<Given<NamespaceArg>>,
    keys: Option<Given<KeyArg>>,
    shared: Option<Given<bool>>,
    timeout: Option<Given<Timeout>>,
    no_wait: Option<Given>,
    skip: Option<Given>,
    savepoint: Option<Given>,
    permits: Option<Given<u32>>,
    tx: Option<Given<Ident>>,
    krate: Option<Given<Path>>,
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
                    Takes::Value { forms, .. } => format!("write {}", forms::written(forms)),
                };
                // Given, if in the wrong form: don't also say it's missing.
                self.suggested.push(key.to_owned());
                return Err(syn::Error::new(
                    group.span(),
                    format!("unexpected parentheses after `{key}`: {hint}"),
                ));
            }
        };
        if self.seen.iter().any(|seen| seen == key) {
            return Err(syn::Error::new(
                span,
                format!("duplicate argument `{key}`: it is given once already"),
            ));
        }
        let given = Given {
            name: argument.name,
            span,
            position: self.seen.len(),
            value: (),
        };
        self.seen.push(key.to_owned());
        match (&argument.takes, value) {
            (Takes::Flag { set }, None) => {
                set(self, given);
                Ok(())
            }
            (Takes::Flag { .. }, Some(expr)) => Err(syn::Error::new(
                expr.span(),
                format!(
                    "`{key}` is a flag and takes no value: write `{key}` alone, or leave it out"
                ),
            )),
            (Takes::Value { set, .. }, Some(expr)) => set(self, given.try_map(|()| Ok(expr))?),
            (Takes::Value { forms, .. }, None) => Err(syn::Error::new(
                span,
                format!("`{key}` needs a value, such as `{}`", forms[0].written),
            )),
        }
    }

    /// Every required argument is given, and each given one is valid.
    fn build(self) -> syn::Result<Args> {
        let mut errors = self.errors;
        let given = |name: &str| {
            self.seen.iter().any(|seen| seen == name)
                || self.suggested.iter().any(|suggested| suggested == name)
        };
        for argument in ARGUMENTS {
            if let Some(purpose) = argument.required
                && !given(argument.name)
            {
                errors.push(syn::Error::new(
                    Span::call_site(),
                    missing(argument, purpose),
                ));
            }
        }
        errors.finish()?;
        // No error was recorded, so every argument given has its value.
        Ok(Args {
            namespace: self.namespace.expect("checked above").value,
            keys: self.keys.expect("checked above").value,
            shared: self.shared.is_some_and(|shared| shared.value),
            timeout: self.timeout,
            no_wait: self.no_wait,
            skip: self.skip,
            savepoint: self.savepoint,
            permits: self.permits,
            tx: self.tx.map(|tx| tx.value),
            krate: self
                .krate
                .map(|krate| krate.value)
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

fn keys(value: Expr) -> syn::Result<KeyArg> {
    match value {
        Expr::Array(array) if array.attrs.is_empty() => {
            if array.elems.is_empty() {
                return Err(syn::Error::new(
                    array.bracket_token.span.join(),
                    format!(
                        "`key = [..]` needs at least one key, such as `{}`",
                        KEYS.written
                    ),
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
            "`mode` takes a bare word: {}, as in `{}`",
            accepted_modes(),
            MODE.written
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
        format!(
            "`tx` names the transaction parameter, such as {}",
            forms::described(&[TX])
        ),
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
                format!("`{}` is not a path: {}", text.value(), crate_forms()),
            )
        });
    }
    Err(syn::Error::new(value.span(), crate_forms()))
}

fn crate_forms() -> String {
    format!(
        "`crate` takes the path of the pglock crate as a string, such as `{}`",
        CRATE.written
    )
}

#[cfg(test)]
mod tests;
