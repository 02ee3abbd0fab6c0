//! `#[derive(Milter)]`: works out a milter's negotiation from the handlers its
//! type implements. Use it through `milter-blocking`, which re-exports it next to
//! the `Milter` trait of the same name.
//!
//! # Handlers
//!
//! Write the stages you care about as inherent methods named after them, with
//! the argument types of the `Milter` trait; receivers may be `&self` or
//! `&mut self`:
//!
//! | method | arguments after the receiver |
//! | --- | --- |
//! | `connect` | `&mut Context<'_>, hostname: &[u8], addr: ConnectAddr<'_>` |
//! | `helo` | `&mut Context<'_>, name: &[u8]` |
//! | `mail`, `rcpt` | `&mut Context<'_>, &EnvelopeAddr<'_>` |
//! | `data`, `eoh` | `&mut Context<'_>` |
//! | `header` | `&mut Context<'_>, &Header<'_>` |
//! | `body`, `unknown` | `&mut Context<'_>, &[u8]` |
//! | `eom` | `&mut EomContext<'_>` |
//! | `negotiate` | `&OptNeg, &mut Spec` |
//! | `abort`, `close` | `&mut Context<'_>` |
//!
//! What a stage handler returns decides how it is negotiated:
//!
//! - `Status`, `HandlerResult` or `Result<Status, E>` (with
//!   `E: Into<HandlerError>`): the stage is asked for and answered;
//! - `()` or `Result<(), E>`: the handler can only continue, so the MTA is asked
//!   not to wait for a reply (the `NR_*` bit, where offered; otherwise the server
//!   answers continue);
//! - no method: the MTA is asked not to send the stage at all (the `NO*` bit,
//!   where offered; otherwise the server answers continue).
//!
//! `negotiate`, `abort` and `close` return `()`, `HandlerResult<()>` or
//! `Result<(), E>`, and are called when present. A misspelt handler is not
//! called, and the compiler warns that it is never used.
//!
//! # Attributes
//!
//! On the type, `#[milter(…)]` takes any of these, in one attribute or several:
//!
//! - `actions(name, …)`: the modifications the milter needs; an MTA that does
//!   not offer them all fails the connection. Names: `add_header`,
//!   `change_body`, `add_rcpt`, `delete_rcpt`, `change_header`, `quarantine`,
//!   `change_from`, `add_rcpt_with_args`.
//! - `optional_actions(name, …)`: the same, asked for only when offered.
//! - `options(name, …)` and `optional_options(name, …)`: capabilities, among
//!   `skip` (answer body chunks with `Status::Skip`), `rcpt_rej` (also see
//!   recipients the MTA rejected) and `header_leading_space`.
//! - `macros(stage = "names", …)`: the macros wanted at a stage, separated by
//!   spaces, each a single character (`i`) or a name in braces
//!   (`{daemon_name}`). Stages: `connect`, `helo`, `mail`, `rcpt`, `data`,
//!   `eoh` (also seen by header handlers) and `eom` (also seen by body
//!   handlers). Sent only to MTAs that offer symbol lists.
//!
//! On a field, `#[milter(per_message)]` resets it to its `Default` before each
//! message (in `Milter::reset_message`).
//!
//! Every unknown or repeated name and every malformed list is a compile error
//! pointing at it.
//!
//! ```
//! use milter_blocking::{Context, EnvelopeAddr, EomContext, HandlerResult, Milter, Status};
//!
//! #[derive(Milter, Default)]
//! #[milter(actions(add_header), optional_actions(quarantine))]
//! #[milter(macros(connect = "{j} {daemon_name}", eom = "{i}"))]
//! struct Stamp {
//!     #[milter(per_message)]
//!     rcpts: usize,
//! }
//!
//! impl Stamp {
//!     // No reply: the MTA need not wait for one.
//!     fn rcpt(&mut self, _ctx: &mut Context<'_>, _rcpt: &EnvelopeAddr<'_>) {
//!         self.rcpts += 1;
//!     }
//!
//!     fn eom(&mut self, ctx: &mut EomContext<'_>) -> HandlerResult {
//!         ctx.add_header("X-Rcpts", self.rcpts.to_string())?;
//!         Ok(Status::Accept)
//!     }
//! }
//!
//! # fn main() {
//! use milter_blocking::{Actions, Stages};
//! assert_eq!(Stamp::SPEC.handled, Stages::RCPT | Stages::EOM);
//! assert_eq!(Stamp::SPEC.no_reply, Stages::RCPT);
//! assert_eq!(Stamp::SPEC.actions, Actions::ADD_HEADER);
//! # }
//! ```
//!
//! # Limitations
//!
//! - The type must be declared in a module, not inside a function body: the
//!   handlers are looked up from a generated module that names the type as
//!   `super::Type` (doc tests that declare one need an explicit `fn main`).
//! - The handlers must be visible from the module that declares the type
//!   (declared there, or `pub(crate)`); a handler it cannot see is not called.
//! - Generic types are refused.
//! - The generated code names the runtime as `::milter_blocking`, so the crate
//!   must not be renamed.
//!
//! # How it works
//!
//! The generated `impl Milter` calls each stage as `<Type>::stage(…)` from a
//! module of its own where a hidden fallback trait, implemented for every type,
//! is in scope and `Milter` is not. Rust picks an inherent method before a trait
//! method, so the user's handler is called when it exists and the fallback,
//! which returns a private `NotHandled` type, otherwise. The type of the call
//! then decides, through a trait with associated constants, whether the stage is
//! handled and whether it replies; `SPEC` is a constant built from those.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod expand;
mod parse;
mod validate;

use proc_macro::TokenStream;

/// Implements `milter_blocking::Milter` from the type's inherent handler methods
/// and its `#[milter(…)]` attributes. See the [crate documentation](crate).
#[proc_macro_derive(Milter, attributes(milter))]
pub fn derive_milter(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    let (parsed, parse_errors) = parse::parse(input);
    let (model, validate_errors) = validate::validate(parsed);
    // Errors go out together with the expansion of whatever was valid, so the
    // user's crate keeps compiling and each mistake gets one message.
    let mut out = expand::expand(&model);
    for error in parse_errors.into_iter().chain(validate_errors) {
        out.extend(error.to_compile_error());
    }
    out.into()
}
