//! Generating the lock statement and putting it in front of the body.
//!
//! Input:
//!
//! ```text
//! #[advisory_lock(ns = "billing:invoice", key = invoice_id, mode = shared, timeout = "5s")]
//! async fn settle(tx: &mut Transaction<'_, Postgres>, invoice_id: Uuid) -> Result<Receipt, AppError> {
//!     body
//! }
//! ```
//!
//! Output (only the body changes; signature, attributes and spans are the
//! user's):
//!
//! ```text
//! async fn settle(tx: &mut Transaction<'_, Postgres>, invoice_id: Uuid) -> Result<Receipt, AppError> {
//!     {
//!         static __PGLOCK_NAMESPACE: ::pglock::Namespace = ::pglock::Namespace::named("billing:invoice");
//!         let __pglock_request = ::pglock::__private::lock(&(invoice_id), &__PGLOCK_NAMESPACE).shared();
//!         let __pglock_outcome = __pglock_request
//!             .timeout(::core::time::Duration::from_millis(5000u64))
//!             .acquire(::pglock::__private::connection(&mut *tx))
//!             .await;
//!         __pglock_outcome?;
//!     }
//!     body
//! }
//! ```
//!
//! The `?` is located at the function's error type (`AppError`), and each
//! call that checks a type at the user's token it checks (the key, the
//! transaction parameter's type, the `Ok` type for `skip`), so a type error
//! points at the user's code rather than at the attribute.
//! Locals are `Span::mixed_site()`, invisible to the body; the one item, the
//! namespace `static`, lives in its own block.

use proc_macro2::{Group, Ident, Literal, Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Expr, ItemFn, LitStr, Stmt};

use crate::attr::{Args, KeyArg};
use crate::namespace::{NamespaceArg, Space};
use crate::valid::{Checked, Wait};

/// The function with the lock block as the first statement of its body.
pub(crate) fn with_lock(mut function: ItemFn, args: &Args, checked: &Checked) -> TokenStream {
    let lock = lock_block(args, checked, &function.sig.ident);
    function
        .block
        .stmts
        .insert(0, Stmt::Expr(Expr::Verbatim(lock), None));
    function.into_token_stream()
}

