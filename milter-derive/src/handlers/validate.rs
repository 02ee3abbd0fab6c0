//! Checks the methods of the `impl Milter` block: every name must be a handler
//! (an unknown one is reported at its name and removed), `SPEC` is not written,
//! and a stage handler's return type is written out, since it decides the
//! negotiation.

use super::names;
use crate::parse::Errors;
use syn::{ImplItem, ItemImpl, ReturnType, Type};

/// A stage handler as written: its `Stage` variant and its return type
/// (`None`: no return type, that is `()`).
pub(crate) struct Written {
    pub(crate) stage: &'static str,
    pub(crate) ret: Option<Type>,
}

/// What the block holds, as far as the expansion is concerned.
pub(crate) struct Checked {
    /// The stage handlers.
    pub(crate) written: Vec<Written>,
    /// Methods that are not handlers, taken out of the block after their
    /// error: they go to an inherent `impl` so that nothing else about them
    /// (their imports, their calls) is reported.
    pub(crate) strays: Vec<ImplItem>,
}

/// Checks `item` and takes out the items in error. `None` when `item` is not a
/// trait impl.
pub(crate) fn validate(item: &mut ItemImpl, errors: &mut Errors) -> Option<Checked> {
    if item.trait_.is_none() {
        errors.spanned(
            &item.self_ty,
            "`#[handlers]` goes on the `impl Milter for Type` block that holds the handlers, \
             not on an inherent `impl`",
        );
        return None;
    }
    let mut written = Vec::new();
    let mut strays = Vec::new();
    item.items.retain(|it| match it {
        ImplItem::Fn(f) => {
            let name = f.sig.ident.to_string();
            let Some(handler) = names::find(&name) else {
                errors.at(f.sig.ident.span(), names::unknown(&name));
                strays.push(it.clone());
                return false;
            };
            let ret = match &f.sig.output {
                ReturnType::Default => None,
                ReturnType::Type(_, ty) => {
                    if let Type::ImplTrait(t) = &**ty {
                        errors.spanned(
                            t,
                            format!(
                                "write the concrete return type of `{name}` (`HandlerResult`, \
                                 `Status`, `()`, …): the negotiation is read from it"
                            ),
                        );
                        // `()` stands in, so that the error above is the only one.
                        None
                    } else {
                        Some((**ty).clone())
                    }
                }
            };
            if let Some(stage) = handler.stage {
                written.push(Written { stage, ret });
            }
            true
        }
        ImplItem::Const(c) if c.ident == "SPEC" => {
            errors.at(
                c.ident.span(),
                "`SPEC` is not written by hand: it is built from `#[derive(Milter)]`'s \
                 attributes and the handlers in this block",
            );
            false
        }
        _ => true,
    });
    Some(Checked { written, strays })
}
