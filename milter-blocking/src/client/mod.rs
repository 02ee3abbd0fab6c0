//! The MTA side of the protocol: a client that drives any milter, stage by stage
//! or a whole message at a time, the way Postfix, Sendmail or Stalwart would.
//!
//! This is what a milter's own tests use in place of an MTA (instead of
//! `miltertest` and its Lua scripts): connect to the milter (or hand over one end
//! of a socket pair), send a message, and check the decisions and modifications.
//! It also drives our own tests and benchmarks, and the `milter-check`
//! command-line tester.
//!
//! - [`Client::open`] connects to a socket spec (`inet:PORT@HOST`, `inet6:PORT@HOST`,
//!   `unix:/path`) and negotiates; [`Client::negotiated`] tells what the milter asked
//!   for: stages to skip, stages without reply, actions, macros.
//! - One method per stage: [`Client::connect`], [`Client::helo`], [`Client::mail`],
//!   [`Client::rcpt`], [`Client::data`], [`Client::header`], [`Client::eoh`],
//!   [`Client::body`], [`Client::eom`], [`Client::abort`], [`Client::quit`],
//!   [`Client::quit_new_connection`], [`Client::unknown`]. Each sends the macros of
//!   its stage first (in the same write), does not send a stage the milter
//!   negotiated away ([`Response::Skipped`]), does not wait for a reply the milter
//!   negotiated away ([`Response::NoReply`]), and otherwise returns the milter's
//!   [`Decision`].
//! - [`Client::eom`] returns an [`EomResult`]: the decision, the modifications in
//!   order, helpers to query them, and [`EomResult::apply`] to produce the message
//!   the MTA would queue.
//! - [`Client::send_message`] sends a whole [`Message`] with an [`Envelope`] through
//!   every stage, stops at the first final decision like an MTA, and returns a
//!   [`Transcript`].
//! - [`Profile`] chooses the MTA to imitate (offer, strictness, macros, aborts,
//!   timeouts).
//! - [`RecordingProxy`] sits between a real MTA and a milter and records each
//!   connection, unchanged, as a [`Recording`] (the text format is specified in
//!   [`recording`]); [`replay()`] plays a recording's MTA side against a milter and
//!   reports where its answers differ ([`ReplayReport`]).
//!
//! The client sends what it is asked to, in the order it is asked: it does not
//! check that `rcpt` comes after `mail`, so a test can also show how a milter copes
//! with a sequence no MTA sends. It does refuse what the protocol forbids the MTA
//! (a body chunk over 65535 bytes, a stage while a reply is due).
//!
//! A `Client` is `Send`: open one per thread to drive load. Each exchange is one
//! write (macro packet and command together) and usually one read; buffers are
//! reused.
//!
//! ```no_run
//! use milter_blocking::client::{Client, ClientAddress, Decision, Response};
//!
//! let mut c = Client::open("inet:7357@127.0.0.1")?;
//! println!("milter wants actions {:?}", c.negotiated().actions);
//! c.connect("client.example.net", &ClientAddress::default())?;
//! c.helo("client.example.net")?;
//! c.mail("<sender@example.org>")?;
//! let r = c.rcpt("<rcpt@example.com>")?;
//! if r.is_final() {
//!     println!("recipient refused: {r}");
//! }
//! c.data()?;
//! c.header("Subject", "hello")?;
//! c.eoh()?;
//! c.body(b"Hi!\r\n")?;
//! let eom = c.eom()?;
//! assert_eq!(eom.decision, Decision::Continue);
//! if eom.has_added_header("X-Spam", "no") { /* ... */ }
//! c.quit()?;
//! # let _ = Response::Skipped;
//! # Ok::<(), milter_blocking::client::ClientError>(())
//! ```
//!
//! # Errors
//!
//! Every call returns a [`ClientError`], which keeps apart the caller's misuse, a
//! milter breaking the protocol (with the offending bytes), timeouts, and I/O.
//! After anything but misuse the connection is unusable.
//!
//! # Where the MTAs differ
//!
//! The [`Profile`] decides what is sent (offer, macros, aborts, address format)
//! and how strictly replies are checked; [`ApplyRules`] decides how modifications
//! are applied where Postfix and Sendmail disagree (header renumbering after a
//! delete, recipient matching). [`EomResult::apply`] follows Postfix.
//!
//! # Where the MTA side lives
//!
//! The client, its profiles and `milter-check` stay in this crate rather than in
//! a crate of their own (as indymilter-test stands beside indymilter). The
//! workspace is designed as one protocol crate without I/O (`milter-core`, which
//! holds the MTA-side state machine, [`milter_core::client::ClientSession`]),
//! the derive macros, and this crate as the one dependency for writing milters;
//! a fourth crate would make users add a second dependency (and keep its version
//! in step) only to test what they wrote. The cost of keeping it here is small:
//! the client shares only socket specs and the core with the server, compiles in
//! seconds, and the command-line parser (`clap`) is behind the `cli` feature, so
//! a milter that does not use the command pays for nothing but this module.
//! Install the command with
//! `cargo install milter-blocking --features cli --bin milter-check` (or
//! `--path milter-blocking` from a checkout).
//!
//! # The `milter-check` command
//!
//! Built with the `cli` feature:
//! `cargo run -p milter-blocking --features cli --bin milter-check -- SOCKET message.eml --from a@b --rcpt c@d`
//! runs [`Client::send_message`] and prints the negotiation, each stage's reply,
//! the modifications and the verdict; `--output FILE` writes the message as the
//! MTA would queue it ([`Transcript::delivered`]). Its exit status tells the
//! verdict:
//!
//! | status | meaning |
//! | --- | --- |
//! | 0 | accepted (continue or accept) |
//! | 1 | rejected (at any stage, or every recipient refused) |
//! | 2 | temporarily refused (tempfail, a 4xx reply, shutdown) |
//! | 3 | discarded |
//! | 4 | accepted and quarantined |
//! | 64 | usage error (bad option, socket spec or macro) |
//! | 66 | the message file cannot be read |
//! | 69 | cannot connect to the milter ([`ErrorKind::Connect`]) |
//! | 70 | the milter broke the protocol or closed the connection ([`ErrorKind::Protocol`]) |
//! | 73 | the output file cannot be written |
//! | 74 | other I/O error ([`ErrorKind::Io`]) |
//! | 75 | the milter timed out ([`ErrorKind::Timeout`]) |

mod config;
mod eom;
mod error;
mod macros;
mod message;
mod peer;
mod proxy;
pub mod recording;
mod replay;
mod run;
mod stream;

pub use config::{ClientBuilder, Profile, Timeouts};
pub use eom::{Applied, ApplyRules, EomResult};
pub use error::{ClientError, ErrorKind};
pub use message::{Address, ClientAddress, Envelope, HeaderField, Message};
pub use milter_core::client::{ClientNegotiated, Decision, LowVersion, ReplyTextCheck, Strictness};
pub use milter_core::Modification;
pub use run::{Step, Transcript, Verdict};
pub use stream::{ConnectTarget, Stream};

