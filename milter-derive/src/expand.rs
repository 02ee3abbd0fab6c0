//! Code generation: the [`Model`] becomes an `impl Milter` whose stage methods
//! call the type's inherent handlers where they exist, and whose `SPEC` the
//! compiler computes from the handlers' return types.
//!
//! The shape of the output, for `struct Stamp`:
//!
//! ```text
//! const _: () = {
//!     mod __milter_dispatch {            // `Milter` is not in scope here
//!         use ::milter_blocking::__private::Fallback as _;
//!         type This = super::Stamp;
//!         pub(super) fn rcpt(this: &mut This, ctx: …, rcpt: …)
//!             -> impl RcptReturn { <This>::rcpt(this, ctx, rcpt) }
//!         …
//!         pub(super) const STAGES: [StageFlags; 10] =
//!             [ …, stage_flags(&|| rcpt(never(), never(), never())), … ];
//!     }
//!     impl ::milter_blocking::__private::Milter for Stamp {
//!         const SPEC: Spec = Spec { handled: handled_stages(&__milter_dispatch::STAGES), … };
//!         fn rcpt(&mut self, ctx: …, rcpt: …) -> HandlerResult {
//!             StageReturn::into_result(__milter_dispatch::rcpt(self, ctx, rcpt))
//!         }
//!         …
//!         fn reset_message(&mut self) { self.rcpts = Default::default(); }
//!     }
//! };
//! ```
//!
//! `<This>::rcpt` resolves to an inherent method when there is one (whatever its
//! receiver) and to `Fallback::rcpt`, returning `NotHandled`, otherwise. It must
//! be resolved where the `Milter` trait is not in scope: there `<This>::rcpt`
//! would be ambiguous, which is why the calls live in a module of their own,
//! which reaches the type as `super::Stamp`.

use crate::validate::{Flag, Model};
use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};

/// What a stage's handler returns and how the generated method answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A stage with a reply: `Status`, `HandlerResult`, `()`, …
    Stage,
    /// negotiate, abort, close: `()` or `Result<(), E>`.
    Unit,
}

/// One handler: its name, its arguments after `self`, what it returns.
struct Handler {
    name: &'static str,
    params: &'static [(&'static str, Param)],
    kind: Kind,
}

/// The type of a handler argument.
#[derive(Clone, Copy)]
enum Param {
    Ctx,
    EomCtx,
    Bytes,
    ConnectAddr,
    EnvelopeAddr,
    Header,
    OptNeg,
    Spec,
}

