//! Writes the `impl Milter` block back, with `#[allow(refining_impl_trait)]` on
//! each handler (they return concrete types where the trait says
//! `impl StageReturn`), and beside it:
//!
//! ```text
//! const _: () = {
//!     impl ::milter_blocking::__private_v1::Handlers for Stamp {
//!         const HANDLED: Stages = handled_stages(&[(Stage::Rcpt, NoReply::<()>::NO_REPLY), …]);
//!         const NO_REPLY: Stages = no_reply_stages(&[…]);
//!     }
//! };
//! ```
//!
//! The constants read the return types as written in the block: the trait's
//! signatures say only `impl StageReturn`, which generic code cannot see
//! through. `NoReply::<T>::NO_REPLY` is `StageReturn::NO_REPLY` for a return
//! type, and `false` (from a fallback trait) for a type that is not one, so that
//! a wrong return type gets one error, at the signature, not two.

use super::validate::Checked;
use crate::expand::runtime;
use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;
use syn::{ImplItem, ItemImpl};

/// The expansion; `checked` is `None` when the block is not a trait impl (it is
/// then written back unchanged, next to its error).
pub(crate) fn expand(item: &ItemImpl, checked: Option<&Checked>, krate: &syn::Path) -> TokenStream {
    let Some(Checked { written, strays }) = checked else {
        return quote!(#item);
    };
    let mut item = item.clone();
    for it in &mut item.items {
        if let ImplItem::Fn(f) = it {
            f.attrs
                .push(syn::parse_quote!(#[allow(refining_impl_trait)]));
        }
    }
    let rt = runtime(krate);
    let entries: Vec<TokenStream> = written
        .iter()
        .map(|w| {
            let stage = Ident::new(w.stage, Span::call_site());
            let ret = match &w.ret {
                Some(ty) => quote!(#ty),
                None => quote!(()),
            };
            quote!((#rt::Stage::#stage, {
                #[allow(unused_imports)]
                use #rt::NotAStageReturn as _;
                #rt::NoReply::<#ret>::NO_REPLY
            }))
        })
        .collect();
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    let self_ty = &item.self_ty;
    let strays = (!strays.is_empty()).then(|| {
        quote! {
            #[allow(dead_code)]
            impl #impl_generics #self_ty #where_clause {
                #(#strays)*
            }
        }
    });
    quote! {
        #item

        #strays

        const _: () = {
            #[automatically_derived]
            impl #impl_generics #rt::Handlers for #self_ty #where_clause {
                const HANDLED: #rt::Stages = #rt::handled_stages(&[#(#entries),*]);
                const NO_REPLY: #rt::Stages = #rt::no_reply_stages(&[#(#entries),*]);
            }
        };
    }
}
