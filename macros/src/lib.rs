//! The `#[advisory_lock]` attribute of pglock. Use it through the `pglock`
//! crate, which re-exports it and the runtime it expands into.
//!
//! ```no_run
//! use pglock::advisory_lock;
//! use sqlx::{Postgres, Transaction};
//!
//! #[advisory_lock(ns = "scheduler:job", key = job_id, skip)]
//! async fn run_job(tx: &mut Transaction<'_, Postgres>, job_id: i64) -> Result<Option<()>, pglock::Error> {
//!     Ok(Some(()))
//! }
//! ```
//!
//! The crate is thin, and reads in phases, one module each (an arrow is an
//! import; none goes back):
//!
//! - `lib` (here): the entry point and its docs; runs the phases in order
//!   and, on an error, emits the function as written plus every error.
//! - `attr`: reads the arguments, one table row per argument (`ns`, `key`,
//!   `mode`, ...), each checked on its own, into `Args`. → `namespace`,
//!   `permits`, `timeout`, `forms`, `suggest`, `errors`
//! - `namespace`: reads `ns = ...`; a name follows the namespace-name rule
//!   of `pglock-grammar`, which the runtime follows too. → `forms`
//! - `permits`: reads `permits = 4`, an integer literal from 1 to 1024.
//! - `timeout`: reads `timeout = "5s"`, in the duration grammar of
//!   `pglock-grammar`, into milliseconds that PostgreSQL's `lock_timeout`
//!   can express.
//! - `valid`: the rules across arguments (`skip` with `timeout`, ...), and
//!   the item (a function with a body, `async`, not `const`) and its
//!   signature against the arguments (the return type, the transaction
//!   parameter), into what the expansion needs. → `attr`, `suggest`,
//!   `errors`
//! - `expand`: writes the lock block in front of the body; it decides
//!   nothing and builds no error. → `attr`, `namespace`, `valid`
//! - `forms`: the ways to write an argument, as messages show them.
//! - `suggest`: "did you mean", by synonym or edit distance, over words its
//!   callers pass.
//! - `errors`: collects independent errors to report them together.
//!
//! Every check that depends on a type is a trait bound in
//! `pglock::__private`, with a message written for the user.
#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]

mod attr;
mod errors;
mod expand;
mod forms;
mod namespace;
mod permits;
mod suggest;
mod timeout;
mod valid;

use proc_macro::TokenStream;
use quote::ToTokens;
use syn::ItemFn;

use crate::attr::Args;
use crate::errors::Errors;
use crate::valid::Checked;

