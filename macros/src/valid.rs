//! Checks on the annotated item and on the arguments together: that the
//! item is a function with a body, what can be seen in its signature against
//! the arguments, and the rules across arguments (`no_wait` and `skip` never
//! wait, so neither goes with `timeout`, `savepoint` or the other).
//!
//! What depends on types (is this parameter a transaction, is this return
//! type a `Result` whose error converts from `pglock::Error`, is this key a
//! key) is checked again by trait bounds in `pglock::__private`, because an
//! alias such as `type DbTx<'a> = Transaction<'a, Postgres>` hides the type
//! from the macro. The syntactic checks catch the common mistakes early, with
//! a message about the attribute rather than about a trait.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{FnArg, Ident, ItemFn, Pat, ReturnType, Signature, Type};

use crate::attr::{Args, Given, KeyArg};
use crate::errors::Errors;
use crate::suggest::closest;

/// The item as a function with a body; anything else is refused, spanned
/// on the item's keyword.
pub(crate) fn function(item: TokenStream) -> syn::Result<ItemFn> {
    syn::parse2::<ItemFn>(item.clone()).map_err(|_| not_a_function(item))
}

/// The error for an attribute on something other than a function with a
/// body.
fn not_a_function(item: TokenStream) -> syn::Error {
    if let Ok(declaration) = syn::parse2::<syn::TraitItemFn>(item.clone())
        && declaration.default.is_none()
    {
        return syn::Error::new(
            declaration.sig.fn_token.span,
            "`#[advisory_lock]` goes on a function with a body: put it on the method of \
             each `impl`, not on the trait's declaration",
        );
    }
    let span = match syn::parse2::<syn::Item>(item) {
        Ok(item) => keyword_span(&item),
        Err(_) => Span::call_site(),
    };
    syn::Error::new(
        span,
        "`#[advisory_lock]` goes on an `async fn` that takes a transaction, such as \
         `async fn settle(tx: &mut sqlx::Transaction<'_, Postgres>, id: Uuid) -> Result<(), AppError>`",
    )
}

fn keyword_span(item: &syn::Item) -> Span {
    use syn::Item;
    match item {
        Item::Const(item) => item.const_token.span,
        Item::Enum(item) => item.enum_token.span,
        Item::ExternCrate(item) => item.extern_token.span,
        Item::ForeignMod(item) => item.abi.extern_token.span,
        Item::Impl(item) => item.impl_token.span,
        Item::Macro(item) => item.mac.path.span(),
        Item::Mod(item) => item.mod_token.span,
        Item::Static(item) => item.static_token.span,
        Item::Struct(item) => item.struct_token.span,
        Item::Trait(item) => item.trait_token.span,
        Item::TraitAlias(item) => item.trait_token.span,
        Item::Type(item) => item.type_token.span,
        Item::Union(item) => item.union_token.span,
        Item::Use(item) => item.use_token.span,
        other => other
            .to_token_stream()
            .into_iter()
            .next()
            .map_or_else(Span::call_site, |token| token.span()),
    }
}

/// How the lock is waited for: what the rules across arguments leave of
/// `timeout`, `no_wait` and `skip`.
pub(crate) enum Wait {
    /// Wait under the caller's own `lock_timeout`.
    Unbounded,
    /// `timeout = "5s"`: wait at most this many milliseconds (`span`: the
    /// value as written).
    AtMost { millis: u64, span: Span },
    /// `no_wait`: try once, fail with `pglock::Error::Busy`.
    Never,
    /// `skip`: try once, return `Ok(None)` when busy.
    Skip,
}

/// What the expansion needs to know about the function and the arguments
/// together.
pub(crate) struct Checked {
    pub(crate) wait: Wait,
    /// The transaction parameter as the body names it: its identifier, or
    /// `self`, with the user's span.
    pub(crate) tx: Ident,
    /// Where a type error about the transaction parameter points: the name
    /// of its type.
    pub(crate) tx_anchor: Span,
    /// Where an error about the function's error type points: `E` in a
    /// return type written `Result<T, E>`, else the return type's name.
    pub(crate) error_anchor: Span,
    /// Where an error about the `Ok` type points (for `skip`): `T` in
    /// `Result<T, E>`, else the return type's name.
    pub(crate) ok_anchor: Span,
}

