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
//! # Logging policy
//!
//! The crate logs through the [`log`](https://docs.rs/log) facade and never
//! installs a logger. Every line about a connection starts with its number and
//! the MTA's address, and the queue id once the MTA sent it.
//!
//! - **error**: the server cannot go on (accept failed for good); a handler
//!   panicked (with the panic message); a worker thread could not be started.
//! - **warn**: the MTA broke the protocol; negotiation failed; a handler returned
//!   an error; a read timed out; a connection was refused at the limit; a
//!   handler's status was changed (reject at a no-reply stage, discard at
//!   connect, ...); the shutdown deadline cut connections.
//! - **info**: start (each listener) and stop; shadow-mode lines.
//! - **debug**: connections opened and closed (an MTA closing its connection is
//!   ordinary and never logged above debug); the negotiation result.
//! - **trace**: every command received.

#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod action;
mod activation;
mod cache_line;
pub mod client;
mod connection;
mod context;
mod declaration;
mod handler;
mod header_index;
mod hooks;
mod listener;
mod pool;
mod read_watch;
mod registry;
mod server;
mod socket_spec;
mod spin;

#[doc(hidden)]
#[path = "private_v1.rs"]
pub mod __private_v1;

pub use activation::take_listeners;
pub use context::{ConnectionInfo, Context, EomContext, ModifyError};
pub use declaration::Declaration;
pub use handler::{HandlerError, HandlerResult, Milter, StageReturn, UnitReturn};
pub use hooks::Hooks;
pub use listener::{ListenOptions, Listener};
pub use milter_core;
pub use milter_core::{
    bare_address, Actions, Args, ConnectAddr, EnvelopeAddr, Header, MacroStage, OptNeg,
    ProtocolOpts, SmtpReply, Spec, Stage, Stages, Status,
};
pub use milter_derive::{handlers, Milter};
pub use registry::ServerStats;
pub use server::{
    Server, ServerBuilder, ServerError, ServerHandle, DEFAULT_BUSY_POLL,
    DEFAULT_IDLE_THREAD_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_QUEUE, DEFAULT_STACK_SIZE,
    DEFAULT_TIMEOUT,
};
pub use socket_spec::{SocketSpec, SocketSpecError};
