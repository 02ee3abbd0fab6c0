//! Write milters for Postfix and Sendmail in ordinary, non-async Rust.
//!
//! A user writes a type, derives [`Milter`](derive@Milter) on it to declare
//! what it asks the MTA for, and implements the [`Milter`] trait's handlers for
//! the stages they care about in an `impl` block marked
//! [`#[handlers]`](macro@handlers); together they work out what to negotiate.
//!
//! ```
//! use milter_blocking::{handlers, EomContext, HandlerResult, Milter, Status};
//!
//! #[derive(Milter, Default)]
//! #[milter(actions(add_header))]
//! struct Stamp;
//!
//! #[handlers]
//! impl Milter for Stamp {
//!     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
//!         ctx.add_header("X-Stamped", "yes")?;
//!         Ok(Status::Continue)
//!     }
//! }
//! ```
//!
//! The compiler checks the handlers' names and signatures, and that every
//! modification the end-of-message handler makes is declared (see
//! [`Milter`], [`action`] and the [derive's reference](derive@Milter)).
//!
//! # Testing a milter
//!
//! [`client`] is the MTA side of the protocol: it sends a milter what Postfix,
//! Sendmail or Stalwart would ([`client::Profile`]) and returns its decisions and
//! modifications, so a milter's tests need no MTA. The `milter-check` command
//! (feature `cli`) runs it from the shell.
//!
//! A test starts the server on a listener of its own (`inet:0@127.0.0.1`
//! picks a free port; [`Server::local_spec`] says which), drives it with the
//! MTA-side [`client`], and asserts on the replies, the verdict and the
//! modifications; no MTA is needed. The page `docs/TESTING.md` in the
//! source repository walks through it (Unix sockets, stage by stage, both MTAs'
//! rules, a table for users of miltertest).
//!
//! ```
//! # use milter_blocking::{handlers, EomContext, HandlerResult, Milter, Status};
//! # #[derive(Milter, Default)]
//! # #[milter(actions(add_header))]
//! # struct Stamp;
//! # #[handlers]
//! # impl Milter for Stamp {
//! #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
//! #         ctx.add_header("X-Stamped", "yes")?;
//! #         Ok(Status::Continue)
//! #     }
//! # }
//! use milter_blocking::client::{Client, Envelope, Message, Verdict};
//! use milter_blocking::Server;
//! use std::time::Duration;
//!
//! let server = Server::builder().listen("inet:0@127.0.0.1")?.build(Stamp::default)?;
//! let spec = server.local_spec();
//! let handle = server.handle();
//! let running = std::thread::spawn(move || server.run());
//!
//! let mut client = Client::open(&spec)?;
//! let envelope = Envelope::new("alice@example.org").rcpt("bob@example.com");
//! let message = Message::parse(b"Subject: hi\r\n\r\nHello.\r\n");
//! let transcript = client.send_message(&envelope, &message)?;
//! assert_eq!(transcript.verdict, Verdict::Accept);
//! assert!(transcript.eom.unwrap().has_added_header("X-Stamped", "yes"));
//! client.quit()?;
//!
//! handle.shutdown(Duration::ZERO);
//! running.join().unwrap()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

//!
//! # Logging policy
//!
//! The crate logs through the [`log`](https://docs.rs/log) facade and never
//! installs a logger. Every line about a connection starts with its number and
//! the MTA's address, and the queue id once the MTA sent it.
//!
//! - **error**: the server cannot go on (accept failed for good); a handler
//!   panicked (with the panic message).
//! - **warn**: the MTA broke the protocol (a peer that is not an MTA is named
//!   from its first bytes); negotiation failed; a handler returned an error; a
//!   read or a write timed out; connections were refused at the limit or for
//!   want of a thread (one line, then one per second with a count); a
//!   handler's status was changed (reject at a no-reply stage, discard at
//!   connect, ...); the shutdown deadline cut connections; `max_connections`
//!   cannot fit the descriptor limit.
//! - **info**: start (each listener) and stop; shadow-mode lines.
//! - **debug**: connections opened and closed (an MTA closing its connection is
//!   ordinary and never logged above debug); the negotiation result.
//! - **trace**: every command received.

#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod action;
mod activation;
mod cache_line;
pub mod capture;
pub mod client;
mod connection;
mod context;
mod declaration;
mod descriptor_limit;
mod foreign_peer;
mod handler;
mod header_index;
mod hooks;
mod listener;
mod overflow;
mod pool;
mod read_watch;
mod refusals;
mod registry;
mod server;
mod service_notify;
#[cfg(feature = "signals")]
mod signals;
mod socket_spec;
mod spin;
mod system_ids;

