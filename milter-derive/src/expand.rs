//! Code generation for `#[derive(Milter)]`: the [`Model`] becomes an
//! `impl Declaration` and one `impl` of the `action` marker trait per declared
//! action. The shape of the output, for `struct Stamp` with
//! `#[milter(actions(add_header))]`:
//!
//! ```text
//! const _: () = {
//!     impl ::milter_blocking::__private_v1::Declaration for Stamp {
//!         const ACTIONS: Actions = Actions::empty().union(Actions::ADD_HEADER);
//!         const OPTIONAL_ACTIONS: Actions = Actions::empty();
//!         …
//!         fn reset_message(&mut self) { self.rcpts = Default::default(); }
//!     }
//!     impl ::milter_blocking::__private_v1::action::AddHeader for Stamp {}
//! };
//! ```
//!
//! Every impl copies the type's generics and where clause, so generic types,
//! types inside function bodies and types in any module work alike.

use crate::validate::{Flag, Model};
use proc_macro2::{Ident, Span, TokenStream};
use quote::{quote, quote_spanned};

/// The marker trait of each action, by the action's `Actions` constant.
const MARKERS: [(&str, &str); 8] = [
    ("ADD_HEADER", "AddHeader"),
    ("CHANGE_BODY", "ChangeBody"),
    ("ADD_RCPT", "AddRcpt"),
    ("DELETE_RCPT", "DeleteRcpt"),
    ("CHANGE_HEADER", "ChangeHeader"),
    ("QUARANTINE", "Quarantine"),
    ("CHANGE_FROM", "ChangeFrom"),
    ("ADD_RCPT_WITH_ARGS", "AddRcptWithArgs"),
];

/// The path of the runtime support module, as the generated code names it.
pub(crate) fn runtime(krate: &syn::Path) -> TokenStream {
    quote!(#krate::__private_v1)
}

/// The whole expansion.
pub(crate) fn expand(model: &Model) -> TokenStream {
    let rt = runtime(&model.krate);
    let ident = &model.ident;
    let (impl_generics, ty_generics, where_clause) = model.generics.split_for_impl();
    let actions = flags(&quote!(#rt::Actions), &model.actions);
    let optional_actions = flags(&quote!(#rt::Actions), &model.optional_actions);
    let options = flags(&quote!(#rt::ProtocolOpts), &model.options);
    let optional_options = flags(&quote!(#rt::ProtocolOpts), &model.optional_options);
    let macros = model.macros.iter().map(|list| match list {
        Some(list) => quote!(#rt::Option::Some(#rt::Cow::Borrowed(#list))),
        None => quote!(#rt::Option::None),
    });
    let resets = model.per_message.iter().map(|(member, ty)| {
        // Spanned at the field's type, so a type without `Default` is reported
        // there.
        let span = syn::spanned::Spanned::span(ty);
        let default = quote_spanned!(span=> <#ty as #rt::Default>::default());
        quote!(self.#member = #default;)
    });
    let markers = model
        .actions
        .iter()
        .chain(&model.optional_actions)
        .map(|flag| {
            let marker = marker(flag);
            quote! {
                #[automatically_derived]
                impl #impl_generics #rt::action::#marker for #ident #ty_generics #where_clause {}
            }
        });

    quote! {
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #rt::Declaration for #ident #ty_generics #where_clause {
                const ACTIONS: #rt::Actions = #actions;
                const OPTIONAL_ACTIONS: #rt::Actions = #optional_actions;
                const OPTIONS: #rt::ProtocolOpts = #options;
                const OPTIONAL_OPTIONS: #rt::ProtocolOpts = #optional_options;
                const MACROS: [#rt::Option<#rt::Cow<'static, str>>; 7] = [#(#macros),*];

                #[inline]
                fn reset_message(&mut self) {
                    #(#resets)*
                }
            }

            #(#markers)*
        };
    }
}

/// The marker trait of an action.
fn marker(flag: &Flag) -> Ident {
    let (_, marker) = MARKERS
        .iter()
        .find(|(constant, _)| *constant == flag.constant)
        .expect("every action in ACTIONS has a marker");
    Ident::new(marker, Span::call_site())
}

/// `Type::empty().union(Type::A)…`.
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
    use crate::validate::ACTIONS;

    fn expand_str(tokens: TokenStream) -> String {
        let (input, e) = crate::parse::parse(syn::parse2(tokens).unwrap());
        assert!(e.is_none());
        let (model, e) = crate::validate::validate(input);
        assert!(e.is_none());
        expand(&model).to_string()
    }

    #[test]
    fn every_action_has_a_marker() {
        for flag in &ACTIONS {
            marker(flag);
        }
    }

    #[test]
    fn writes_flags_as_named_constants() {
        let ty = quote!(A);
        assert_eq!(flags(&ty, &[]).to_string(), "A :: empty ()");
        let two = ACTIONS[..2].to_vec();
        assert_eq!(
            flags(&ty, &two).to_string(),
            "A :: empty () . union (A :: ADD_HEADER) . union (A :: CHANGE_BODY)"
        );
    }

    #[test]
    fn declares_actions_options_macros_and_markers() {
        let out = expand_str(quote! {
            #[milter(actions(quarantine), optional_actions(add_rcpt))]
            #[milter(optional_options(skip), macros(eom = "{i}"))]
            struct S;
        });
        assert!(out.contains(
            "const ACTIONS : :: milter_blocking :: __private_v1 :: Actions = \
             :: milter_blocking :: __private_v1 :: Actions :: empty () . union \
             (:: milter_blocking :: __private_v1 :: Actions :: QUARANTINE) ;"
        ));
        assert!(out.contains(":: milter_blocking :: __private_v1 :: ProtocolOpts :: SKIP"));
        assert!(out.contains(
            "(:: milter_blocking :: __private_v1 :: Cow :: Borrowed (\"{i}\")) , \
             :: milter_blocking :: __private_v1 :: Option :: None]"
        ));
        assert!(out
            .contains("impl :: milter_blocking :: __private_v1 :: action :: Quarantine for S { }"));
        assert!(
            out.contains("impl :: milter_blocking :: __private_v1 :: action :: AddRcpt for S { }")
        );
        assert_eq!(out.matches(":: action ::").count(), 2);
    }

    #[test]
    fn copies_generics_and_the_crate_path() {
        let out = expand_str(quote! {
            #[milter(crate = mb, actions(add_header))]
            struct S<T: Send> where T: Clone { t: T }
        });
        assert!(out.contains(
            "impl < T : Send > mb :: __private_v1 :: Declaration for S < T > where T : Clone"
        ));
        assert!(out.contains(
            "impl < T : Send > mb :: __private_v1 :: action :: AddHeader for S < T > where T : Clone { }"
        ));
    }

    #[test]
    fn resets_per_message_fields() {
        let out = expand_str(quote! { struct S(u8, #[milter(per_message)] Vec<u8>); });
        assert!(out.contains(
            "fn reset_message (& mut self) { self . 1 = < Vec < u8 > as :: milter_blocking :: \
             __private_v1 :: Default > :: default () ; }"
        ));
    }
}
