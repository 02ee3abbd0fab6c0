//! Support for the code that `#[derive(Milter)]` and `#[handlers]` generate.
//! Not a public API: nothing here is covered by semver, and user code must not
//! name it. The module's name carries a version so that a `milter-derive` that
//! generates code for another version fails to build instead of misbehaving
//! (milter-blocking also pins milter-derive to its exact version).
//!
//! - `#[derive(Milter)]` implements [`Declaration`] and the
//!   [`action`](crate::action) markers, naming the flags through the re-exports
//!   below.
//! - `#[handlers]` implements [`Handlers`] beside the user's `impl Milter`: the
//!   stages that have a handler, and those whose handler's written return type
//!   has [`StageReturn::NO_REPLY`], folded by [`handled_stages`] and
//!   [`no_reply_stages`]. [`Milter::SPEC`](crate::Milter::SPEC) reads both
//!   traits.

pub use crate::action;
pub use crate::declaration::Declaration;
pub use crate::handler::StageReturn;
pub use milter_core::{Actions, ProtocolOpts, Stage, Stages};
pub use std::borrow::Cow;
pub use std::default::Default;
pub use std::option::Option;

/// The stages a milter type handles, as the `#[handlers]` attribute found
/// them. [`Milter`](crate::Milter) requires it, so that an `impl Milter` without
/// the attribute fails to build with a message saying where to add it.
#[diagnostic::on_unimplemented(
    message = "the `impl Milter for {Self}` block lacks `#[milter_blocking::handlers]`",
    label = "`#[milter_blocking::handlers]` is missing on the `impl Milter for {Self}` block",
    note = "write `#[milter_blocking::handlers]` (or `#[handlers]` when imported) on the line \
            above `impl Milter for {Self}`: it tells the negotiation which stages have handlers"
)]
pub trait Handlers {
    /// The stages with a handler.
    const HANDLED: Stages;
    /// The handled stages whose handler never replies.
    const NO_REPLY: Stages;
}

/// Reads [`StageReturn::NO_REPLY`] of a written return type, as
/// `NoReply::<Ret>::NO_REPLY` with [`NotAStageReturn`] in scope. A type that is
/// not a [`StageReturn`] gets `false` from that trait instead of a second
/// error: rustc reports it once, at the handler's signature.
#[allow(missing_debug_implementations)]
pub struct NoReply<T: ?Sized>(std::marker::PhantomData<T>);

impl<T: StageReturn> NoReply<T> {
    /// The return type's [`StageReturn::NO_REPLY`].
    pub const NO_REPLY: bool = T::NO_REPLY;
}

/// The fallback of [`NoReply`] for types that are not return types.
pub trait NotAStageReturn {
    /// Never read in a crate that compiles.
    const NO_REPLY: bool = false;
}

impl<T: ?Sized> NotAStageReturn for NoReply<T> {}

/// One handler as `#[handlers]` saw it: its stage, and whether its written
/// return type never replies.
pub type Written = (Stage, bool);

/// The stages with a handler.
pub const fn handled_stages(handlers: &[Written]) -> Stages {
    let mut out = Stages::empty();
    let mut i = 0;
    while i < handlers.len() {
        out = out.union(handlers[i].0.set());
        i += 1;
    }
    out
}

/// The handled stages that get no reply. End of message is never one (it
/// always gets a reply; a handler returning `()` there just continues).
pub const fn no_reply_stages(handlers: &[Written]) -> Stages {
    let mut out = Stages::empty();
    let mut i = 0;
    while i < handlers.len() {
        let (stage, no_reply) = handlers[i];
        if no_reply && stage.no_reply_flag().is_some() {
            out = out.union(stage.set());
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HandlerResult;

    #[test]
    fn folds_handlers_into_stage_sets() {
        let written: [Written; 3] = [
            (Stage::Rcpt, <() as StageReturn>::NO_REPLY),
            (Stage::Eom, <() as StageReturn>::NO_REPLY),
            (Stage::Mail, <HandlerResult as StageReturn>::NO_REPLY),
        ];
        assert_eq!(
            handled_stages(&written),
            Stages::RCPT | Stages::EOM | Stages::MAIL
        );
        assert_eq!(no_reply_stages(&written), Stages::RCPT);
        #[allow(unused_imports)]
        use NotAStageReturn as _;
        let read = [
            <Result<(), std::io::Error> as StageReturn>::NO_REPLY,
            NoReply::<Result<(), std::io::Error>>::NO_REPLY,
            NoReply::<milter_core::Status>::NO_REPLY,
            NoReply::<bool>::NO_REPLY,
        ];
        assert_eq!(read, [true, true, false, false]);
    }
}