#[doc(hidden)]
#[path = "private_v1.rs"]
pub mod __private_v1;

pub use activation::take_listeners;
pub use context::{ConnectionInfo, Context, EomContext, ModifyError};
pub use declaration::Declaration;
pub use handler::{HandlerError, HandlerResult, Milter, StageReturn, UnitReturn};
pub use hooks::Hooks;
pub use listener::{ExistingSocketFile, ListenOptions, Listener};
pub use milter_core;
pub use milter_core::{
    bare_address, Actions, Args, ConnectAddr, EnvelopeAddr, Header, MacroStage, OptNeg,
    ProtocolOpts, SmtpReply, Spec, Stage, Stages, Status,
};
/// Declares a milter type: implements [`Declaration`] from the type's
/// `#[milter(…)]` attributes, and the [`action`] marker of every declared
/// action, so that its [`EomContext`] offers those modifications.
///
/// | attribute | on | meaning |
/// | --- | --- | --- |
/// | `actions(add_header, …)` | type | actions required ([`Declaration::ACTIONS`]) |
/// | `optional_actions(quarantine, …)` | type | actions used when offered ([`Declaration::OPTIONAL_ACTIONS`]) |
/// | `options(skip, …)` | type | capabilities required: `skip`, `rcpt_rej`, `header_leading_space` |
/// | `optional_options(skip, …)` | type | capabilities used when offered |
/// | `macros(connect = "{j} {daemon_name}", …)` | type | macros wanted per stage ([`Declaration::MACROS`]) |
/// | `crate = path` | type | where this crate is, when renamed |
/// | `per_message` | field | reset to `Default` for each message ([`Declaration::reset_message`]) |
///
/// Action names: `add_header`, `change_header`, `change_body`, `add_rcpt`,
/// `add_rcpt_with_args`, `delete_rcpt`, `change_from`, `quarantine` (see
/// [`action`] for the calls each allows). The handlers go in an
/// `impl Milter for Type` block marked [`#[handlers]`](macro@handlers); the
/// [`Milter`](trait@Milter) trait lists them with their signatures and return
/// types.
///
/// ```
/// use milter_blocking::{handlers, Context, EnvelopeAddr, EomContext, HandlerResult, Milter, Status};
///
/// #[derive(Milter, Default)]
/// #[milter(actions(add_header), optional_actions(quarantine))]
/// #[milter(macros(mail = "{auth_authen}"))]
/// struct Stamp {
///     #[milter(per_message)]
///     rcpts: usize,
/// }
///
/// #[handlers]
/// impl Milter for Stamp {
///     fn rcpt(&mut self, _ctx: &mut Context<'_>, _rcpt: &EnvelopeAddr<'_>) {
///         self.rcpts += 1;
///     }
///     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
///         ctx.add_header("X-Rcpts", self.rcpts.to_string())?;
///         Ok(Status::Continue)
///     }
/// }
/// ```
///
/// The macro's own summary follows.
#[doc(inline)]
pub use milter_derive::Milter;

/// Marks the `impl Milter for Type` block that holds a milter's handlers.
///
/// It checks every method name against the handlers of the
/// [`Milter`](trait@Milter) trait (a misspelt one, `recpt` or libmilter's
/// `envfrom`, is an error at the name that names the handler meant), refuses a
/// written `SPEC`, and records which stages have handlers and which never
/// reply, from the return types as written ([`StageReturn`]). Without it the
/// `impl` fails to build with a message saying to add it. `crate = path` names
/// this crate when it is renamed: `#[mb::handlers(crate = mb)]`.
///
/// ```
/// use milter_blocking::{handlers, Context, Milter, Stages, Status};
///
/// #[derive(Milter)]
/// struct Greeter;
///
/// #[handlers]
/// impl Milter for Greeter {
///     fn helo(&mut self, _ctx: &mut Context<'_>, name: &[u8]) -> Status {
///         if name.is_empty() { Status::Reject } else { Status::Continue }
///     }
/// }
///
/// assert_eq!(<Greeter as Milter>::SPEC.handled, Stages::HELO);
/// ```
#[doc(inline)]
pub use milter_derive::handlers;
pub use registry::ServerStats;
pub use server::{
    Server, ServerBuilder, ServerError, ServerHandle, WhenFull, DEFAULT_BUSY_POLL,
    DEFAULT_IDLE_THREAD_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_QUEUE, DEFAULT_STACK_SIZE,
    DEFAULT_TIMEOUT,
};
pub use socket_spec::{SocketSpec, SocketSpecError};
pub use system_ids::{group_id, user_id, IdLookupError};
