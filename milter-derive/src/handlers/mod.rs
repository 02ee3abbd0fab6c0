//! `#[handlers]`: the attribute on a milter's `impl Milter for Type` block.
//!
//! [`parse`] reads the attribute's arguments, [`validate`] checks every method
//! name against the handler list (an unknown one is moved to an inherent `impl`
//! after its error, so that rustc reports nothing else about it) and records
//! the written return types, and [`expand`] writes the block back with an `impl Handlers` beside
//! it, whose constants the compiler computes from those return types.

mod expand;
mod names;
mod parse;
mod validate;

use proc_macro2::TokenStream;

/// The attribute's expansion: the impl block (minus the methods in error), the
/// `Handlers` impl, and the errors.
pub(crate) fn handlers(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = crate::parse::Errors::default();
    let krate = parse::args(args, &mut errors);
    let mut item: syn::ItemImpl = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(e) => {
            errors.push(syn::Error::new(
                e.span(),
                "`#[handlers]` goes on the `impl Milter for Type { … }` block",
            ));
            // The item as written, so that nothing else is reported about it.
            let mut out = item;
            out.extend(errors.finish().map(|e| e.to_compile_error()));
            return out;
        }
    };
    let checked = validate::validate(&mut item, &mut errors);
    let mut out = expand::expand(&item, checked.as_ref(), &krate);
    if let Some(e) = errors.finish() {
        out.extend(e.to_compile_error());
    }
    out
}