fn lock_block(args: &Args, checked: &Checked, function: &syn::Ident) -> TokenStream {
    let krate = &args.krate;
    let private = quote!(#krate::__private);
    // Written with a span of the user's code, the tokens of a call make a
    // type error point there; `private_at` respans the crate path too, as a
    // call whose tokens have different locations is reported at the
    // attribute.
    let private_at = |anchor: Span| respan(private.clone(), anchor);
    let request = Ident::new("__pglock_request", Span::mixed_site());
    let outcome = Ident::new("__pglock_outcome", Span::mixed_site());

    let (namespace_item, namespace) = namespace(args, krate);

    let build = match &args.keys {
        KeyArg::One(key) if args.permits.is_some() => {
            let anchor = key.span();
            let private = private_at(anchor);
            let namespace = respan_ours(&namespace, anchor);
            let permits = args.permits.map(|permits| {
                let number = Literal::u32_suffixed(permits.value);
                quote_spanned!(permits.span=> #number)
            });
            let semaphore =
                quote_spanned!(anchor=> #private::semaphore(&(#key), #namespace, #permits));
            quote! {
                let #request = #semaphore;
            }
        }
        KeyArg::One(key) => {
            let anchor = key.span();
            let private = private_at(anchor);
            let namespace = respan_ours(&namespace, anchor);
            let shared = args.shared.then(|| quote!(.shared()));
            let lock = quote_spanned!(anchor=> #private::lock(&(#key), #namespace));
            quote! {
                let #request = #lock #shared;
            }
        }
        KeyArg::Many(keys) => {
            let mode = if args.shared {
                quote!(#krate::Mode::Shared)
            } else {
                quote!(#krate::Mode::Exclusive)
            };
            let adds = keys.iter().map(|key| {
                let anchor = key.span();
                let private = private_at(anchor);
                let namespace = respan_ours(&namespace, anchor);
                let add =
                    quote_spanned!(anchor=> #private::add(#request, &(#key), #namespace, #mode));
                quote!(let #request = #add;)
            });
            quote! {
                let #request = #krate::XactLockSet::new();
                #(#adds)*
            }
        }
    };
    let mut options = TokenStream::new();
    match &checked.wait {
        Wait::Unbounded => {}
        Wait::AtMost { millis, span } => {
            let millis = Literal::u64_suffixed(*millis);
            options.extend(
                quote_spanned!(*span=> .timeout(::core::time::Duration::from_millis(#millis))),
            );
        }
        Wait::Never | Wait::Skip => options.extend(quote!(.no_wait())),
    }
    if args.savepoint.is_some() {
        options.extend(quote!(.in_savepoint()));
    }
    let connection = {
        let anchor = checked.tx_anchor;
        // The user's identifier, with its hygiene, located at its type.
        let tx = Ident::new(
            &checked.tx.to_string(),
            checked.tx.span().located_at(anchor),
        );
        let private = private_at(anchor);
        quote_spanned!(anchor=> #private::connection(&mut *#tx))
    };
    // With `skip`, the runtime says nothing of a busy lock: the expansion
    // says "skipped", once.
    let acquire = match &checked.wait {
        Wait::Skip => quote!(
            #krate::__private::Skipping::skipping(#request #options).acquire(#connection).await
        ),
        _ => quote!(#request #options.acquire(#connection).await),
    };
    // `outcome?` located at the function's error type: a missing
    // `From<pglock::Error>` is reported there.
    let error_anchor = checked.error_anchor;
    let outcome_at_error = Ident::new(
        &outcome.to_string(),
        Span::mixed_site().located_at(error_anchor),
    );
    let question = quote_spanned!(error_anchor=> ?);
    let finish = match &checked.wait {
        Wait::Skip => {
            let name = LitStr::new(&function.to_string(), function.span());
            let anchor = checked.ok_anchor;
            let private = private_at(anchor);
            let skipped = quote_spanned!(anchor=> #private::skipped());
            quote! {
                let #outcome = #krate::__private::acquired_or_skipped(
                    #acquire,
                    ::core::concat!(::core::module_path!(), "::", #name),
                );
                if !#outcome_at_error #question {
                    return #skipped;
                }
            }
        }
        _ => quote! {
            let #outcome = #acquire;
            #outcome_at_error #question;
        },
    };
    quote! {
        {
            #namespace_item
            #build
            #finish
        }
    }
}

/// `tokens` with every span set to `span`, into groups too.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|token| match token {
            TokenTree::Group(group) => {
                let mut respanned = Group::new(group.delimiter(), respan(group.stream(), span));
                respanned.set_span(span);
                TokenTree::Group(respanned)
            }
            mut other => {
                other.set_span(span);
                other
            }
        })
        .collect()
}

/// The namespace expression, respanned when it is the macro's own `static`
/// (a user's path keeps its spans).
fn respan_ours(namespace: &Namespace, span: Span) -> TokenStream {
    match namespace {
        Namespace::Ours(tokens) => respan(tokens.clone(), span),
        Namespace::Users(tokens) => tokens.clone(),
    }
}

/// An expression of type `&N` for the namespace.
enum Namespace {
    /// `&__PGLOCK_NAMESPACE`.
    Ours(TokenStream),
    /// `&PATH`, as the user wrote the path.
    Users(TokenStream),
}

/// The `static` for a namespace written as a literal (none for a path),
/// and an expression of type `&N` for it.
fn namespace(args: &Args, krate: &syn::Path) -> (TokenStream, Namespace) {
    let name = format_ident!("__PGLOCK_NAMESPACE");
    let constructor = match &args.namespace {
        NamespaceArg::Path(path) => {
            let path = quote_spanned!(path.span()=> &#path);
            return (TokenStream::new(), Namespace::Users(path));
        }
        NamespaceArg::Named {
            name,
            space: Space::BigInt,
        } => {
            quote!(#krate::Namespace::named(#name))
        }
        NamespaceArg::Named {
            name,
            space: Space::Pair,
        } => {
            quote!(#krate::Namespace::named_pair(#name))
        }
        NamespaceArg::Raw {
            value,
            literal,
            space,
        } => {
            let label = LitStr::new(&literal.to_string(), literal.span());
            match space {
                Space::BigInt => {
                    let mask = Literal::u64_suffixed(*value);
                    quote!(#krate::Namespace::raw(#mask, #label))
                }
                Space::Pair => {
                    // Checked to fit 32 bits; the class is its bit pattern.
                    let class = Literal::i32_suffixed(*value as u32 as i32);
                    quote!(#krate::Namespace::raw_pair(#class, #label))
                }
            }
        }
    };
    (
        quote! {
            static #name: #krate::Namespace = #constructor;
        },
        Namespace::Ours(quote!(&#name)),
    )
}
