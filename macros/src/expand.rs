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

use crate::attr::{self, Args, KeyArg, NamespaceArg, Space, Wait};
use crate::errors::Errors;
use crate::valid::{self, Checked};

pub(crate) fn advisory_lock(args: TokenStream, item: TokenStream) -> TokenStream {
    let function = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let mut output = not_a_function(item.clone()).to_compile_error();
            output.extend(item);
            return output;
        }
    };
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
    match (errors.finish(), args, checked) {
        (Ok(()), Some(args), Some(checked)) => expand(function, &args, &checked),
        (result, _, _) => {
            // Like `#[tokio::main]`: the function as written plus the errors,
            // so that the rest of the crate still type-checks against it and
            // an IDE keeps its completions.
            let mut output = result
                .err()
                .map(|error| error.to_compile_error())
                .unwrap_or_default();
            output.extend(function.into_token_stream());
            output
        }
    }
}

/// The error for an attribute on something other than a function with a
/// body, spanned on the item's keyword.
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

fn expand(mut function: ItemFn, args: &Args, checked: &Checked) -> TokenStream {
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
    match &args.wait {
        Wait::Unbounded => {}
        Wait::AtMost { millis, span } => {
            let millis = Literal::u64_suffixed(*millis);
            options.extend(
                quote_spanned!(*span=> .timeout(::core::time::Duration::from_millis(#millis))),
            );
        }
        Wait::Never | Wait::Skip => options.extend(quote!(.no_wait())),
    }
    if args.savepoint {
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
    let acquire = match &args.wait {
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
    let finish = match &args.wait {
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

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::advisory_lock;

    fn expand(args: proc_macro2::TokenStream) -> String {
        let function = quote! {
            async fn settle(tx: &mut Transaction<'_, Postgres>, id: Uuid) -> Result<(), AppError> {
                Ok(())
            }
        };
        advisory_lock(args, function).to_string()
    }

    fn expand_skip(args: proc_macro2::TokenStream) -> String {
        let function = quote! {
            async fn settle(tx: &mut Transaction<'_, Postgres>, id: Uuid) -> Result<Option<()>, AppError> {
                Ok(None)
            }
        };
        advisory_lock(args, function).to_string()
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