/// Takes a transaction-scoped PostgreSQL advisory lock before the body of an
/// `async fn` runs; the lock lasts until the transaction commits or rolls
/// back.
///
/// ```no_run
/// use pglock::advisory_lock;
/// use sqlx::{Postgres, Transaction};
/// use uuid::Uuid;
///
/// # #[derive(Debug)] pub struct AppError;
/// # impl From<pglock::Error> for AppError { fn from(_: pglock::Error) -> Self { AppError } }
/// # pub struct Receipt;
/// // AppError: From<pglock::Error>
/// #[advisory_lock(ns = "billing:invoice", key = invoice_id, mode = shared, timeout = "5s")]
/// async fn settle(tx: &mut Transaction<'_, Postgres>, invoice_id: Uuid) -> Result<Receipt, AppError> {
///     // runs while the lock is held
/// #   Ok(Receipt)
/// }
/// ```
///
/// Only the body changes: the signature, attributes, doc comments, generics
/// and where-clauses stay as written, so the function is called, documented
/// and type-checked exactly as if the lock were written by hand:
///
/// ```text
/// static NS: pglock::Namespace = pglock::Namespace::named("billing:invoice");
/// NS.lock(&invoice_id).shared().timeout(Duration::from_secs(5)).acquire(&mut *tx).await?;
/// ```
///
/// # Arguments
///
/// | argument | meaning |
/// |---|---|
/// | `ns = "billing:invoice"` | Required. The namespace, named by a string literal (hashed at compile time: the first 8 bytes of `sha256(name)`). The name follows the rule `pglock::Namespace::named` follows, refused in the same words: not empty or only whitespace, no `*/`, `/*` or control characters, since the name labels the lock in SQL comments and logs. |
/// | `ns = 0x7275_6e6c_9e37_79b9` | A raw 64-bit namespace, so a hand-written key space keeps its exact keys (the key is `key_value ^ ns`). |
/// | `ns = pair("tenant:migrate")`, `ns = pair(0x7275_6e6c)` | PostgreSQL's int4 pair key space: the namespace is the first `int4` (hashed from the name, or the 32-bit literal), the key the second. |
/// | `ns = INVOICES` | The path of a `static` `pglock::Namespace`, or of a `pglock::LockFamily<K>`, whose key type `K` (or `&K`) the key must then have. |
/// | `key = invoice_id` | Required. Any expression over the parameters whose type implements `pglock::LockKey`: `Uuid`, integers, `&str`/`String`, byte slices, tuples of these. |
/// | `key = [from, to]` | Several keys (of any key types), taken together in ascending id order under one deadline, so two callers can't deadlock. |
/// | `mode = exclusive`, `mode = shared` | Exclusive by default. |
/// | `timeout = "250ms"` | Wait at most this long: a number and a unit, `ms`, `s`, `min` or `h` (`"1.5s"` is 1500 ms), a whole number of milliseconds from `"1ms"` to PostgreSQL's largest `lock_timeout` (`i32::MAX` ms); the grammar the `pglock` command reads its durations with. Caps `lock_timeout` for this wait only; a stricter setting of the caller's is kept. Without it, the wait is bounded by the caller's own `lock_timeout` and `statement_timeout`. |
/// | `no_wait` | Try once: when the lock is busy the function fails with `pglock::Error::Busy`, converted by `From`. |
/// | `skip` | Try once: when the lock is busy the function returns `Ok(None)` after an `info` event (target `pglock`, fields `namespace`, `key`, `mode`, `function`). The function must return `Result<Option<T>, E>`. |
/// | `savepoint` | Wait inside a savepoint, so that a failed wait leaves the transaction usable. |
/// | `permits = 4` | Take a permit of a semaphore of that many permits on the key instead of a lock: at most 4 transactions run the body at once (`pglock::Namespace::semaphore`). An integer literal from 1 to 1024; one key, exclusive, no `savepoint` (a semaphore's timeout leaves the transaction usable). Every caller of one key must give the same number. |
/// | `tx = conn` | The transaction parameter, when it isn't the only `&mut` parameter (`tx = self` for a method of a type that implements `pglock::XactConnection`). |
/// | `crate = "::my_pglock"` | The path of the pglock crate, when the dependency is renamed. |
///
/// `no_wait` and `skip` never wait, so neither combines with `timeout`, `savepoint` or the other.
///
/// # The function
///
/// - an `async fn` (a free function, an inherent or trait impl method, generic
///   or not) with a body;
/// - taking the transaction as a `&mut` parameter: `&mut sqlx::Transaction<'_,
///   Postgres>`, an alias of it, or `&mut W` for an application type `W` that
///   implements `pglock::XactConnection`. A pool, a bare connection or
///   `&Transaction` can't hold a transaction-scoped lock and is refused;
/// - returning `Result<T, E>` where `E: From<pglock::Error>`: taking the lock
///   can fail (a conflict, a busy lock, a hot standby, the server), and the
///   failure is returned through `?`.
///
/// Several keys, a family and the int4 pair space:
///
/// ```no_run
/// use pglock::{LockFamily, advisory_lock};
/// use sqlx::{Postgres, Transaction};
///
/// static ACCOUNTS: LockFamily<i64> = LockFamily::named("ledger:account");
///
/// #[advisory_lock(ns = ACCOUNTS, key = [from, to], timeout = "5s", savepoint)]
/// async fn transfer(tx: &mut Transaction<'_, Postgres>, from: i64, to: i64) -> Result<(), pglock::Error> {
///     // both accounts are locked, in an order every caller shares
/// #   Ok(())
/// }
///
/// /// A hand-written pair lock, kept exactly: `(0x7275_6e6c, 0x696e_7465)`.
/// #[advisory_lock(ns = pair(0x7275_6e6c), key = 0x696e_7465_i32, skip)]
/// async fn housekeeping(tx: &mut Transaction<'_, Postgres>) -> Result<Option<()>, pglock::Error> {
///     // `Ok(None)` without running this when another backend holds the lock
/// #   Ok(Some(()))
/// }
/// ```
///
/// With `#[tracing::instrument]`, either order compiles; put
/// `#[advisory_lock]` first (outer) for the span to cover the wait, and for
/// `#[instrument(err)]` to record a failure to lock. (The outer attribute
/// expands first, so the inner one's code runs first.)
#[proc_macro_attribute]
pub fn advisory_lock(args: TokenStream, item: TokenStream) -> TokenStream {
    lock_function(args.into(), item.into()).into()
}