pub(crate) fn check(sig: &Signature, args: &Args) -> syn::Result<Checked> {
    let mut errors = Errors::new();
    let wait = errors.check(wait(args));
    errors.check(semaphore(args));
    errors.check(check_kind(sig));
    let output = errors.check(check_output(sig, args));
    let tx = errors.check(transaction_parameter(sig, args));
    errors.finish()?;
    let wait = wait.expect("no error was recorded");
    let (tx, tx_anchor) = tx.expect("no error was recorded");
    let (ok_anchor, error_anchor) = output.expect("no error was recorded");
    Ok(Checked {
        wait,
        tx,
        tx_anchor,
        error_anchor,
        ok_anchor,
    })
}

/// The rules across arguments. `no_wait` and `skip` try the lock once and
/// never wait: neither goes with `timeout`, which bounds a wait, nor with
/// `savepoint`, which guards one, nor with the other, which does something
/// else on a busy lock. Of two arguments that contradict each other, the
/// later one written is the guilty one.
fn wait(args: &Args) -> syn::Result<Wait> {
    let mut errors = Errors::new();
    let mut contradiction = |first: Given, second: Given, why: String| {
        let later = if first.position > second.position {
            first
        } else {
            second
        };
        errors.push(syn::Error::new(
            later.span,
            format!(
                "`{}` and `{}` contradict each other: {why}",
                first.name, second.name
            ),
        ));
    };
    let never_waits = [args.no_wait, args.skip];
    if let Some(timeout) = args.timeout {
        let timeout = timeout.place();
        for once in never_waits.into_iter().flatten() {
            let why = format!(
                "`{}` tries the lock once and never waits, `{}` bounds a wait; keep one of them",
                once.name, timeout.name
            );
            contradiction(once, timeout, why);
        }
    }
    if let (Some(no_wait), Some(skip)) = (args.no_wait, args.skip) {
        let why = format!(
            "on a busy lock `{}` fails with `pglock::Error::Busy` and `{}` returns `Ok(None)`; \
             keep the one you mean",
            no_wait.name, skip.name
        );
        contradiction(no_wait, skip, why);
    }
    if let Some(savepoint) = args.savepoint {
        for once in never_waits.into_iter().flatten() {
            let why = format!(
                "`{}` guards a wait, and `{}` never waits; remove `{}`",
                savepoint.name, once.name, savepoint.name
            );
            contradiction(once, savepoint, why);
        }
    }
    errors.finish()?;
    Ok(match (args.timeout, args.skip, args.no_wait) {
        (Some(timeout), _, _) => Wait::AtMost {
            millis: timeout.value.millis,
            span: timeout.value.span,
        },
        (None, Some(_), _) => Wait::Skip,
        (None, None, Some(_)) => Wait::Never,
        (None, None, None) => Wait::Unbounded,
    })
}

/// `permits` takes a permit of a semaphore on one key: not of several
/// keys, not shared (a permit excludes every other holder of it), and not
/// in a savepoint (a semaphore's timeout leaves the transaction usable
/// without one).
fn semaphore(args: &Args) -> syn::Result<()> {
    let Some(permits) = args.permits else {
        return Ok(());
    };
    let mut errors = Errors::new();
    let mut refuse = |why: &str| {
        errors.push(syn::Error::new(
            permits.span,
            format!("`permits` takes a permit of a semaphore on one key, {why}"),
        ));
    };
    if matches!(args.keys, KeyArg::Many(_)) {
        refuse("not of several: write one key, such as `key = tenant_id`");
    }
    if args.shared {
        refuse(
            "exclusively: remove `mode = shared` (a semaphore's permits are its shared resource)",
        );
    }
    if let Some(savepoint) = args.savepoint {
        errors.push(syn::Error::new(
            savepoint.span,
            "`savepoint` and `permits` contradict each other: a semaphore's wait that times \
             out leaves the transaction usable without a savepoint; remove `savepoint`",
        ));
    }
    errors.finish()
}

