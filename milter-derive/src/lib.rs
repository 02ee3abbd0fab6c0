//! The macros of `milter-blocking`: `#[derive(Milter)]` declares what a milter
//! asks the MTA for, and `#[handlers]` goes on its `impl Milter` block. Use them
//! through `milter-blocking`, which re-exports both (`milter_blocking::Milter`,
//! `milter_blocking::handlers`) next to the `Milter` trait.
//!
//! ```
//! use milter_blocking::{handlers, Context, EnvelopeAddr, EomContext, HandlerResult, Milter, Status};
//!
//! #[derive(Milter, Default)]
//! #[milter(actions(add_header), optional_actions(quarantine))]
//! #[milter(macros(connect = "{j} {daemon_name}", eom = "{i}"))]
//! struct Stamp {
//!     #[milter(per_message)]
//!     rcpts: usize,
//! }
//!
//! #[handlers]
//! impl Milter for Stamp {
//!     // No reply: the MTA need not wait for one.
//!     fn rcpt(&mut self, _ctx: &mut Context<'_>, _rcpt: &EnvelopeAddr<'_>) {
//!         self.rcpts += 1;
//!     }
//!
//!     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
//!         ctx.add_header("X-Rcpts", self.rcpts.to_string())?;
//!         Ok(Status::Accept)
//!     }
//! }
//!
//! use milter_blocking::{Actions, Stages};
//! assert_eq!(<Stamp as Milter>::SPEC.handled, Stages::RCPT | Stages::EOM);
//! assert_eq!(<Stamp as Milter>::SPEC.no_reply, Stages::RCPT);
//! assert_eq!(<Stamp as Milter>::SPEC.actions, Actions::ADD_HEADER);
//! ```
//!
//! # `#[derive(Milter)]`
//!
//! Implements `milter_blocking::Declaration` (the actions, options and macros
//! the milter negotiates, and `reset_message`) and, for each declared action,
//! its marker trait in `milter_blocking::action`, which the end-of-message
//! context's modification calls require. On the type, `#[milter(…)]` takes any
//! of these, in one attribute or several:
//!
//! - `actions(name, …)`: the modifications the milter needs; an MTA that does
//!   not offer them all fails the connection. Names: `add_header`,
//!   `change_body`, `add_rcpt`, `delete_rcpt`, `change_header`, `quarantine`,
//!   `change_from`, `add_rcpt_with_args`.
//!
//!   ```
//!   # use milter_blocking::{handlers, Milter};
//!   #[derive(Milter)]
//!   #[milter(actions(add_header, change_header))]
//!   struct Rewriter;
//!   # #[handlers] impl Milter for Rewriter {}
//!   ```
//!
//! - `optional_actions(name, …)`: the same, asked for only when offered; check
//!   `ctx.actions()` before using one (a call the MTA did not allow fails at run
//!   time with `ModifyError`).
//!
//!   ```
//!   # use milter_blocking::{handlers, Milter};
//!   #[derive(Milter)]
//!   #[milter(optional_actions(quarantine))]
//!   struct Holder;
//!   # #[handlers] impl Milter for Holder {}
//!   ```
//!
//! - `options(name, …)` and `optional_options(name, …)`: capabilities, among
//!   `skip` (answer body chunks with `Status::Skip`), `rcpt_rej` (also see
//!   recipients the MTA rejected) and `header_leading_space` (header values
//!   keep their leading space).
//!
//!   ```
//!   # use milter_blocking::{handlers, Milter};
//!   #[derive(Milter)]
//!   #[milter(options(header_leading_space), optional_options(skip))]
//!   struct Exact;
//!   # #[handlers] impl Milter for Exact {}
//!   ```
//!
//! - `macros(stage = "names", …)`: the macros wanted at a stage, separated by
//!   spaces, each a single character (`i`) or a name in braces
//!   (`{daemon_name}`). Stages: `connect`, `helo`, `mail`, `rcpt`, `data`,
//!   `eoh` (also seen by header handlers) and `eom` (also seen by body
//!   handlers). Sent only to MTAs that offer symbol lists.
//!
//!   ```
//!   # use milter_blocking::{handlers, Milter};
//!   #[derive(Milter)]
//!   #[milter(macros(mail = "{auth_authen}", eom = "i"))]
//!   struct Auth;
//!   # #[handlers] impl Milter for Auth {}
//!   ```
//!
//! - `crate = path` (or `crate = "path"`): where `milter-blocking` is, for a
//!   crate that renames the dependency (`mb = { package = "milter-blocking", … }`)
//!   or reaches it through another crate. `#[handlers]` takes the same argument.
//!
//!   ```
//!   extern crate milter_blocking as mb;
//!
//!   #[derive(mb::Milter)]
//!   #[milter(crate = mb)]
//!   struct Renamed;
//!
//!   #[mb::handlers(crate = mb)]
//!   impl mb::Milter for Renamed {}
//!   ```
//!
//! On a field, `#[milter(per_message)]` resets it to its `Default` before each
//! message and after each message ends (in `Declaration::reset_message`); the
//! field's type must implement `Default`.
//!
//! ```
//! # use milter_blocking::{handlers, Milter};
//! #[derive(Milter)]
//! struct Counter {
//!     connections: u32,      // kept for the whole connection
//!     #[milter(per_message)]
//!     rcpts: Vec<String>,    // emptied for each message
//! }
//! # #[handlers] impl Milter for Counter {}
//! ```
//!
//! Every unknown or repeated name and every malformed list is a compile error
//! pointing at it. The type may be generic (with bounds and where clauses),
//! declared in any module or inside a function body. Enums and unions are
//! refused: the per-connection state lives in a struct.
//!
//! # `#[handlers]`
//!
//! Goes on the `impl Milter for Type` block, which holds the handlers and
//! nothing else. Each handler is a method of the `Milter` trait; write only
//! those you need:
//!
//! | handler | arguments after `&mut self` | returns |
//! | --- | --- | --- |
//! | `negotiate` | `offer: &OptNeg, spec: &mut Spec` | unit |
//! | `connect` | `ctx: &mut Context<'_>, hostname: &[u8], addr: ConnectAddr<'_>` | stage |
//! | `helo` | `ctx: &mut Context<'_>, name: &[u8]` | stage |
//! | `mail` | `ctx: &mut Context<'_>, sender: &EnvelopeAddr<'_>` | stage |
//! | `rcpt` | `ctx: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>` | stage |
//! | `data` | `ctx: &mut Context<'_>` | stage |
//! | `header` | `ctx: &mut Context<'_>, header: &Header<'_>` | stage |
//! | `eoh` | `ctx: &mut Context<'_>` | stage |
//! | `body` | `ctx: &mut Context<'_>, chunk: &[u8]` | stage |
//! | `eom` | `ctx: &mut EomContext<'_, Self>` | stage |
//! | `abort` | `ctx: &mut Context<'_>` | unit |
//! | `close` | `ctx: &mut Context<'_>` | unit |
//! | `unknown` | `ctx: &mut Context<'_>, command: &[u8]` | stage |
//!
//! What a stage handler returns decides how the stage is negotiated:
//!
//! - `Status`, `HandlerResult` or `Result<Status, E>` (with
//!   `E: Into<HandlerError>`): the stage is asked for and answered;
//! - `()` (no return type) or `Result<(), E>`: the handler can only continue, so
//!   the MTA is asked not to wait for a reply (the `NR_*` bit, where offered;
//!   otherwise the server answers continue). End of message always gets a reply;
//! - no handler: the MTA is asked not to send the stage at all (the `NO*` bit,
//!   where offered; otherwise the server answers continue).
//!
//! A "unit" handler (`negotiate`, `abort`, `close`) returns `()`,
//! `HandlerResult<()>` or `Result<(), E>`.
//!
//! Write the concrete return type: the trait declares `-> impl StageReturn`,
//! and the attribute reads the type you wrote (`-> impl StageReturn` in the
//! block is an error saying so). The attribute also adds
//! `#[allow(refining_impl_trait)]` to each handler.
//!
//! The compiler catches:
//!
//! - a method that is not a handler (`recpt`, `hello`, `envfrom`, `eom_`,
//!   `xxfi_eom`): an error at its name naming the handler it resembles,
//!   libmilter's names included (a helper goes in an inherent `impl Type`
//!   block, where a name like `connect` or `body` is just a method);
//! - a wrong argument type or count: rustc's error against the trait's
//!   signature;
//! - a wrong return type: an error listing the return types allowed;
//! - `const SPEC` in the block: an error (it is computed);
//! - `#[handlers]` missing, or `#[derive(Milter)]` missing: an error at the
//!   `impl` saying what to add where;
//! - two `impl Milter` blocks for one type: conflicting implementations;
//! - a modification whose action is not declared: an error at the call naming
//!   the attribute to add.
//!
//! # Without the derive
//!
//! `milter_blocking::Declaration` may be implemented by hand (every constant
//! has a default: nothing asked for), together with the action markers of the
//! declared actions; `#[handlers]` is still required. A marker whose action the
//! declaration does not list fails the build where a modification of that
//! action is called.
//!
//! # How it works, and the trade-offs
//!
//! - Handlers are trait methods, so rustc checks their names and signatures,
//!   and calls them with static dispatch (the server is generic over the
//!   milter type, so each handler is inlined into the connection loop as
//!   before). Earlier versions looked up inherent methods by name, which could
//!   not tell a misspelt handler or a helper from a handler.
//! - The trait's stage methods return `impl StageReturn`, so that a handler may
//!   return `Status`, `HandlerResult`, `()`, …; an impl refines that to the
//!   type written. Generic code (the server) sees only the opaque type, so the
//!   negotiation cannot be read from it: `#[handlers]`, which sees the block's
//!   tokens, writes a hidden `Handlers` impl beside it whose constants are
//!   computed by the compiler from the written return types
//!   (`<Ret as StageReturn>::NO_REPLY`) and the handler names. This is why the
//!   attribute is required, and why the return type must be written out. The
//!   opaque type also captures the arguments' lifetimes, so the value a
//!   handler returns must be used before its arguments go away (the server
//!   does).
//! - `Milter::SPEC` is a provided constant built from `Declaration` and
//!   `Handlers`, which `Milter` requires as supertraits: forgetting either macro
//!   is an unsatisfied bound, whose message (`#[diagnostic::on_unimplemented]`)
//!   says what to add.
//! - The end-of-message context is typed by the milter (`EomContext<'_, M>`),
//!   and each modification call has a `where M: action::…` bound, so an
//!   undeclared action is a compile error at the call. An optional action stays
//!   a run-time question (the MTA may not offer it).
//! - Handlers live in one `impl Milter` block (a trait impl cannot be split);
//!   shared code goes in inherent methods or free functions.
//! - Generated code names the runtime through a versioned hidden module
//!   (`milter_blocking::__private_v1`) and `milter-blocking` pins this crate
//!   with `=`, so mismatched versions fail to build rather than misbehave.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod expand;
mod handlers;
mod parse;
mod validate;

use proc_macro::TokenStream;

/// Implements `milter_blocking::Declaration` and the `milter_blocking::action`
/// markers from the type's `#[milter(…)]` attributes: `actions(…)`,
/// `optional_actions(…)`, `options(…)`, `optional_options(…)`, `macros(…)`,
/// `crate = path`, and `per_message` on fields. The full reference is in the
/// crate documentation (and on `milter_blocking::Milter`).
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

/// Goes on the `impl Milter for Type` block: checks that every method is a
/// handler (naming the handler a misspelt one resembles), and tells the
/// negotiation which stages have handlers and which never reply, from the
/// return types written. Takes `crate = path` when `milter-blocking` is
/// renamed. The full reference is in the crate documentation.
#[proc_macro_attribute]
pub fn handlers(args: TokenStream, item: TokenStream) -> TokenStream {
    handlers::handlers(args.into(), item.into()).into()
}
