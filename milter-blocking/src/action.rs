//! One marker trait per action, for the modification calls of
//! [`EomContext`](crate::EomContext).
//!
//! A modification compiles only when the milter's type implements the marker of
//! the action the MTA requires for it, and
//! [`#[derive(Milter)]`](derive@crate::Milter) implements exactly the markers of
//! the actions in `#[milter(actions(…))]` and `#[milter(optional_actions(…))]`:
//!
//! | call | marker | attribute name |
//! | --- | --- | --- |
//! | `add_header`, `insert_header`, `prepend_header` | [`AddHeader`] | `add_header` |
//! | `change_header`, `delete_header`, `delete_all_headers` | [`ChangeHeader`] | `change_header` |
//! | `set_header` | [`ChangeHeader`] and [`AddHeader`] | both |
//! | `replace_body` | [`ChangeBody`] | `change_body` |
//! | `add_rcpt` | [`AddRcpt`] | `add_rcpt` |
//! | `add_rcpt_with_args` | [`AddRcptWithArgs`] | `add_rcpt_with_args` |
//! | `delete_rcpt` | [`DeleteRcpt`] | `delete_rcpt` |
//! | `change_from` | [`ChangeFrom`] | `change_from` |
//! | `quarantine` | [`Quarantine`] | `quarantine` |
//!
//! Calling one without the declaration fails the build at the call:
//!
//! ```text
//! error[E0277]: `Stamp` does not declare the `add_header` action
//!   |     ctx.add_header("X-Stamped", "yes")?;
//!   |         ^^^^^^^^^^ add `#[milter(actions(add_header))]` (or `optional_actions`) to `Stamp`
//! ```
//!
//! An optional action the MTA did not offer still compiles; the call then fails
//! at run time with [`ModifyError`](crate::ModifyError), and
//! [`EomContext::actions`](crate::EomContext::actions) says beforehand which
//! actions were negotiated.
//!
//! A type with a hand-written [`Declaration`] implements the markers itself; a
//! marker whose action the declaration does not list fails the build where a
//! modification of that action is called.
//! The check runs when the code is compiled to a program (`cargo build`, not
//! `cargo check`):
//!
//! ```compile_fail
//! use milter_blocking::{action, handlers, Declaration, EomContext, HandlerResult, Milter, Status};
//!
//! struct Liar;
//!
//! impl Declaration for Liar {} // no QUARANTINE in ACTIONS
//! impl action::Quarantine for Liar {}
//!
//! #[handlers]
//! impl Milter for Liar {
//!     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
//!         ctx.quarantine("held")?; // error: evaluation of `Quarantine::DECLARED` failed
//!         Ok(Status::Continue)
//!     }
//! }
//! # fn main() { let _ = milter_blocking::Server::builder().build(|| Liar); }
//! ```

use crate::declaration::Declaration;
use milter_core::Actions;

/// Whether `action` is among the declared actions (required or optional).
#[doc(hidden)]
pub const fn declares<M: Declaration + ?Sized>(action: Actions) -> bool {
    M::ACTIONS.union(M::OPTIONAL_ACTIONS).contains(action)
}

macro_rules! markers {
    ($(
        $marker:ident, $constant:ident, $name:literal,
        $message:literal, $label:literal, $note:literal, $failure:literal;
    )*) => {$(
        #[doc = concat!(
            "The milter declares the `", $name, "` action (`Actions::", stringify!($constant),
            "`): its end-of-message context offers the calls that need it."
        )]
        #[diagnostic::on_unimplemented(message = $message, label = $label, note = $note)]
        pub trait $marker: Declaration {
            /// Fails the build when the declaration does not list the action.
            #[doc(hidden)]
            const DECLARED: () = assert!(declares::<Self>(Actions::$constant), $failure);
        }
    )*};
}