/// The function must be an `async fn`, and not a `const fn`.
pub(crate) fn check_kind(sig: &Signature) -> syn::Result<()> {
    if let Some(constness) = &sig.constness {
        return Err(syn::Error::new(
            constness.span,
            "`#[advisory_lock]` can't go on a `const fn`: taking a lock is a database \
             round trip; remove `const` and make it an `async fn`",
        ));
    }
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span,
            "`#[advisory_lock]` goes on an `async fn`: the lock is taken with `.await` \
             before the body runs; write `async fn`",
        ));
    }
    Ok(())
}

/// The anchors for the `Ok` type and the error type.
fn check_output(sig: &Signature, args: &Args) -> syn::Result<(Span, Span)> {
    let ty = match &sig.output {
        ReturnType::Type(_, ty) => ty,
        ReturnType::Default => {
            return Err(syn::Error::new(
                sig.paren_token.span.close(),
                "an `#[advisory_lock]` function must return a `Result`: taking the lock can \
                 fail, and the failure is returned as the function's error; add a return type \
                 such as `-> Result<(), AppError>` where `AppError: From<pglock::Error>`",
            ));
        }
    };
    let result = peel(ty);
    if let Some(what) = obviously_not(result, "Result") {
        return Err(syn::Error::new_spanned(
            ty,
            format!(
                "an `#[advisory_lock]` function must return a `Result`, not {what}: taking the \
                 lock can fail, and the failure is returned as the function's error; write \
                 `-> Result<T, E>` where `E: From<pglock::Error>`"
            ),
        ));
    }
    let (ok, error) = result_arguments(result);
    if args.skip.is_some()
        && let Some(ok) = ok
        && let Some(what) = obviously_not(peel(ok), "Option")
    {
        return Err(syn::Error::new_spanned(
            ok,
            format!(
                "`skip` returns `Ok(None)` when the lock is busy, so the function must return \
                 `Result<Option<T>, E>`, and this is {what}; write `Option<{}>`, or use \
                 `no_wait` to fail with `pglock::Error::Busy` instead",
                type_text(ok)
            ),
        ));
    }
    let anchor = main_span(ty);
    Ok((
        ok.map_or(anchor, main_span),
        error.map_or(anchor, main_span),
    ))
}

/// The span of a type's name: the last segment of its path, under any
/// reference; a type error anchored there reads naturally.
pub(crate) fn main_span(ty: &Type) -> Span {
    match peel(ty) {
        Type::Reference(reference) => main_span(&reference.elem),
        Type::Path(path) => path
            .path
            .segments
            .last()
            .map_or_else(|| ty.span(), |segment| segment.ident.span()),
        other => other.span(),
    }
}

/// A type as the user would write it (`Option<u64>`, not `Option < u64 >`).
fn type_text(ty: &Type) -> String {
    let mut text = ty.to_token_stream().to_string();
    for (from, to) in [
        (" < ", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ,", ","),
        (" :: ", "::"),
        (":: ", "::"),
        ("& ", "&"),
    ] {
        text = text.replace(from, to);
    }
    text
}

fn peel(ty: &Type) -> &Type {
    match ty {
        Type::Paren(inner) => peel(&inner.elem),
        Type::Group(inner) => peel(&inner.elem),
        other => other,
    }
}

/// `T` and `E` of a type written `Result<T, E>` (under any path), as far
/// as they are written.
fn result_arguments(ty: &Type) -> (Option<&Type>, Option<&Type>) {
    let Type::Path(path) = ty else {
        return (None, None);
    };
    let Some(last) = path.path.segments.last() else {
        return (None, None);
    };
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return (None, None);
    };
    if last.ident != "Result" {
        return (None, None);
    }
    let mut types = args.args.iter().filter_map(|arg| match arg {
        syn::GenericArgument::Type(ty) => Some(ty),
        _ => None,
    });
    (types.next(), types.next())
}

