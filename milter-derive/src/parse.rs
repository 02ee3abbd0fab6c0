//! Syntax: the derive input and its `#[milter(…)]` attributes as a small tree,
//! with spans, before any meaning is given to the names (that is
//! [`validate`](crate::validate)'s job).
//!
//! Accepted shape of one attribute: `#[milter(arg, arg, …)]`, where an `arg` is a
//! word (`per_message`), a call (`actions(add_header, quarantine)`, whose
//! arguments are args again) or an assignment (`connect = "{j}"`).

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Attribute, Data, DeriveInput, Generics, Ident, Lit, LitStr, Member, Path, Token, Type};

/// One argument of a `#[milter(…)]` attribute.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    /// `name`
    Word(Ident),
    /// `name(arg, …)`; the span is that of the parentheses' content.
    Call(Ident, Vec<Arg>),
    /// `name = literal`
    Assign(Ident, Lit),
    /// `crate = path` (or `crate = "path"`, as serde writes it): where the
    /// runtime crate is.
    Crate(Ident, Path),
}

impl Arg {
    /// The name the argument starts with.
    pub(crate) fn name(&self) -> &Ident {
        match self {
            Arg::Word(n) | Arg::Call(n, _) | Arg::Assign(n, _) | Arg::Crate(n, _) => n,
        }
    }
}

impl Parse for Arg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(Token![crate]) {
            let name = Ident::parse_any(input)?;
            input.parse::<Token![=]>()?;
            return Ok(Arg::Crate(name, crate_path(input)?));
        }
        let name: Ident = input.parse()?;
        if input.peek(syn::token::Paren) {
            let content;
            syn::parenthesized!(content in input);
            let args = Punctuated::<Arg, Token![,]>::parse_terminated(&content)?;
            Ok(Arg::Call(name, args.into_iter().collect()))
        } else if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Ok(Arg::Assign(name, input.parse()?))
        } else {
            Ok(Arg::Word(name))
        }
    }
}

/// The value of `crate = …`: a path, or a string holding one.
pub(crate) fn crate_path(input: ParseStream<'_>) -> syn::Result<Path> {
    if input.peek(LitStr) {
        input.parse::<LitStr>()?.parse()
    } else {
        Path::parse_mod_style(input)
    }
}

/// What kind of item the derive is on.
#[derive(Debug)]
pub(crate) enum Shape {
    /// A struct, with its fields.
    Struct(Vec<FieldInput>),
    /// An enum; the span of the `enum` keyword.
    Enum(Span),
    /// A union; the span of the `union` keyword.
    Union(Span),
}

/// One field of the struct and its `#[milter(…)]` arguments.
#[derive(Debug)]
pub(crate) struct FieldInput {
    /// How to reach the field from `self`.
    pub(crate) member: Member,
    /// Its type.
    pub(crate) ty: Type,
    /// Its `#[milter(…)]` arguments, from all such attributes in order.
    pub(crate) args: Vec<Arg>,
}

/// The derive input, parsed.
#[derive(Debug)]
pub(crate) struct Input {
    /// The type's name.
    pub(crate) ident: Ident,
    /// Its generics.
    pub(crate) generics: Generics,
    /// Struct (with fields), enum or union.
    pub(crate) shape: Shape,
    /// The type's `#[milter(…)]` arguments, from all such attributes in order.
    pub(crate) args: Vec<Arg>,
}

