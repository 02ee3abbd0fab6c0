//! Write milters for Postfix and Sendmail in ordinary, non-async Rust.
//!
//! A user writes a type, implements the stages they care about as inherent
//! methods, and derives [`Milter`]; the derive works out what to negotiate.
//!
//! ```
//! use milter_blocking::{EomContext, Milter, Status, HandlerResult};
//!
//! #[derive(Milter, Default)]
//! #[milter(actions(add_header))]
//! struct Stamp;
//!
//! impl Stamp {
//!     fn eom(&mut self, ctx: &mut EomContext<'_>) -> HandlerResult {
//!         ctx.add_header("X-Stamped", "yes")?;
//!         Ok(Status::Continue)
//!     }
//! }
//! # fn main() {}
//! ```
//!
//! The derive needs the type at module level (not inside a function body): the
//! code it generates reaches the type through a module path.

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

mod activation;
mod cache_line;
pub mod client;
mod connection;
mod context;
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
#[path = "derive_support.rs"]
pub mod __private;

pub use activation::take_listeners;
pub use context::{ConnectionInfo, Context, EomContext, ModifyError};
pub use handler::{HandlerError, HandlerResult, Milter};
pub use hooks::Hooks;
pub use listener::{ExistingSocketFile, ListenOptions, Listener};
pub use milter_core::{
    self as core, bare_address, Actions, Args, ConnectAddr, EnvelopeAddr, Header, MacroStage,
    OptNeg, ProtocolOpts, SmtpReply, Spec, Stage, Stages, Status,
};
pub use milter_derive::Milter;
pub use registry::ServerStats;
pub use server::{
    Server, ServerBuilder, ServerError, ServerHandle, WhenFull, DEFAULT_BUSY_POLL,
    DEFAULT_IDLE_THREAD_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_QUEUE, DEFAULT_STACK_SIZE,
    DEFAULT_TIMEOUT,
};
pub use socket_spec::{SocketSpec, SocketSpecError};
pub use system_ids::{group_id, user_id, IdLookupError};