pub use proxy::{ProxyError, ProxyHandle, RecordingProxy, RECORDING_EXTENSION};
pub use recording::{
    Direction, NegotiatedFlags, RecordedPacket, Recording, RecordingEntry, RecordingError,
    RecordingErrorKind, RecordingWriter, RECORDING_FORMAT_VERSION,
};
pub use replay::{
    replay, replay_with_timeout, DifferenceKind, ReplayDifference, ReplayError, ReplayReport,
    REPLAY_TIMEOUT,
};

use macros::{MacroConfig, MacroState, MacroWriter};
use milter_core::client::{ClientSession, Received, Sent};
use milter_core::frame::FrameDecoder;
use milter_core::{Command, Connect, EnvelopeAddr, Family, Header, OptNeg, Stage, Stages};
use std::fmt;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What a stage call got.
///
/// ```
/// use milter_blocking::client::{Decision, Response};
/// let refused = Response::Replied(Decision::Reply(b"550 5.7.1 No thanks".to_vec()));
/// assert!(refused.is_final());
/// assert_eq!(refused.reply_code(), Some(550));
/// assert_eq!(refused.to_string(), "reply 550 5.7.1 No thanks");
/// assert!(!Response::NoReply.is_final());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Response {
    /// Not sent: the milter negotiated this stage away (or its version lacks it).
    Skipped,
    /// Sent; the milter negotiated no reply for this stage.
    NoReply,
    /// The milter's answer.
    Replied(Decision),
}

impl Response {
    /// The milter's decision, if it answered.
    ///
    /// ```
    /// use milter_blocking::client::{Decision, Response};
    /// assert_eq!(Response::Replied(Decision::Tempfail).decision(), Some(&Decision::Tempfail));
    /// assert_eq!(Response::Skipped.decision(), None);
    /// ```
    pub fn decision(&self) -> Option<&Decision> {
        match self {
            Response::Replied(d) => Some(d),
            _ => None,
        }
    }

    /// Whether the milter ended the message (or session, or this recipient) here:
    /// anything but continue, skip, no reply or not sent.
    ///
    /// ```
    /// use milter_blocking::client::{Decision, Response};
    /// assert!(Response::Replied(Decision::Reject).is_final());
    /// assert!(!Response::Replied(Decision::Continue).is_final());
    /// assert!(!Response::Replied(Decision::Skip).is_final());
    /// ```
    pub fn is_final(&self) -> bool {
        self.decision().is_some_and(Decision::is_final)
    }

    /// The SMTP reply text of a `y` answer.
    ///
    /// ```
    /// use milter_blocking::client::{Decision, Response};
    /// let r = Response::Replied(Decision::Reply(b"451 4.7.1 Try later".to_vec()));
    /// assert_eq!(r.reply_text(), Some(&b"451 4.7.1 Try later"[..]));
    /// assert_eq!(Response::Replied(Decision::Reject).reply_text(), None);
    /// ```
    pub fn reply_text(&self) -> Option<&[u8]> {
        match self {
            Response::Replied(Decision::Reply(t)) => Some(t),
            _ => None,
        }
    }

    /// The three-digit code of a `y` answer.
    ///
    /// ```
    /// use milter_blocking::client::{Decision, Response};
    /// let r = Response::Replied(Decision::Reply(b"451 4.7.1 Try later".to_vec()));
    /// assert_eq!(r.reply_code(), Some(451));
    /// ```
    pub fn reply_code(&self) -> Option<u16> {
        let t = self.reply_text()?;
        std::str::from_utf8(t.get(..3)?).ok()?.parse().ok()
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Skipped => f.write_str("skipped (not sent)"),
            Response::NoReply => f.write_str("sent (no reply negotiated)"),
            Response::Replied(Decision::Reply(t)) => {
                write!(
                    f,
                    "reply {}",
                    String::from_utf8_lossy(t).replace("\r\n", " / ")
                )
            }
            Response::Replied(d) => f.write_str(d.name()),
        }
    }
}

/// What [`Client::body_chunks`] did.
///
/// ```
/// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
/// # #[derive(Milter, Default)]
/// # #[milter(actions(add_header))]
/// # struct Judge;
/// # #[handlers]
/// # impl Milter for Judge {
/// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
/// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
/// #     }
/// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
/// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
/// #         if from.address == b"<spammer@example.org>" {
/// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
/// #         }
/// #         Ok(Status::Continue)
/// #     }
/// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
/// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
/// #     }
/// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
/// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
/// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
/// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
/// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
/// #         ctx.add_header("X-Checked", "yes")?;
/// #         Ok(Status::Continue)
/// #     }
/// # }
/// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
/// # let (spec, handle) = (server.local_spec(), server.handle());
/// # let running = std::thread::spawn(move || server.run());
/// # let mut client = milter_blocking::client::Client::open(&spec)?;
/// # client.connect("client.example.net", &Default::default())?;
/// # client.mail("<alice@example.org>")?;
/// # client.rcpt("<bob@example.com>")?;
/// # client.data()?;
/// # client.eoh()?;
/// let outcome = client.body_chunks(b"Hello.\r\n")?;
/// assert_eq!(outcome.chunks, 1);
/// assert!(outcome.response.is_some_and(|r| !r.is_final()));
/// # client.quit()?;
/// # handle.shutdown(std::time::Duration::ZERO);
/// # running.join().expect("the server thread")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyOutcome {
    /// How many chunks were sent.
    pub chunks: usize,
    /// The response to the last chunk sent; `None` for an empty body.
    pub response: Option<Response>,
}

/// Why a reply was awaited or a packet written, for error messages.
#[derive(Debug, Clone, Copy)]
enum Activity {
    Negotiation,
    Stage(Stage),
    Control(&'static str),
}

impl fmt::Display for Activity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Activity::Negotiation => f.write_str("negotiation"),
            Activity::Stage(s) => write!(f, "{s}"),
            Activity::Control(c) => f.write_str(c),
        }
    }
}