/// Describes `ty` when it is plainly not the named standard type (`Result`
/// or `Option`); `None` when it may be (a path the macro can't resolve,
/// such as an alias).
fn obviously_not(ty: &Type, expected: &str) -> Option<String> {
    match ty {
        Type::Tuple(tuple) if tuple.elems.is_empty() => Some("`()`".to_owned()),
        Type::Tuple(_) => Some("a tuple".to_owned()),
        Type::Reference(_) => Some("a reference".to_owned()),
        Type::Ptr(_) => Some("a pointer".to_owned()),
        Type::Array(_) => Some("an array".to_owned()),
        Type::Slice(_) => Some("a slice".to_owned()),
        Type::Never(_) => Some("`!`".to_owned()),
        Type::ImplTrait(_) => Some("an `impl Trait`".to_owned()),
        Type::TraitObject(_) => Some("a trait object".to_owned()),
        Type::BareFn(_) => Some("a function pointer".to_owned()),
        Type::Path(path) if path.qself.is_none() => {
            let last = &path.path.segments.last()?.ident;
            let name = last.to_string();
            let standard = [
                "Option", "Result", "bool", "char", "str", "String", "Vec", "i8", "i16", "i32",
                "i64", "i128", "isize", "u8", "u16", "u32", "u64", "u128", "usize", "f32", "f64",
            ];
            (name != expected && standard.contains(&name.as_str())).then(|| format!("`{name}`"))
        }
        _ => None,
    }
}

/// What a parameter's type says about whether it can be the transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `&mut T`: a candidate.
    MutRef,
    /// `&T`.
    SharedRef,
    /// `T`.
    Owned,
}

/// What a parameter's type looks like by the last segment of its path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Looks {
    Pool,
    Connection,
    Transaction,
    Other,
}

fn shape_of(ty: &Type) -> (Shape, Looks) {
    match peel(ty) {
        Type::Reference(reference) => {
            let shape = if reference.mutability.is_some() {
                Shape::MutRef
            } else {
                Shape::SharedRef
            };
            (shape, looks(peel(&reference.elem)))
        }
        other => (Shape::Owned, looks(other)),
    }
}

fn looks(ty: &Type) -> Looks {
    let Type::Path(path) = ty else {
        return Looks::Other;
    };
    let Some(last) = path.path.segments.last() else {
        return Looks::Other;
    };
    match last.ident.to_string().as_str() {
        "PgPool" | "Pool" => Looks::Pool,
        "PgConnection" | "PoolConnection" | "PgPoolConnection" => Looks::Connection,
        "Transaction" | "PgTransaction" => Looks::Transaction,
        _ => Looks::Other,
    }
}

const EXPECTED: &str = "`tx: &mut sqlx::Transaction<'_, Postgres>`";

/// The error for a parameter that can't hold the lock, if it is one that
/// plainly can't.
fn unusable(ty: &Type) -> Option<syn::Error> {
    let (shape, looks) = shape_of(ty);
    let message = match (looks, shape) {
        (Looks::Pool, _) => format!(
            "a pool can't hold a transaction-scoped advisory lock: each statement on a pool \
             runs outside a transaction block, where the lock would end with the statement \
             that takes it; take the transaction instead, {EXPECTED}, begun by the caller \
             with `pool.begin().await?`"
        ),
        (Looks::Connection, _) => format!(
            "a bare connection can't hold a transaction-scoped advisory lock: outside a \
             transaction block the lock would end with the statement that takes it; take \
             the transaction instead, {EXPECTED}, begun with `conn.begin().await?`"
        ),
        (Looks::Transaction, Shape::SharedRef) => format!(
            "the transaction is borrowed shared (`&`), but taking the lock runs a statement \
             on it, which needs `&mut`; write {EXPECTED}"
        ),
        (Looks::Transaction, Shape::Owned) => format!(
            "the transaction is taken by value: take it as {EXPECTED}, so that the caller \
             keeps the transaction and with it the lock, which lasts until the caller \
             commits or rolls back"
        ),
        _ => return None,
    };
    Some(syn::Error::new_spanned(ty, message))
}

struct Param<'a> {
    /// The identifier of a parameter bound to a plain name, or of `self`.
    name: Option<Ident>,
    name_text: Option<String>,
    pat_span: Span,
    /// The whole parameter, to span an error on it.
    tokens: TokenStream,
    ty: &'a Type,
    receiver: bool,
}

fn parameters(sig: &Signature) -> Vec<Param<'_>> {
    sig.inputs
        .iter()
        .map(|input| match input {
            FnArg::Receiver(receiver) => Param {
                name: Some(Ident::new("self", receiver.self_token.span)),
                name_text: Some("self".to_owned()),
                pat_span: receiver.self_token.span,
                tokens: receiver.to_token_stream(),
                ty: &receiver.ty,
                receiver: true,
            },
            FnArg::Typed(typed) => {
                let ident = match &*typed.pat {
                    Pat::Ident(pat) if pat.subpat.is_none() => Some(&pat.ident),
                    _ => None,
                };
                Param {
                    name: ident.cloned(),
                    name_text: ident.map(Ident::to_string),
                    pat_span: typed.pat.span(),
                    tokens: typed.ty.to_token_stream(),
                    ty: &typed.ty,
                    receiver: false,
                }
            }
        })
        .collect()
}

