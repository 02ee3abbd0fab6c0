//! TODO docs

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod expand;
mod handlers;
mod parse;
mod validate;

use proc_macro::TokenStream;

/// Implements `milter_blocking::Declaration` and the `milter_blocking::action`
/// markers from the type's `#[milter(…)]` attributes. See the crate
/// documentation.
#[proc_macro_derive(Milter, attributes(milter))]
pub fn derive_milter(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    let (parsed, parse_errors) = parse::parse(input);
    let (model, validate_errors) = validate::validate(parsed);
    // Errors go out together with the expansion of whatever was valid, so the
    // user's crate keeps compiling and each mistake gets one message.
    let mut out = expand::expand(&model);
    for error in parse_errors.into_iter().chain(validate_errors) {
        out.extend(error.to_compile_error());
    }
    out.into()
}

/// Goes on the `impl Milter for Type` block: checks that every method is a
/// handler, and tells the negotiation which stages have handlers and which
/// never reply. See the crate documentation.
#[proc_macro_attribute]
pub fn handlers(args: TokenStream, item: TokenStream) -> TokenStream {
    handlers::handlers(args.into(), item.into()).into()
}