/// The MTA side of one milter connection. See the [module documentation](self).
///
/// ```
/// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
/// # #[derive(Milter, Default)]
/// # #[milter(actions(add_header))]
/// # struct Judge;
/// # #[handlers]
/// # impl Milter for Judge {
/// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
/// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
/// #     }
/// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
/// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
/// #         if from.address == b"<spammer@example.org>" {
/// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
/// #         }
/// #         Ok(Status::Continue)
/// #     }
/// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
/// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
/// #     }
/// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
/// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
/// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
/// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
/// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
/// #         ctx.add_header("X-Checked", "yes")?;
/// #         Ok(Status::Continue)
/// #     }
/// # }
/// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
/// # let (spec, handle) = (server.local_spec(), server.handle());
/// # let running = std::thread::spawn(move || server.run());
/// use milter_blocking::client::{Client, Decision, Envelope, Message, Verdict};
///
/// // `spec`: where the milter listens, e.g. "inet:7357@127.0.0.1".
/// let mut client = Client::open(&spec)?;
///
/// // A whole message, as the MTA would send it.
/// let envelope = Envelope::new("alice@example.org").rcpt("bob@example.com");
/// let message = Message::parse(b"Subject: hi\r\n\r\nHello.\r\n");
/// let transcript = client.send_message(&envelope, &message)?;
/// assert_eq!(transcript.verdict, Verdict::Accept);
///
/// // Or stage by stage.
/// client.mail("<spammer@example.org>")?;
/// // (the refusal ends the message)
/// client.abort()?;
/// client.mail("<alice@example.org>")?;
/// client.rcpt("<bob@example.com>")?;
/// client.data()?;
/// client.header("Subject", "hi")?;
/// client.eoh()?;
/// client.body("Hello.\r\n")?;
/// let eom = client.eom()?;
/// assert_eq!(eom.decision, Decision::Continue);
/// assert!(eom.has_added_header("X-Checked", "yes"));
/// client.quit()?;
/// # handle.shutdown(std::time::Duration::ZERO);
/// # running.join().expect("the server thread")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Client {
    stream: Stream,
    session: ClientSession,
    negotiated: ClientNegotiated,
    decoder: FrameDecoder,
    /// Macro packet plus command, written at once.
    wbuf: Vec<u8>,
    /// Address text and argument lists of the command being built.
    scratch: Vec<u8>,
    profile: Profile,
    timeouts: Timeouts,
    macros: MacroConfig,
    state: MacroState,
    read_timeout: Option<Option<Duration>>,
    write_timeout: Option<Option<Duration>>,
    broken: Option<String>,
    closed: bool,
    /// Why the imitated MTA closed the milter connection itself (Postfix after a
    /// session-level refusal or shutdown, Stalwart after any refusal).
    closed_by_mta: Option<String>,
    /// A quarantine asked for before end of message (Postfix): no more envelope
    /// commands are sent in the session.
    held: Option<Vec<u8>>,
    /// The last stage sent, for [`Client::failure_verdict`].
    last_stage: Option<Stage>,
    /// What a skip outside the body did (Sendmail).
    sendmail_skip: SendmailSkip,
    /// The rest of this message's body is not sent (Sendmail, after the one
    /// chunk a header skip lets through).
    body_done: bool,
    session_started: bool,
    in_message: bool,
    /// A session-level decision (connect or HELO) that refuses or ends the session
    /// for [`Client::send_message`].
    session_verdict: Option<Verdict>,
}

/// What a skip (`s`) before the body does with a Sendmail profile (`milter.c`
/// of 8.17 and 8.18): the milter's state becomes "skip", which only the body
/// step resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendmailSkip {
    None,
    /// After skip at connect, HELO, MAIL, RCPT, DATA or an unknown command:
    /// the milter gets no more commands in the session but quit.
    Silenced,
    /// After skip at a header or end of headers: the rest of the headers and end
    /// of headers still go out; of the body only a first full 65535-byte chunk
    /// (Sendmail checks the state after sending a full chunk, and before the
    /// last, shorter one); then end of message.
    FirstFullChunk,
}

/// Source of distinct queue ids across all clients of the process.
static QUEUE_IDS: AtomicU64 = AtomicU64::new(1);

impl Client {
    /// A builder to choose the profile, offer, timeouts and macros.
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    ///
    /// use milter_blocking::client::{Client, Profile, Timeouts};
    /// use std::time::Duration;
    /// let client = Client::builder()
    ///     .profile(Profile::Sendmail)
    ///     .timeouts(Timeouts::uniform(Duration::from_secs(10)))
    ///     .open(&spec)?;
    /// # let client = client;
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// Connects with the defaults (Postfix 3.7) and negotiates.
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    ///
    /// use milter_blocking::client::Client;
    /// // A socket spec as text ("inet:7357@127.0.0.1", "unix:/run/milter.sock") or a
    /// // SocketSpec.
    /// let client = Client::open(&spec)?;
    /// println!("the milter asked for actions {:?}", client.negotiated().actions);
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(target: impl ConnectTarget) -> Result<Client, ClientError> {
        ClientBuilder::new().open(target)
    }

    pub(crate) fn negotiate(
        stream: Stream,
        profile: Profile,
        offer: OptNeg,
        strictness: Strictness,
        timeouts: Timeouts,
        macros: MacroConfig,
    ) -> Result<Client, ClientError> {
        let mut c = Client {
            stream,
            session: ClientSession::with_strictness(offer, strictness),
            negotiated: ClientNegotiated {
                version: offer.version,
                actions: offer.actions,
                protocol: offer.protocol,
                skipped: Stages::empty(),
                no_reply: Stages::empty(),
                symbol_lists: Vec::new(),
            },
            decoder: FrameDecoder::new(),
            wbuf: Vec::with_capacity(1024),
            scratch: Vec::with_capacity(256),
            profile,
            timeouts,
            macros,
            state: MacroState::default(),
            read_timeout: None,
            write_timeout: None,
            broken: None,
            closed: false,
            closed_by_mta: None,
            held: None,
            last_stage: None,
            sendmail_skip: SendmailSkip::None,
            body_done: false,
            session_started: false,
            in_message: false,
            session_verdict: None,
        };
        c.session.set_send_limit(profile.send_limit());
        let t = timeouts.command;
        c.flush(Activity::Negotiation, t)?;
        loop {
            match c.decoder.next_frame() {
                Ok(Some(frame)) => {
                    let n = c
                        .session
                        .receive_negotiation(frame)
                        .map_err(|e| ClientError::from_core(e, &Activity::Negotiation.to_string()));
                    match n {
                        Ok(n) => {
                            c.negotiated = n.clone();
                            break;
                        }
                        Err(e) => return Err(c.fail(e)),
                    }
                }
                Ok(None) => c.fill(Activity::Negotiation, t, None)?,
                Err(e) => {
                    let e = decode_error(e, Activity::Negotiation, c.decoder.pending());
                    return Err(c.fail(e));
                }
            }
        }
        if c.decoder.buffered() > 0 {
            let e = stray(&mut c.decoder, Activity::Negotiation);
            return Err(c.fail(e));
        }
        Ok(c)
    }

    /// What was agreed with the milter: its version, the actions it may use, the
    /// stages it skips ([`ClientNegotiated::skipped`]) and does not answer
    /// ([`ClientNegotiated::no_reply`]), and the macros it asked for
    /// ([`ClientNegotiated::macros_for`]).
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// use milter_blocking::{Actions, Stages};
    /// let n = client.negotiated();
    /// assert_eq!(n.actions, Actions::ADD_HEADER);
    /// // The milter has no handler for unknown commands: the MTA does not send them.
    /// assert!(n.skipped.contains(Stages::UNKNOWN));
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn negotiated(&self) -> &ClientNegotiated {
        &self.negotiated
    }