/// Parses the derive input. Every syntax error is collected; what parsed is kept,
/// so that the expansion can still go ahead.
pub(crate) fn parse(input: DeriveInput) -> (Input, Option<syn::Error>) {
    let mut errors = Errors::default();
    let args = milter_args(&input.attrs, &mut errors);
    let shape = match input.data {
        Data::Struct(s) => Shape::Struct(
            s.fields
                .into_iter()
                .enumerate()
                .map(|(i, f)| FieldInput {
                    member: match f.ident {
                        Some(ident) => Member::Named(ident),
                        None => Member::Unnamed(syn::Index {
                            index: i as u32,
                            span: f.ty.span(),
                        }),
                    },
                    args: milter_args(&f.attrs, &mut errors),
                    ty: f.ty,
                })
                .collect(),
        ),
        Data::Enum(e) => Shape::Enum(e.enum_token.span),
        Data::Union(u) => Shape::Union(u.union_token.span),
    };
    let parsed = Input {
        ident: input.ident,
        generics: input.generics,
        shape,
        args,
    };
    (parsed, errors.finish())
}

/// The arguments of every `#[milter(…)]` among `attrs`.
fn milter_args(attrs: &[Attribute], errors: &mut Errors) -> Vec<Arg> {
    let mut out = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("milter")) {
        match attr.parse_args_with(Punctuated::<Arg, Token![,]>::parse_terminated) {
            Ok(args) => out.extend(args),
            Err(e) => errors.push(e),
        }
    }
    out
}

/// Errors collected with [`syn::Error::combine`].
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    /// Adds one error.
    pub(crate) fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    /// Adds an error at `span`.
    pub(crate) fn at(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    /// Adds an error spanning the tokens of `tokens`.
    pub(crate) fn spanned(
        &mut self,
        tokens: impl quote::ToTokens,
        message: impl std::fmt::Display,
    ) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// All errors as one, if any.
    pub(crate) fn finish(self) -> Option<syn::Error> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn input(tokens: proc_macro2::TokenStream) -> (Input, Option<syn::Error>) {
        parse(syn::parse2(tokens).unwrap())
    }

    #[test]
    fn collects_args_from_every_attribute() {
        let (parsed, err) = input(quote! {
            #[milter(actions(add_header), macros(connect = "{j}"))]
            #[derive(Default)]
            #[milter(options(skip))]
            struct S { #[milter(per_message)] n: usize, m: u8 }
        });
        assert!(err.is_none());
        let names: Vec<_> = parsed.args.iter().map(|a| a.name().to_string()).collect();
        assert_eq!(names, ["actions", "macros", "options"]);
        let Shape::Struct(fields) = &parsed.shape else {
            panic!("not a struct")
        };
        assert_eq!(fields.len(), 2);
        assert!(matches!(&fields[0].args[..], [Arg::Word(w)] if w == "per_message"));
        assert!(fields[1].args.is_empty());
    }

    #[test]
    fn numbers_tuple_fields() {
        let (parsed, _) = input(quote! { struct S(u8, #[milter(per_message)] u16); });
        let Shape::Struct(fields) = &parsed.shape else {
            panic!("not a struct")
        };
        assert!(matches!(&fields[1].member, Member::Unnamed(i) if i.index == 1));
    }

    #[test]
    fn reports_syntax_errors_and_keeps_the_rest() {
        let (parsed, err) = input(quote! {
            #[milter(actions(add_header) skip)]
            #[milter(options(skip))]
            enum E {}
        });
        assert!(err.is_some());
        assert_eq!(parsed.args.len(), 1);
        assert!(matches!(parsed.shape, Shape::Enum(_)));
    }
}

#[cfg(test)]
mod crate_tests {
    use super::*;
    use quote::quote;

    #[test]
    fn reads_the_crate_path_bare_or_quoted() {
        for tokens in [
            quote!(
                #[milter(crate = mb::inner)]
                struct S;
            ),
            quote!(
                #[milter(crate = "mb::inner")]
                struct S;
            ),
        ] {
            let (parsed, err) = parse(syn::parse2(tokens).unwrap());
            assert!(err.is_none());
            let [Arg::Crate(name, path)] = &parsed.args[..] else {
                panic!("{:?}", parsed.args)
            };
            assert_eq!(name, "crate");
            assert_eq!(quote!(#path).to_string(), "mb :: inner");
        }
    }
}
