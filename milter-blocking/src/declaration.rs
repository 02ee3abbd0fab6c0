//! What a milter declares about itself besides its handlers: the actions and
//! options it negotiates, the macros it wants, and its per-message state.

use milter_core::{Actions, ProtocolOpts};
use std::borrow::Cow;

/// A milter's declaration: what it asks the MTA for, and how its per-message
/// state is reset. [`#[derive(Milter)]`](derive@crate::Milter) implements it
/// from the `#[milter(…)]` attributes, together with the
/// [`action`](crate::action) marker of every declared action.
///
/// Implementing it by hand is the opt-out from the derive, for a type that
/// computes its declaration some other way. It is then also up to the type to
/// implement the [`action`](crate::action) markers of the actions it declares,
/// which is what lets its end-of-message handler call the modifications (a
/// marker whose action is not in [`ACTIONS`](Declaration::ACTIONS) or
/// [`OPTIONAL_ACTIONS`](Declaration::OPTIONAL_ACTIONS) fails the build when a
/// modification of that action is called):
///
/// ```
/// use milter_blocking::{action, handlers, Actions, Declaration, EomContext, HandlerResult, Milter, Status};
///
/// struct Tagger {
///     seen: usize,
/// }
///
/// impl Declaration for Tagger {
///     const ACTIONS: Actions = Actions::ADD_HEADER;
///     fn reset_message(&mut self) {
///         self.seen = 0;
///     }
/// }
/// impl action::AddHeader for Tagger {}
///
/// #[handlers]
/// impl Milter for Tagger {
///     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
///         ctx.add_header("X-Tagged", "yes")?;
///         Ok(Status::Continue)
///     }
/// }
///
/// assert_eq!(<Tagger as Milter>::SPEC.actions, Actions::ADD_HEADER);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not declare a milter",
    label = "`{Self}` needs `#[derive(Milter)]`",
    note = "add `#[derive(Milter)]` to the declaration of `{Self}` \
            (or implement `milter_blocking::Declaration` by hand)"
)]
pub trait Declaration {
    /// Actions the milter needs; an MTA that does not offer all of them fails
    /// the connection (`#[milter(actions(…))]`).
    const ACTIONS: Actions = Actions::empty();
    /// Actions used when offered (`#[milter(optional_actions(…))]`).
    const OPTIONAL_ACTIONS: Actions = Actions::empty();
    /// Capability options the milter needs (`#[milter(options(…))]`).
    const OPTIONS: ProtocolOpts = ProtocolOpts::empty();
    /// Capability options used when offered (`#[milter(optional_options(…))]`).
    const OPTIONAL_OPTIONS: ProtocolOpts = ProtocolOpts::empty();
    /// Macros wanted per stage, indexed by
    /// [`MacroStage::index`](crate::MacroStage::index): names separated by
    /// spaces (`#[milter(macros(…))]`).
    const MACROS: [Option<Cow<'static, str>>; 7] = [None, None, None, None, None, None, None];

    /// Resets per-message state, before every new message and after every
    /// message ends. The derive resets the fields marked
    /// `#[milter(per_message)]` to their `Default`.
    fn reset_message(&mut self) {}
}