// `#[diagnostic::on_unimplemented]` takes only string literals, hence the
// spelt-out messages.
markers! {
    AddHeader, ADD_HEADER, "add_header",
    "`{Self}` does not declare the `add_header` action",
    "add `#[milter(actions(add_header))]` (or `optional_actions`) to `{Self}`",
    "a modification needs its action declared on the milter's type: `actions(add_header)` when the milter cannot work without it, `optional_actions(add_header)` when it checks `ctx.actions()` first",
    "a type implements `action::AddHeader` but its `Declaration` lists `ADD_HEADER` in neither ACTIONS nor OPTIONAL_ACTIONS";
    ChangeHeader, CHANGE_HEADER, "change_header",
    "`{Self}` does not declare the `change_header` action",
    "add `#[milter(actions(change_header))]` (or `optional_actions`) to `{Self}`",
    "a modification needs its action declared on the milter's type: `actions(change_header)` when the milter cannot work without it, `optional_actions(change_header)` when it checks `ctx.actions()` first",
    "a type implements `action::ChangeHeader` but its `Declaration` lists `CHANGE_HEADER` in neither ACTIONS nor OPTIONAL_ACTIONS";
    ChangeBody, CHANGE_BODY, "change_body",
    "`{Self}` does not declare the `change_body` action",
    "add `#[milter(actions(change_body))]` (or `optional_actions`) to `{Self}`",
    "a modification needs its action declared on the milter's type: `actions(change_body)` when the milter cannot work without it, `optional_actions(change_body)` when it checks `ctx.actions()` first",
    "a type implements `action::ChangeBody` but its `Declaration` lists `CHANGE_BODY` in neither ACTIONS nor OPTIONAL_ACTIONS";
    AddRcpt, ADD_RCPT, "add_rcpt",
    "`{Self}` does not declare the `add_rcpt` action",
    "add `#[milter(actions(add_rcpt))]` (or `optional_actions`) to `{Self}`",
    "a modification needs its action declared on the milter's type: `actions(add_rcpt)` when the milter cannot work without it, `optional_actions(add_rcpt)` when it checks `ctx.actions()` first",
    "a type implements `action::AddRcpt` but its `Declaration` lists `ADD_RCPT` in neither ACTIONS nor OPTIONAL_ACTIONS";
    AddRcptWithArgs, ADD_RCPT_WITH_ARGS, "add_rcpt_with_args",
    "`{Self}` does not declare the `add_rcpt_with_args` action",
    "add `#[milter(actions(add_rcpt_with_args))]` (or `optional_actions`) to `{Self}`",
    "a modification needs its action declared on the milter's type: `actions(add_rcpt_with_args)` when the milter cannot work without it, `optional_actions(add_rcpt_with_args)` when it checks `ctx.actions()` first",
    "a type implements `action::AddRcptWithArgs` but its `Declaration` lists `ADD_RCPT_WITH_ARGS` in neither ACTIONS nor OPTIONAL_ACTIONS";
    DeleteRcpt, DELETE_RCPT, "delete_rcpt",
    "`{Self}` does not declare the `delete_rcpt` action",
    "add `#[milter(actions(delete_rcpt))]` (or `optional_actions`) to `{Self}`",
    "a modification needs its action declared on the milter's type: `actions(delete_rcpt)` when the milter cannot work without it, `optional_actions(delete_rcpt)` when it checks `ctx.actions()` first",
    "a type implements `action::DeleteRcpt` but its `Declaration` lists `DELETE_RCPT` in neither ACTIONS nor OPTIONAL_ACTIONS";
    ChangeFrom, CHANGE_FROM, "change_from",
    "`{Self}` does not declare the `change_from` action",
    "add `#[milter(actions(change_from))]` (or `optional_actions`) to `{Self}`",
    "a modification needs its action declared on the milter's type: `actions(change_from)` when the milter cannot work without it, `optional_actions(change_from)` when it checks `ctx.actions()` first",
    "a type implements `action::ChangeFrom` but its `Declaration` lists `CHANGE_FROM` in neither ACTIONS nor OPTIONAL_ACTIONS";
    Quarantine, QUARANTINE, "quarantine",
    "`{Self}` does not declare the `quarantine` action",
    "add `#[milter(actions(quarantine))]` (or `optional_actions`) to `{Self}`",
    "a modification needs its action declared on the milter's type: `actions(quarantine)` when the milter cannot work without it, `optional_actions(quarantine)` when it checks `ctx.actions()` first",
    "a type implements `action::Quarantine` but its `Declaration` lists `QUARANTINE` in neither ACTIONS nor OPTIONAL_ACTIONS";
}
