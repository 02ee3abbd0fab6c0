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

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod client;
mod connection;
mod context;
mod handler;
mod header_index;
mod hooks;
mod listener;
mod pool;
mod registry;
mod server;
mod socket_spec;

#[doc(hidden)]
#[path = "derive_support.rs"]
pub mod __private;

pub use context::{ConnectionInfo, Context, EomContext, ModifyError};
pub use handler::{HandlerError, HandlerResult, Milter};
pub use hooks::Hooks;
pub use listener::{ListenOptions, Listener};
pub use milter_core::{
    self as core, bare_address, Actions, Args, ConnectAddr, EnvelopeAddr, Header, MacroStage,
    OptNeg, ProtocolOpts, SmtpReply, Spec, Stage, Stages, Status,
};
pub use milter_derive::Milter;
pub use registry::ServerStats;
pub use server::{
    Server, ServerBuilder, ServerError, ServerHandle, DEFAULT_IDLE_THREAD_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_QUEUE, DEFAULT_STACK_SIZE, DEFAULT_TIMEOUT,
};
pub use socket_spec::{SocketSpec, SocketSpecError};
