//! The sendmail milter protocol without I/O.
//!
//! This crate is the protocol as data and state machines: bytes in, events out,
//! bytes out. It opens no sockets, starts no threads, reads no clock and logs
//! nothing; [`milter-blocking`](https://docs.rs/milter-blocking) drives it over
//! real sockets.
//!
//! In scope: protocol version 6 and the versions 2–4 that MTAs may still offer;
//! framing ([`frame`]); every command ([`Command`]) and reply ([`Reply`]) with
//! byte-exact `decode`/`encode`; the two negotiation masks ([`Actions`],
//! [`ProtocolOpts`]); negotiation as a pure function ([`negotiate()`]); macro
//! storage with libmilter's scoping ([`MacroStore`]); validated custom SMTP
//! replies ([`SmtpReply`]); the milter-side session ([`filter::FilterSession`])
//! and the MTA-side session ([`client::ClientSession`]).
//!
//! Out of scope: sockets, timeouts, threads, logging, and anything a milter does
//! with the mail.
//!
//! ```
//! use milter_core::{client::ClientSession, filter::{Event, FilterSession}, frame::FrameDecoder};
//! use milter_core::{OptNeg, Spec, Stages, Status};
//!
//! // An MTA-side session and a milter-side session talking through memory.
//! let mut mta = ClientSession::new(OptNeg::POSTFIX_3);
//! let mut milter = FilterSession::new();
//! let spec = Spec { handled: Stages::HELO, ..Spec::NONE };
//! let mut to_milter = FrameDecoder::new();
//! to_milter.push(mta.output());
//! mta.clear_output();
//! let frame = to_milter.next_frame().unwrap().unwrap();
//! assert!(matches!(milter.handle(frame).unwrap().event, Some(Event::Negotiate(_))));
//! milter.negotiate(&spec).unwrap();
//! let mut to_mta = FrameDecoder::new();
//! to_mta.push(milter.output());
//! let reply = to_mta.next_frame().unwrap().unwrap();
//! let agreed = mta.receive_negotiation(reply).unwrap();
//! assert!(agreed.skipped.contains(Stages::CONNECT));
//! # let _ = Status::Continue;
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod client;
mod command;
mod error;
pub mod filter;
mod flags;
pub mod frame;
pub mod limits;
mod macros;
mod modification;
mod negotiate;
mod reader;
mod reply;
mod smtp_reply;
mod stage;
mod status;

pub use command::{
    bare_address, Args, Command, Connect, ConnectAddr, EnvelopeAddr, Family, Header, MacroDef,
    MacroPairs, OptNeg,
};
pub use error::{
    ActionError, ClientError, DecodeError, MacroLimitError, NegotiateError, ReplyError,
    SessionError,
};
pub use flags::{Actions, ProtocolOpts};
pub use macros::MacroStore;
pub use modification::Modification;
pub use negotiate::{negotiate, Negotiated, Spec, CAPABILITY_OPTIONS};
pub use reply::{OptNegReply, Reply, SymbolList};
pub use smtp_reply::SmtpReply;
pub use stage::{MacroStage, Stage, Stages};
pub use status::Status;