    /// What the client offered.
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// // The Postfix profile offers protocol version 6.
    /// assert_eq!(client.offer().version, 6);
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn offer(&self) -> &OptNeg {
        self.session.offer()
    }

    /// The MTA this client imitates.
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// use milter_blocking::client::Profile;
    /// assert_eq!(client.profile(), Profile::Postfix);
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The timeouts in force.
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// use milter_blocking::client::Timeouts;
    /// assert_eq!(client.timeouts(), Timeouts::POSTFIX);
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Changes the timeouts.
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// use milter_blocking::client::Timeouts;
    /// use std::time::Duration;
    /// // A short leash for the next exchanges.
    /// client.set_timeouts(Timeouts::uniform(Duration::from_secs(5)));
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
    }

    /// Gives the macro `name` this value wherever a macro list names it (see
    /// [`ClientBuilder::macro_value`]).
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// // From now on, the milter sees this login wherever it asked for the macro.
    /// client.set_macro_value("{auth_authen}", "alice");
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_macro_value(&mut self, name: &str, value: impl AsRef<[u8]>) {
        self.macros.set_value(name, Some(value.as_ref()));
    }

    /// Never sends the macro `name`.
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// // Behave as an MTA that does not know the client's name.
    /// client.unset_macro("{client_name}");
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unset_macro(&mut self, name: &str) {
        self.macros.set_value(name, None);
    }

    /// Sends `name=value` before every command of `stage` (see
    /// [`ClientBuilder::stage_macro`]).
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// use milter_blocking::Stage;
    /// client.set_stage_macro(Stage::Mail, "{auth_type}", "PLAIN");
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_stage_macro(&mut self, stage: Stage, name: &str, value: impl AsRef<[u8]>) {
        self.macros.add_stage_pair(stage, name, value.as_ref());
    }

    /// Forgets the macros set with [`Client::set_stage_macro`] for `stage`.
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// use milter_blocking::Stage;
    /// client.set_stage_macro(Stage::Mail, "{auth_type}", "PLAIN");
    /// client.clear_stage_macros(Stage::Mail);
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clear_stage_macros(&mut self, stage: Stage) {
        self.macros.clear_stage(stage);
    }

    /// Whether the milter is inside a message as far as the client knows: after
    /// `mail`, until end of message, abort, or a final decision for the message.
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// # client.connect("client.example.net", &Default::default())?;
    /// # client.helo("client.example.net")?;
    /// assert!(!client.in_message());
    /// client.mail("<alice@example.org>")?;
    /// assert!(client.in_message());
    /// client.abort()?;
    /// assert!(!client.in_message());
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn in_message(&self) -> bool {
        self.in_message
    }

    /// The queue id (macro `i`) of the current or last message.
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// # client.connect("client.example.net", &Default::default())?;
    /// # client.helo("client.example.net")?;
    /// client.mail("<alice@example.org>")?;
    /// // A new, made-up queue id per message, sent as macro `i`.
    /// println!("queue id {}", client.queue_id());
    /// assert!(!client.queue_id().is_empty());
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue_id(&self) -> &str {
        &self.state.queue_id
    }

    /// The reason of a quarantine the milter asked for before end of message
    /// (only the Postfix profiles accept one there): Postfix then holds the
    /// message and its SMTP server sends the milter no more envelope commands in
    /// the session (connect, HELO, MAIL, RCPT, DATA, unknown: those calls return
    /// [`Response::Skipped`]); headers, body and end of message still go out, as
    /// Postfix's cleanup server sends them (observed with 3.7.11).
    pub fn quarantined(&self) -> Option<&[u8]> {
        self.held.as_deref()
    }

    /// Whether the imitated MTA has closed the milter connection itself, as
    /// Postfix does after a refusal at connect or HELO, an accept there, or a
    /// shutdown (`4`) anywhere, and Stalwart after any refusal. Stage calls then
    /// fail as misuse; [`Client::abort`] and [`Client::quit`] send nothing.
    pub fn closed_by_mta(&self) -> bool {
        self.closed_by_mta.is_some()
    }

    /// What the imitated MTA would do with the message if the milter failed now,
    /// at the last stage sent ([`Profile::failure_verdict`]).
    pub fn failure_verdict(&self) -> Verdict {
        self.profile
            .failure_verdict(self.last_stage.unwrap_or(Stage::Connect))
    }

    /// Sends connection information: the client's host name and address (`C`).
    ///
    /// With the Sendmail profile an IPv6 address is sent with the `IPv6:` prefix and
    /// an IPv4-mapped one as family `4`; Postfix sends plain IPv6 text.
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// use milter_blocking::client::{ClientAddress, Decision, Response};
    /// let addr: ClientAddress = "192.0.2.1".parse()?;
    /// let r = client.connect("reject.example", &addr)?;
    /// assert_eq!(r, Response::Replied(Decision::Reject));
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect(
        &mut self,
        hostname: &str,
        addr: &ClientAddress,
    ) -> Result<Response, ClientError> {
        self.state.client_name.clear();
        self.state.client_name.push_str(hostname);
        self.state.client_addr.clear();
        self.state.client_addr.push_str(&addr.addr_text());
        self.state.client_port.clear();
        if let ClientAddress::Ip(a) = addr {
            self.state.client_port.push_str(&a.port().to_string());
        }
        self.session_started = true;
        self.in_message = false;
        self.state.phase = None;
        self.session_verdict = None;
        self.held = None;
        self.sendmail_skip = SendmailSkip::None;
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let sendmail = self.profile.is_sendmail();
        let (family, port) = match addr {
            ClientAddress::Ip(SocketAddr::V4(a)) => {
                let _ = write!(scratch, "{}", a.ip());
                (Family::Inet, a.port())
            }
            ClientAddress::Ip(SocketAddr::V6(a)) => match a.ip().to_ipv4_mapped() {
                Some(v4) if sendmail => {
                    let _ = write!(scratch, "{v4}");
                    (Family::Inet, a.port())
                }
                _ => {
                    if sendmail {
                        scratch.extend_from_slice(b"IPv6:");
                    }
                    let _ = write!(scratch, "{}", a.ip());
                    (Family::Inet6, a.port())
                }
            },
            ClientAddress::Unix(p) => {
                scratch.extend_from_slice(p.as_bytes());
                (Family::Unix, 0)
            }
            ClientAddress::Unknown => (Family::Unknown, 0),
        };
        let cmd = Command::Connect(Connect {
            hostname: hostname.as_bytes(),
            family,
            port,
            address: &scratch,
        });
        let r = self.exchange(Stage::Connect, &cmd);
        self.scratch = scratch;
        r
    }

    /// Sends the HELO/EHLO argument (`H`).
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// # client.connect("client.example.net", &Default::default())?;
    /// assert!(!client.helo("client.example.net")?.is_final());
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn helo(&mut self, name: impl AsRef<[u8]>) -> Result<Response, ClientError> {
        self.exchange(Stage::Helo, &Command::Helo(name.as_ref()))
    }

    /// Sends MAIL FROM (`M`) without ESMTP parameters. Starts a new message: a new
    /// queue id, fresh per-message macros.
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// # client.connect("client.example.net", &Default::default())?;
    /// # client.helo("client.example.net")?;
    /// let r = client.mail("<spammer@example.org>")?;
    /// assert_eq!(r.reply_code(), Some(550));
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn mail(&mut self, sender: impl AsRef<[u8]>) -> Result<Response, ClientError> {
        self.mail_with_args::<&[u8]>(sender, &[])
    }

    /// Sends MAIL FROM (`M`) with ESMTP parameters, one per element (`SIZE=100`).
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// # client.connect("client.example.net", &Default::default())?;
    /// # client.helo("client.example.net")?;
    /// let r = client.mail_with_args("<alice@example.org>", &["SIZE=1000", "BODY=8BITMIME"])?;
    /// assert!(!r.is_final());
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn mail_with_args<A: AsRef<[u8]>>(
        &mut self,
        sender: impl AsRef<[u8]>,
        args: &[A],
    ) -> Result<Response, ClientError> {
        let sender = sender.as_ref();
        self.new_queue_id();
        self.state.sender.clear();
        self.state.sender.extend_from_slice(sender);
        self.state.rcpt.clear();
        self.state.msg_id = None;
        self.state.queue_file_open = false;
        self.state.phase = Some(Stage::Mail);
        self.body_done = false;
        if self.sendmail_skip == SendmailSkip::FirstFullChunk {
            self.sendmail_skip = SendmailSkip::None;
        }
        self.in_message = true;
        self.envelope_command(Stage::Mail, sender, args)
    }

    /// Sends RCPT TO (`R`) without ESMTP parameters.
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// # client.connect("client.example.net", &Default::default())?;
    /// # client.helo("client.example.net")?;
    /// client.mail("<alice@example.org>")?;
    /// assert!(client.rcpt("<nobody@example.com>")?.is_final()); // this recipient is refused
    /// assert!(!client.rcpt("<bob@example.com>")?.is_final()); // the message goes on
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rcpt(&mut self, rcpt: impl AsRef<[u8]>) -> Result<Response, ClientError> {
        self.rcpt_with_args::<&[u8]>(rcpt, &[])
    }

    /// Sends RCPT TO (`R`) with ESMTP parameters, one per element
    /// (`NOTIFY=NEVER`).
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// # client.connect("client.example.net", &Default::default())?;
    /// # client.helo("client.example.net")?;
    /// client.mail("<alice@example.org>")?;
    /// let r = client.rcpt_with_args("<bob@example.com>", &["NOTIFY=SUCCESS,FAILURE"])?;
    /// assert!(!r.is_final());
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rcpt_with_args<A: AsRef<[u8]>>(
        &mut self,
        rcpt: impl AsRef<[u8]>,
        args: &[A],
    ) -> Result<Response, ClientError> {
        let rcpt = rcpt.as_ref();
        self.state.rcpt.clear();
        self.state.rcpt.extend_from_slice(rcpt);
        self.advance(Stage::Rcpt);
        let r = self.envelope_command(Stage::Rcpt, rcpt, args)?;
        if !matches!(
            r.decision(),
            Some(Decision::Reject | Decision::Tempfail | Decision::Reply(_))
        ) {
            self.state.queue_file_open = true;
        }
        // A refused recipient does not end the message, and Sendmail still counts
        // a milter that discarded at RCPT as inside the message (it gets the abort).
        if matches!(r.decision(), Some(Decision::Accept | Decision::Shutdown)) {
            self.in_message = false;
        }
        Ok(r)
    }

    fn envelope_command<A: AsRef<[u8]>>(
        &mut self,
        stage: Stage,
        address: &[u8],
        args: &[A],
    ) -> Result<Response, ClientError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        for a in args {
            scratch.extend_from_slice(a.as_ref());
            scratch.push(0);
        }
        let e = EnvelopeAddr {
            address,
            args_raw: &scratch,
        };
        let cmd = if stage == Stage::Mail {
            Command::Mail(e)
        } else {
            Command::Rcpt(e)
        };
        let r = self.exchange(stage, &cmd);
        self.scratch = scratch;
        let r = r?;
        if stage == Stage::Mail && r.is_final() {
            self.in_message = false;
        }
        Ok(r)
    }

    /// Sends DATA (`T`; only to milters of version 4 and later).
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// # client.connect("client.example.net", &Default::default())?;
    /// # client.helo("client.example.net")?;
    /// # client.mail("<alice@example.org>")?;
    /// # client.rcpt("<bob@example.com>")?;
    /// assert!(!client.data()?.is_final());
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn data(&mut self) -> Result<Response, ClientError> {
        self.advance(Stage::Data);
        self.message_exchange(Stage::Data, &Command::Data)
    }

    /// Sends one header (`L`). The value goes out exactly as given: without
    /// `HDR_LEADSPC` an MTA has removed one leading space, and folds are LF +
    /// white space ([`HeaderField::value_for_milter`] gives that form).
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// # client.connect("client.example.net", &Default::default())?;
    /// # client.helo("client.example.net")?;
    /// # client.mail("<alice@example.org>")?;
    /// # client.rcpt("<bob@example.com>")?;
    /// # client.data()?;
    /// client.header("From", "Alice <alice@example.org>")?;
    /// // A folded header: folds as LF and white space, as the MTAs send them.
    /// client.header("Subject", "a long\n subject")?;
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn header(
        &mut self,
        name: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<Response, ClientError> {
        let (name, value) = (name.as_ref(), value.as_ref());
        self.advance(Stage::Header);
        if name.eq_ignore_ascii_case(b"Message-ID") {
            self.state.msg_id = Some(value.trim_ascii().to_vec());
        }
        self.message_exchange(Stage::Header, &Command::Header(Header { name, value }))
    }

    /// Sends end of headers (`N`).
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// # client.connect("client.example.net", &Default::default())?;
    /// # client.helo("client.example.net")?;
    /// # client.mail("<alice@example.org>")?;
    /// # client.rcpt("<bob@example.com>")?;
    /// # client.data()?;
    /// client.header("Subject", "hi")?;
    /// assert!(!client.eoh()?.is_final());
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn eoh(&mut self) -> Result<Response, ClientError> {
        self.advance(Stage::Eoh);
        self.message_exchange(Stage::Eoh, &Command::Eoh)
    }

    /// Sends one body chunk (`B`) of 1 to 65535 bytes (CRLF line ends, as MTAs
    /// send them). Other sizes are refused as misuse.
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// # client.connect("client.example.net", &Default::default())?;
    /// # client.helo("client.example.net")?;
    /// # client.mail("<alice@example.org>")?;
    /// # client.rcpt("<bob@example.com>")?;
    /// # client.data()?;
    /// # client.header("Subject", "hi")?;
    /// # client.eoh()?;
    /// assert!(!client.body("Hello.\r\n")?.is_final());
    /// // Nothing over 65535 bytes in one chunk: that is misuse.
    /// assert!(client.body(vec![b'x'; 70_000]).is_err());
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn body(&mut self, chunk: impl AsRef<[u8]>) -> Result<Response, ClientError> {
        let chunk = chunk.as_ref();
        let first = self.state.phase.is_none_or(|p| p < Stage::Body);
        self.advance(Stage::Body);
        if self.sendmail_skip == SendmailSkip::FirstFullChunk {
            if !first || chunk.len() < milter_core::limits::MAX_BODY_CHUNK {
                return Ok(Response::Skipped);
            }
            // The chunk goes out; whatever the answer, the rest of the body not.
            let r = self.message_exchange(Stage::Body, &Command::Body(chunk));
            self.sendmail_skip = SendmailSkip::None;
            self.body_done = true;
            return r;
        }
        if self.body_done {
            return Ok(Response::Skipped);
        }
        self.message_exchange(Stage::Body, &Command::Body(chunk))
    }

    /// Sends a whole body in chunks of 65535 bytes (the last one shorter), as both
    /// MTAs do; stops after a chunk whose answer is not continue (skip, or a final
    /// decision). An empty body sends nothing.
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// # client.connect("client.example.net", &Default::default())?;
    /// # client.helo("client.example.net")?;
    /// # client.mail("<alice@example.org>")?;
    /// # client.rcpt("<bob@example.com>")?;
    /// # client.data()?;
    /// # client.header("Subject", "hi")?;
    /// # client.eoh()?;
    /// let outcome = client.body_chunks(&vec![b'x'; 100_000])?;
    /// assert_eq!(outcome.chunks, 2); // 65535 + 34465 bytes
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn body_chunks(&mut self, body: &[u8]) -> Result<BodyOutcome, ClientError> {
        let mut out = BodyOutcome {
            chunks: 0,
            response: None,
        };
        for chunk in body.chunks(milter_core::limits::MAX_BODY_CHUNK) {
            let r = self.body(chunk)?;
            out.chunks += 1;
            let stop = matches!(r, Response::Skipped)
                || matches!(r.decision(), Some(d) if d != &Decision::Continue);
            out.response = Some(r);
            if stop {
                break;
            }
        }
        Ok(out)
    }

    /// Sends end of message (`E`) and collects the milter's modifications, progress
    /// packets and final decision. Each packet read restarts the content timeout;
    /// the end-of-message timeout, if set, caps the whole exchange.
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// # client.connect("client.example.net", &Default::default())?;
    /// # client.helo("client.example.net")?;
    /// # client.mail("<alice@example.org>")?;
    /// # client.rcpt("<bob@example.com>")?;
    /// # client.data()?;
    /// # client.header("Subject", "hi")?;
    /// # client.eoh()?;
    /// use milter_blocking::client::Decision;
    /// client.body("Hello.\r\n")?;
    /// let eom = client.eom()?;
    /// assert_eq!(eom.decision, Decision::Continue);
    /// assert_eq!(eom.added_header("X-Checked"), Some(&b"yes"[..]));
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn eom(&mut self) -> Result<EomResult, ClientError> {
        self.advance(Stage::Eom);
        let what = Activity::Stage(Stage::Eom);
        let start = Instant::now();
        let sent = self.send_stage(Stage::Eom, &Command::Eom(b""))?;
        if sent != Sent::AwaitReply {
            return Err(ClientError::misuse("end of message was not sent"));
        }
        let deadline = self.timeouts.eom.map(|t| start + t);
        let timeout = self.timeouts.content;
        let mut result = EomResult {
            decision: Decision::Continue,
            modifications: Vec::new(),
            progress: 0,
            header_leading_space: self
                .negotiated
                .protocol
                .contains(milter_core::ProtocolOpts::HEADER_LEADING_SPACE),
        };
        loop {
            match self.read_received(what, timeout, deadline)? {
                Received::Progress => result.progress += 1,
                Received::Modification(Modification::ReplaceBody(b)) => {
                    if let Some(Modification::ReplaceBody(prev)) = result.modifications.last_mut() {
                        prev.extend_from_slice(&b);
                    } else {
                        result.modifications.push(Modification::ReplaceBody(b));
                    }
                }
                Received::Modification(m) => result.modifications.push(m),
                Received::Decision(d) => {
                    result.decision = d;
                    break;
                }
            }
        }
        self.after_reply(what)?;
        self.in_message = false;
        self.state.phase = None;
        self.close_if_mta_would(Stage::Eom, &result.decision);
        Ok(result)
    }

    /// Sends abort (`A`): the current message is abandoned. Never answered.
    /// Sends nothing once the MTA closed the connection ([`Client::closed_by_mta`]).
    /// Sends nothing either to a milter Sendmail no longer talks to (after a skip
    /// before the message content).
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// # client.connect("client.example.net", &Default::default())?;
    /// # client.helo("client.example.net")?;
    /// client.mail("<alice@example.org>")?;
    /// // The SMTP client sent RSET: the message is abandoned.
    /// client.abort()?;
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn abort(&mut self) -> Result<(), ClientError> {
        if self.closed_by_mta.is_none() && !self.silenced() {
            self.control(Command::Abort, "abort")?;
        }
        self.in_message = false;
        self.state.phase = None;
        Ok(())
    }

    /// Sends quit (`Q`) and closes the connection. With the Postfix profiles an
    /// abort goes first, as Postfix sends one when the SMTP client quits (observed
    /// with 3.7.11: `... E A A Q`). Sends nothing if the MTA already closed the
    /// connection ([`Client::closed_by_mta`]).
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// client.quit()?;
    ///
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn quit(mut self) -> Result<(), ClientError> {
        if self.closed_by_mta.is_some() {
            return Ok(());
        }
        if self.profile.is_postfix() && self.session_started {
            self.control(Command::Abort, "abort")?;
        }
        self.control(Command::Quit, "quit")?;
        self.stream.shutdown();
        self.closed = true;
        Ok(())
    }

    /// Sends quit-new-connection (`K`): the session ends but the connection and the
    /// negotiated options stay; the next session starts with [`Client::connect`].
    /// (Neither Postfix nor Sendmail sends it; libmilter honours it only after end
    /// of message or an unknown command.)
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// # client.connect("client.example.net", &Default::default())?;
    /// # client.helo("client.example.net")?;
    /// // End this session, keep the connection; the next session starts with connect.
    /// client.quit_new_connection()?;
    /// client.connect("other.example.net", &Default::default())?;
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn quit_new_connection(&mut self) -> Result<(), ClientError> {
        self.control(Command::QuitNewConnection, "quit-new-connection")?;
        self.session_started = false;
        self.in_message = false;
        self.state.phase = None;
        self.session_verdict = None;
        self.held = None;
        Ok(())
    }

    /// Sends an SMTP command the MTA does not know (`U`, the whole line without
    /// CRLF; only to milters of version 3 and later).
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = milter_blocking::client::Client::open(&spec)?;
    /// # client.connect("client.example.net", &Default::default())?;
    /// # client.helo("client.example.net")?;
    /// use milter_blocking::client::Response;
    /// // This milter has no handler for unknown commands, so none is sent.
    /// assert_eq!(client.unknown("XFOO bar")?, Response::Skipped);
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unknown(&mut self, line: impl AsRef<[u8]>) -> Result<Response, ClientError> {
        self.exchange(Stage::Unknown, &Command::Unknown(line.as_ref()))
    }

    // ----- internals -----

    fn new_queue_id(&mut self) {
        use std::fmt::Write as _;
        let n = QUEUE_IDS.fetch_add(1, Ordering::Relaxed);
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let q = &mut self.state.queue_id;
        q.clear();
        let _ = match self.profile {
            p if p.is_sendmail() => {
                write!(q, "5A{:06X}{:06}", secs & 0xFF_FFFF, n % 1_000_000)
            }
            _ => write!(q, "{:05X}{:05X}", secs & 0xF_FFFF, n & 0xF_FFFF),
        };
    }

    fn advance(&mut self, stage: Stage) {
        if self.state.phase.is_none_or(|p| p < stage) {
            self.state.phase = Some(stage);
        }
    }

    /// A message-stage exchange: a final decision ends the message for the milter.
    fn message_exchange(
        &mut self,
        stage: Stage,
        cmd: &Command<'_>,
    ) -> Result<Response, ClientError> {
        let r = self.exchange(stage, cmd)?;
        if r.is_final() {
            self.in_message = false;
        }
        Ok(r)
    }

    fn check_usable(&self) -> Result<(), ClientError> {
        if let Some(why) = &self.closed_by_mta {
            return Err(ClientError::misuse(why.clone()));
        }
        if self.closed {
            return Err(ClientError::misuse("the connection was closed"));
        }
        if let Some(why) = &self.broken {
            return Err(ClientError::misuse(format!(
                "the connection is unusable after an earlier error: {why}"
            )));
        }
        Ok(())
    }

    /// Remembers that the connection is broken.
    fn fail(&mut self, e: ClientError) -> ClientError {
        if e.kind() != ErrorKind::Misuse && self.broken.is_none() {
            self.broken = Some(e.summary());
        }
        e
    }

    /// Closes the connection where the imitated MTA closes it after `decision`
    /// at `stage` (Postfix's `milter8_event` with `LIBMILTER_AUTO_DISCONNECT`:
    /// after reject, tempfail, a reply or accept at connect or HELO, and after
    /// shutdown anywhere; Stalwart: after any refusal, without quit).
    fn close_if_mta_would(&mut self, stage: Stage, decision: &Decision) {
        let closes = match self.profile {
            p if p.is_postfix() => match decision {
                Decision::Shutdown => true,
                Decision::Reject | Decision::Tempfail | Decision::Reply(_) | Decision::Accept => {
                    matches!(stage, Stage::Connect | Stage::Helo)
                }
                _ => false,
            },
            Profile::Stalwart => decision.is_final() && !matches!(decision, Decision::Accept),
            _ => false,
        };
        if closes {
            self.stream.shutdown();
            self.closed = true;
            self.closed_by_mta = Some(format!(
                "{} closed the milter connection after {} at {stage}",
                self.profile,
                decision.name()
            ));
        }
    }

    /// Records what a skip at `stage` means to Sendmail.
    fn sendmail_skipped(&mut self, stage: Stage) {
        match stage {
            Stage::Body => {}
            Stage::Header | Stage::Eoh => self.sendmail_skip = SendmailSkip::FirstFullChunk,
            _ => {
                self.sendmail_skip = SendmailSkip::Silenced;
                // Not "inside a message" for Sendmail any more: no abort.
                self.in_message = false;
            }
        }
    }

    /// Whether the milter gets no more commands in this session but quit
    /// (Sendmail, after a skip before the message content).
    pub(crate) fn silenced(&self) -> bool {
        self.sendmail_skip == SendmailSkip::Silenced
    }

    /// Writes the macro packet (if the profile sends one) and the command.
    fn send_stage(&mut self, stage: Stage, cmd: &Command<'_>) -> Result<Sent, ClientError> {
        self.check_usable()?;
        // After skip, Postfix sends neither the macros nor the command; after an
        // early quarantine its SMTP server sends no more envelope commands.
        let envelope = matches!(
            stage,
            Stage::Connect | Stage::Helo | Stage::Mail | Stage::Rcpt | Stage::Data | Stage::Unknown
        );
        let skipped_by_skip = match self.session.skipping() {
            // Sendmail goes on with the headers after a header skip.
            Some(k) if self.profile.is_sendmail() => k == stage && k == Stage::Body,
            k => k == Some(stage),
        };
        if skipped_by_skip
            || (self.held.is_some() && envelope)
            || self.sendmail_skip == SendmailSkip::Silenced
        {
            return Ok(Sent::Skipped);
        }
        self.last_stage = Some(stage);
        let skipped = self.negotiated.skipped.has(stage);
        self.wbuf.clear();
        MacroWriter {
            profile: self.profile,
            config: &self.macros,
            state: &self.state,
            negotiated: &self.negotiated,
        }
        .write(&mut self.wbuf, stage.code(), stage, skipped);
        let sent = match self.session.send(cmd) {
            Ok(s) => s,
            Err(e) => {
                self.wbuf.clear();
                return Err(ClientError::from_core(e, stage.name()));
            }
        };
        self.flush(Activity::Stage(stage), self.timeouts.for_stage(Some(stage)))?;
        Ok(sent)
    }

    fn exchange(&mut self, stage: Stage, cmd: &Command<'_>) -> Result<Response, ClientError> {
        match self.send_stage(stage, cmd)? {
            Sent::Skipped => Ok(Response::Skipped),
            Sent::NoReply => Ok(Response::NoReply),
            Sent::AwaitReply => {
                let what = Activity::Stage(stage);
                let t = self.timeouts.for_stage(Some(stage));
                loop {
                    match self.read_received(what, t, None)? {
                        Received::Decision(d) => {
                            self.after_reply(what)?;
                            self.close_if_mta_would(stage, &d);
                            if d == Decision::Skip && self.profile.is_sendmail() {
                                self.sendmail_skipped(stage);
                            }
                            return Ok(Response::Replied(d));
                        }
                        // Only where the profile allows progress before end of
                        // message (Postfix): keep waiting.
                        Received::Progress => {}
                        // Only where the profile allows it (Postfix): the
                        // decision still follows.
                        Received::Modification(Modification::Quarantine(reason)) => {
                            self.held = Some(reason);
                        }
                        // The core session refuses other modifications outside
                        // end of message, so this is not reached.
                        other => {
                            return Err(self.fail(ClientError::Protocol {
                                during: what.to_string(),
                                reason: format!("unexpected {other:?}"),
                                bytes: Vec::new(),
                            }))
                        }
                    }
                }
            }
        }
    }

    fn control(&mut self, cmd: Command<'_>, name: &'static str) -> Result<(), ClientError> {
        self.check_usable()?;
        self.wbuf.clear();
        self.session
            .send(&cmd)
            .map_err(|e| ClientError::from_core(e, name))?;
        self.flush(Activity::Control(name), self.timeouts.command)
    }

    /// Checks that nothing is left after a final reply: a stray packet means the
    /// milter answered something it should not have (a no-reply stage, say).
    fn after_reply(&mut self, what: Activity) -> Result<(), ClientError> {
        if self.decoder.buffered() > 0 {
            let e = stray(&mut self.decoder, what);
            return Err(self.fail(e));
        }
        self.decoder.shrink_to(64 * 1024);
        Ok(())
    }

    fn set_write_timeout(&mut self, t: Option<Duration>) -> Result<(), ClientError> {
        if self.write_timeout != Some(t) {
            self.stream
                .set_write_timeout(t)
                .map_err(|e| ClientError::Io {
                    during: "setting the write timeout".into(),
                    source: e,
                })?;
            self.write_timeout = Some(t);
        }
        Ok(())
    }

    fn set_read_timeout(&mut self, t: Option<Duration>) -> Result<(), ClientError> {
        if self.read_timeout != Some(t) {
            self.stream
                .set_read_timeout(t)
                .map_err(|e| ClientError::Io {
                    during: "setting the read timeout".into(),
                    source: e,
                })?;
            self.read_timeout = Some(t);
        }
        Ok(())
    }

    /// Writes `wbuf` followed by the session's output, in one write.
    ///
    /// Writes wait for the longer of the command and content timeouts, so that
    /// alternating stages do not cost a system call each to change the limit (a
    /// write only blocks when the milter stops reading).
    fn flush(&mut self, what: Activity, _stage_limit: Option<Duration>) -> Result<(), ClientError> {
        if self.wbuf.is_empty() && self.session.output().is_empty() {
            return Ok(());
        }
        let t = match (self.timeouts.command, self.timeouts.content) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        if let Err(e) = self.set_write_timeout(t) {
            return Err(self.fail(e));
        }
        let res = if self.wbuf.is_empty() {
            self.stream.write_all(self.session.output())
        } else {
            self.wbuf.extend_from_slice(self.session.output());
            self.stream.write_all(&self.wbuf)
        };
        self.session.clear_output();
        self.wbuf.clear();
        match res {
            Ok(()) => Ok(()),
            Err(e) => {
                let during = format!("sending {what}");
                Err(self.fail(ClientError::from_io(e, &during, t)))
            }
        }
    }

    /// Reads more bytes into the frame decoder.
    fn fill(
        &mut self,
        what: Activity,
        timeout: Option<Duration>,
        deadline: Option<Instant>,
    ) -> Result<(), ClientError> {
        let mut t = timeout;
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.fail(ClientError::Timeout {
                    during: format!("the reply to {what}"),
                    after: self.timeouts.eom.unwrap_or_default(),
                }));
            }
            t = Some(t.map_or(left, |t| t.min(left)));
        }
        if let Err(e) = self.set_read_timeout(t) {
            return Err(self.fail(e));
        }
        loop {
            let spare = self.decoder.spare();
            match self.stream.read(spare) {
                Ok(0) => {
                    if let Some(peer) = peer::not_a_milter(self.decoder.pending()) {
                        let e = not_a_milter(peer, what, self.decoder.pending());
                        return Err(self.fail(e));
                    }
                    let during = if self.decoder.buffered() > 0 {
                        format!("the reply to {what} (in the middle of a packet)")
                    } else {
                        format!("the reply to {what}")
                    };
                    return Err(self.fail(ClientError::Disconnected { during }));
                }
                Ok(n) => {
                    self.decoder.commit(n);
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let during = format!("the reply to {what}");
                    return Err(self.fail(ClientError::from_io(e, &during, t)));
                }
            }
        }
    }

    /// Reads and classifies the next packet of the reply to `what`.
    fn read_received(
        &mut self,
        what: Activity,
        timeout: Option<Duration>,
        deadline: Option<Instant>,
    ) -> Result<Received, ClientError> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    let r = self
                        .session
                        .receive(frame)
                        .map_err(|e| ClientError::from_core(e, &format!("the reply to {what}")));
                    return r.map_err(|e| self.fail(e));
                }
                Ok(None) => {}
                Err(e) => {
                    let e = decode_error(e, what, self.decoder.pending());
                    return Err(self.fail(e));
                }
            }
            self.fill(what, timeout, deadline)?;
        }
    }
}