fn transaction_parameter(sig: &Signature, args: &Args) -> syn::Result<(Ident, Span)> {
    let params = parameters(sig);
    if let Some(wanted) = &args.tx {
        let wanted_text = wanted.to_string();
        let Some(param) = params
            .iter()
            .find(|param| param.name_text.as_deref() == Some(wanted_text.as_str()))
        else {
            let names: Vec<&str> = params
                .iter()
                .filter_map(|param| param.name_text.as_deref())
                .collect();
            let hint = match closest(&wanted_text, &names) {
                Some(near) => format!("did you mean `tx = {near}`? "),
                None => String::new(),
            };
            let listed = if names.is_empty() {
                "the function has no named parameters".to_owned()
            } else {
                format!(
                    "its parameters are {}",
                    names
                        .iter()
                        .map(|name| format!("`{name}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(syn::Error::new(
                wanted.span(),
                format!(
                    "`tx = {wanted_text}` names no parameter of this function: {hint}`tx` \
                     names the parameter that holds the transaction, and {listed}"
                ),
            ));
        };
        if let Some(error) = unusable(param.ty) {
            return Err(error);
        }
        if shape_of(param.ty).0 != Shape::MutRef {
            let message = if param.receiver {
                "`tx = self` needs `&mut self`: taking the lock runs a statement on the \
                 transaction, which needs a mutable borrow (and `Self` must implement \
                 `pglock::XactConnection`)"
                    .to_owned()
            } else {
                format!(
                    "`tx = {wanted_text}` names a parameter of type `{}`, which can't hold the \
                     transaction: the transaction parameter is a `&mut` reference, such as \
                     {EXPECTED}",
                    type_text(param.ty)
                )
            };
            return Err(syn::Error::new_spanned(&param.tokens, message));
        }
        let name = param.name.clone().expect("found by its name");
        return Ok((name, main_span(param.ty)));
    }

    let candidates: Vec<&Param<'_>> = params
        .iter()
        .filter(|param| !param.receiver && shape_of(param.ty).0 == Shape::MutRef)
        .collect();
    match candidates.as_slice() {
        [param] => {
            if let Some(error) = unusable(param.ty) {
                return Err(error);
            }
            let Some(name) = param.name.clone() else {
                return Err(syn::Error::new(
                    param.pat_span,
                    "the transaction parameter needs a plain name for the lock to use it, \
                     such as `tx`",
                ));
            };
            Ok((name, main_span(param.ty)))
        }
        [] => {
            let mut errors = Errors::new();
            for param in &params {
                if let Some(error) = unusable(param.ty) {
                    errors.push(error);
                }
            }
            errors.finish()?;
            Err(syn::Error::new(
                sig.paren_token.span.join(),
                format!(
                    "no transaction parameter: `#[advisory_lock]` takes its lock in the \
                     function's transaction, a `&mut` parameter such as {EXPECTED} (or a \
                     `&mut` type that implements `pglock::XactConnection`); when it is \
                     `self`, write `tx = self`"
                ),
            ))
        }
        [first, second, ..] => {
            let likely = candidates
                .iter()
                .find(|param| shape_of(param.ty).1 == Looks::Transaction)
                .and_then(|param| param.name_text.as_deref());
            let name = |param: &Param<'_>| {
                param
                    .name_text
                    .clone()
                    .unwrap_or_else(|| param.ty.to_token_stream().to_string())
            };
            let hint = match likely {
                Some(likely) => format!("`tx = {likely}`"),
                None => "`tx = <parameter>`".to_owned(),
            };
            Err(syn::Error::new(
                second.pat_span,
                format!(
                    "`{}` and `{}` are both `&mut` parameters: say which one holds the \
                     transaction with {hint}",
                    name(first),
                    name(second)
                ),
            ))
        }
    }
}
