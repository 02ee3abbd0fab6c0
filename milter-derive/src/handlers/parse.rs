//! The arguments of `#[handlers(…)]`: nothing, or `crate = path`.

use crate::parse::{crate_path, Errors};
use proc_macro2::TokenStream;
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Ident, Path, Token};

/// The runtime crate's path: `::milter_blocking` unless `crate = path` says
/// otherwise. A malformed argument is reported and the default kept.
pub(crate) fn args(args: TokenStream, errors: &mut Errors) -> Path {
    let default: Path = syn::parse_quote!(::milter_blocking);
    if args.is_empty() {
        return default;
    }
    let parser = |input: ParseStream<'_>| {
        let name = Ident::parse_any(input)?;
        if name != "crate" {
            return Err(syn::Error::new(
                name.span(),
                format!("unknown argument `{name}`; `#[handlers]` takes only `crate = path`"),
            ));
        }
        input.parse::<Token![=]>()?;
        let path = crate_path(input)?;
        input.parse::<Option<Token![,]>>()?;
        Ok(path)
    };
    match parser.parse2(args) {
        Ok(path) => path,
        Err(e) => {
            errors.push(e);
            default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn reads_crate_or_reports() {
        let mut errors = Errors::default();
        let path = args(quote!(crate = mb), &mut errors);
        assert_eq!(quote!(#path).to_string(), "mb");
        let path = args(quote!(), &mut errors);
        assert_eq!(quote!(#path).to_string(), ":: milter_blocking");
        assert!(errors.finish().is_none());
        let mut errors = Errors::default();
        args(quote!(krate = mb), &mut errors);
        let e = errors.finish().unwrap().to_string();
        assert!(e.contains("takes only `crate = path`"), "{e}");
    }
}