/// A peer recognised as not a milter from the bytes it sent.
fn not_a_milter(peer: String, what: Activity, pending: &[u8]) -> ClientError {
    ClientError::NotAMilter {
        during: what.to_string(),
        peer,
        bytes: pending[..pending.len().min(64)].to_vec(),
    }
}

/// A packet that does not frame: the length prefix is the offending bytes,
/// unless what is `pending` shows a peer that is not a milter.
fn decode_error(e: milter_core::DecodeError, what: Activity, pending: &[u8]) -> ClientError {
    if let Some(peer) = peer::not_a_milter(pending) {
        return not_a_milter(peer, what, pending);
    }
    let bytes = match &e {
        milter_core::DecodeError::ZeroLength => vec![0; 4],
        milter_core::DecodeError::FrameTooLarge { payload, .. } => u32::try_from(payload + 1)
            .unwrap_or(u32::MAX)
            .to_be_bytes()
            .to_vec(),
        _ => Vec::new(),
    };
    ClientError::Protocol {
        during: format!("the reply to {what}"),
        reason: e.to_string(),
        bytes,
    }
}

/// Bytes the milter sent after its final reply; the stray packet (or what there
/// is of it) is the offending bytes.
fn stray(decoder: &mut FrameDecoder, what: Activity) -> ClientError {
    let bytes = match decoder.next_frame() {
        Ok(Some(f)) => {
            let mut b = vec![f.code];
            b.extend_from_slice(&f.payload[..f.payload.len().min(63)]);
            b
        }
        _ => Vec::new(),
    };
    ClientError::Protocol {
        during: format!("the reply to {what}"),
        reason: "a packet after the final reply (an answer to a stage negotiated as no-reply?)"
            .into(),
        bytes,
    }
}