impl Param {
    fn ty(self, rt: &TokenStream) -> TokenStream {
        match self {
            Param::Ctx => quote!(&mut #rt::Context<'_>),
            Param::EomCtx => quote!(&mut #rt::EomContext<'_>),
            Param::Bytes => quote!(&[u8]),
            Param::ConnectAddr => quote!(#rt::ConnectAddr<'_>),
            Param::EnvelopeAddr => quote!(&#rt::EnvelopeAddr<'_>),
            Param::Header => quote!(&#rt::Header<'_>),
            Param::OptNeg => quote!(&#rt::OptNeg),
            Param::Spec => quote!(&mut #rt::Spec),
        }
    }
}

const fn handler(
    name: &'static str,
    params: &'static [(&'static str, Param)],
    kind: Kind,
) -> Handler {
    Handler { name, params, kind }
}

/// The stage handlers in `Stage::ALL` order (the order of `StageFlags`), then the
/// others. Signatures are those of the `Milter` trait.
const HANDLERS: [Handler; 13] = [
    handler(
        "connect",
        &[
            ("ctx", Param::Ctx),
            ("hostname", Param::Bytes),
            ("addr", Param::ConnectAddr),
        ],
        Kind::Stage,
    ),
    handler(
        "helo",
        &[("ctx", Param::Ctx), ("name", Param::Bytes)],
        Kind::Stage,
    ),
    handler(
        "mail",
        &[("ctx", Param::Ctx), ("sender", Param::EnvelopeAddr)],
        Kind::Stage,
    ),
    handler(
        "rcpt",
        &[("ctx", Param::Ctx), ("rcpt", Param::EnvelopeAddr)],
        Kind::Stage,
    ),
    handler("data", &[("ctx", Param::Ctx)], Kind::Stage),
    handler(
        "header",
        &[("ctx", Param::Ctx), ("header", Param::Header)],
        Kind::Stage,
    ),
    handler("eoh", &[("ctx", Param::Ctx)], Kind::Stage),
    handler(
        "body",
        &[("ctx", Param::Ctx), ("chunk", Param::Bytes)],
        Kind::Stage,
    ),
    handler("eom", &[("ctx", Param::EomCtx)], Kind::Stage),
    handler(
        "unknown",
        &[("ctx", Param::Ctx), ("command", Param::Bytes)],
        Kind::Stage,
    ),
    handler(
        "negotiate",
        &[("offer", Param::OptNeg), ("spec", Param::Spec)],
        Kind::Unit,
    ),
    handler("abort", &[("ctx", Param::Ctx)], Kind::Unit),
    handler("close", &[("ctx", Param::Ctx)], Kind::Unit),
];

/// The path of the runtime support module, as the generated code names it.
fn runtime() -> TokenStream {
    quote!(::milter_blocking::__private)
}

/// The whole expansion.
pub(crate) fn expand(model: &Model) -> TokenStream {
    let rt = runtime();
    let ident = &model.ident;
    if !model.dispatch {
        // A generic type: the trait's defaults (every stage, no action) keep the
        // user's crate compiling while the error is fixed; the `Send` bound keeps
        // the impl from adding errors of its own.
        let (impl_generics, ty_generics, where_clause) = model.generics.split_for_impl();
        let predicates = where_clause.into_iter().flat_map(|w| w.predicates.iter());
        return quote! {
            const _: () = {
                impl #impl_generics #rt::Milter for #ident #ty_generics
                where
                    #(#predicates,)*
                    #ident #ty_generics: ::core::marker::Send,
                {}
            };
        };
    }

    let dispatch = dispatch_module(model);
    let spec = spec(model);
    let methods = HANDLERS.iter().map(|h| {
        let name = format_ident!("{}", h.name);
        let params = h.params.iter().map(|(p, ty)| {
            let p = format_ident!("{}", p);
            let ty = ty.ty(&rt);
            quote!(#p: #ty)
        });
        let args = h.params.iter().map(|(p, _)| format_ident!("{}", p));
        let (ret, convert) = match h.kind {
            Kind::Stage => (quote!(#rt::HandlerResult), quote!(#rt::StageReturn)),
            Kind::Unit => (quote!(#rt::HandlerResult<()>), quote!(#rt::UnitReturn)),
        };
        quote! {
            #[inline]
            fn #name(&mut self, #(#params),*) -> #ret {
                #convert::into_result(__milter_dispatch::#name(self, #(#args),*))
            }
        }
    });
    let resets = model.per_message.iter().map(|(member, ty)| {
        // Spanned at the field's type, so a type without `Default` is reported
        // there.
        let span = syn::spanned::Spanned::span(ty);
        let default = quote_spanned!(span=> <#ty as ::core::default::Default>::default());
        quote!(self.#member = #default;)
    });

    quote! {
        const _: () = {
            #dispatch

            #[automatically_derived]
            impl #rt::Milter for #ident {
                const SPEC: #rt::Spec = #spec;

                #(#methods)*

                fn reset_message(&mut self) {
                    #(#resets)*
                }
            }
        };
    }
}

/// The module where the handler calls are resolved, away from the user's
/// imports (in particular the `Milter` trait).
fn dispatch_module(model: &Model) -> TokenStream {
    let rt = runtime();
    // The user's type, spanned at its name: if the type is unreachable as
    // `super::Name` (declared inside a function), the error points there.
    let ident = &model.ident;
    let fns = HANDLERS.iter().map(|h| {
        let name = format_ident!("{}", h.name);
        let params = h.params.iter().map(|(p, ty)| {
            let p = format_ident!("{}", p);
            let ty = ty.ty(&quote!(__rt));
            quote!(#p: #ty)
        });
        let args = h.params.iter().map(|(p, _)| format_ident!("{}", p));
        // `RcptReturn` and the like: a wrong return type is reported with the
        // handler's name.
        let ret = format_ident!("{}Return", capitalise(h.name));
        quote! {
            #[inline]
            pub(super) fn #name(this: &mut This, #(#params),*) -> impl __rt::#ret {
                <This>::#name(this, #(#args),*)
            }
        }
    });
    let probes = HANDLERS.iter().filter(|h| h.kind == Kind::Stage).map(|h| {
        let name = format_ident!("{}", h.name);
        let nevers = h.params.iter().map(|_| quote!(__rt::never()));
        quote! {
            __rt::stage_flags(&|| #name(__rt::never(), #(#nevers),*))
        }
    });
    quote! {
        #[doc(hidden)]
        #[allow(unused_imports, clippy::all)]
        mod __milter_dispatch {
            use #rt as __rt;
            use __rt::Fallback as _;

            type This = super::#ident;

            #(#fns)*

            /// What each stage's handler (or its absence) means, in `Stage::ALL`
            /// order.
            pub(super) const STAGES: [__rt::StageFlags; 10] = [#(#probes),*];
        }
    }
}

/// `rcpt` → `Rcpt`.
fn capitalise(name: &str) -> String {
    let mut out = name.to_string();
    out[..1].make_ascii_uppercase();
    out
}

/// The `Spec` expression.
fn spec(model: &Model) -> TokenStream {
    let rt = runtime();
    let actions = flags(&quote!(#rt::Actions), &model.actions);
    let optional_actions = flags(&quote!(#rt::Actions), &model.optional_actions);
    let options = flags(&quote!(#rt::ProtocolOpts), &model.options);
    let optional_options = flags(&quote!(#rt::ProtocolOpts), &model.optional_options);
    let macros = model.macros.iter().map(|list| match list {
        Some(list) => quote!(::core::option::Option::Some(#rt::Cow::Borrowed(#list))),
        None => quote!(::core::option::Option::None),
    });
    quote! {
        #rt::Spec {
            handled: #rt::handled_stages(&__milter_dispatch::STAGES),
            no_reply: #rt::no_reply_stages(&__milter_dispatch::STAGES),
            actions: #actions,
            optional_actions: #optional_actions,
            options: #options,
            optional_options: #optional_options,
            macros: [#(#macros),*],
        }
    }
}

/// `Type::A.union(Type::B)…`, or `Type::empty()`.
fn flags(ty: &TokenStream, flags: &[Flag]) -> TokenStream {
    let mut out = quote!(#ty::empty());
    for flag in flags {
        let constant = Ident::new(flag.constant, Span::call_site());
        out = quote!(#out.union(#ty::#constant));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(tokens: TokenStream) -> String {
        let (input, e) = crate::parse::parse(syn::parse2(tokens).unwrap());
        assert!(e.is_none());
        let (model, e) = crate::validate::validate(input);
        assert!(e.is_none());
        expand(&model).to_string()
    }

    #[test]
    fn writes_flags_as_named_constants() {
        let ty = quote!(A);
        assert_eq!(flags(&ty, &[]).to_string(), "A :: empty ()");
        let two = crate::validate::ACTIONS[..2].to_vec();
        assert_eq!(
            flags(&ty, &two).to_string(),
            "A :: empty () . union (A :: ADD_HEADER) . union (A :: CHANGE_BODY)"
        );
    }

    #[test]
    fn spec_names_actions_options_and_macros() {
        let out = expand_str(quote! {
            #[milter(actions(quarantine), optional_options(skip), macros(eom = "{i}"))]
            struct S;
        });
        assert!(out.contains(
            "actions : :: milter_blocking :: __private :: Actions :: empty () . union \
             (:: milter_blocking :: __private :: Actions :: QUARANTINE)"
        ));
        assert!(out.contains(":: milter_blocking :: __private :: ProtocolOpts :: SKIP"));
        assert!(out.contains(
            "macros : [:: core :: option :: Option :: None , :: core :: option :: Option :: None , \
             :: core :: option :: Option :: None , :: core :: option :: Option :: None , \
             :: core :: option :: Option :: None , :: core :: option :: Option :: Some \
             (:: milter_blocking :: __private :: Cow :: Borrowed (\"{i}\")) , \
             :: core :: option :: Option :: None]"
        ));
        assert!(out.contains("type This = super :: S ;"));
    }

    #[test]
    fn resets_per_message_fields() {
        let out = expand_str(quote! { struct S(u8, #[milter(per_message)] Vec<u8>); });
        assert!(out.contains(
            "fn reset_message (& mut self) { self . 1 = < Vec < u8 > as :: core :: default :: \
             Default > :: default () ; }"
        ));
    }

    #[test]
    fn generic_types_get_the_trait_defaults() {
        let (input, _) = crate::parse::parse(syn::parse2(quote! { struct S<T>(T); }).unwrap());
        let (model, e) = crate::validate::validate(input);
        assert!(e.is_some());
        assert_eq!(
            expand(&model).to_string(),
            "const _ : () = { impl < T > :: milter_blocking :: __private :: Milter for S < T > \
             where S < T > : :: core :: marker :: Send , { } } ;"
        );
    }
}