/// The phases in order: the item must be a function; then the arguments
/// are read and the function checked against them, every independent error
/// reported in the same build; then the lock is written.
fn lock_function(
    args: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let function = match valid::function(item.clone()) {
        Ok(function) => function,
        Err(error) => return fallback(error, item),
    };
    match read_and_check(args, &function) {
        Ok((args, checked)) => expand::with_lock(function, &args, &checked),
        Err(errors) => fallback(errors, function.into_token_stream()),
    }
}

/// The arguments and what the expansion needs to know about the function,
/// or every error found in either.
fn read_and_check(
    args: proc_macro2::TokenStream,
    function: &ItemFn,
) -> syn::Result<(Args, Checked)> {
    let mut errors = Errors::new();
    let args = errors.check(attr::parse(args));
    let checked = match &args {
        Some(args) => errors.check(valid::check(&function.sig, args)),
        None => {
            // The arguments are wrong; still say what is wrong with the
            // function itself, in the same build.
            errors.check(valid::check_kind(&function.sig));
            None
        }
    };
    errors.finish()?;
    Ok((
        args.expect("no error was recorded"),
        checked.expect("no error was recorded"),
    ))
}

/// Like `#[tokio::main]`: the item as written plus the errors, so that the
/// rest of the crate still type-checks against it and an IDE keeps its
/// completions.
///
/// Input: the errors, and `async fn settle(..) -> Result<(), AppError> { body }`.
///
/// Output: `::core::compile_error! { "..." }` for each error, spanned on
/// its guilty token, then `async fn settle(..) -> Result<(), AppError> { body }`
/// unchanged.
fn fallback(errors: syn::Error, item: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    let mut output = errors.to_compile_error();
    output.extend(item);
    output
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::lock_function;

    fn expand(args: proc_macro2::TokenStream) -> String {
        let function = quote! {
            async fn settle(tx: &mut Transaction<'_, Postgres>, id: Uuid) -> Result<(), AppError> {
                Ok(())
            }
        };
        lock_function(args, function).to_string()
    }

    fn expand_skip(args: proc_macro2::TokenStream) -> String {
        let function = quote! {
            async fn settle(tx: &mut Transaction<'_, Postgres>, id: Uuid) -> Result<Option<()>, AppError> {
                Ok(None)
            }
        };
        lock_function(args, function).to_string()
    }

    #[test]
    fn a_renamed_crate_is_the_only_path_to_pglock() {
        let expanded = expand_skip(quote!(
            crate = "::renamed",
            ns = "jobs",
            key = [id, id],
            skip
        ));
        assert!(expanded.contains(":: renamed :: __private"), "{expanded}");
        assert!(!expanded.contains("pglock ::"), "{expanded}");
    }

    #[test]
    fn the_lock_comes_before_the_body_and_the_signature_stays() {
        let expanded = expand(quote!(
            ns = "billing:invoice",
            key = id,
            mode = shared,
            timeout = "5s"
        ));
        let signature = "async fn settle (tx : & mut Transaction < '_ , Postgres > , id : Uuid) -> Result < () , AppError > {";
        assert!(expanded.starts_with(signature), "{expanded}");
        let lock = expanded.find(":: pglock :: Namespace :: named (\"billing:invoice\")");
        let shared = expanded.find(". shared ()");
        let timeout = expanded.find("from_millis (5000u64)");
        let body = expanded.rfind("Ok (())");
        assert!(
            lock < shared && shared < timeout && timeout < body,
            "{expanded}"
        );
    }

    #[test]
    fn an_error_keeps_the_function_as_written() {
        let expanded = expand(quote!(ns = "jobs", key = id, mode = sharde));
        assert!(expanded.contains("compile_error !"), "{expanded}");
        assert!(expanded.contains("async fn settle"), "{expanded}");
        assert!(!expanded.contains("__private"), "{expanded}");
    }
}
