//! The filter-side session: the state machine of one milter connection.
//!
//! The driver (a server) owns the socket. Its loop is:
//!
//! 1. decode frames (see [`crate::frame::FrameDecoder`]) and pass each to
//!    [`FilterSession::handle`];
//! 2. for each [`Input`]: if `abort_first`, call the abort handler; if
//!    `new_message`, reset per-message state; then dispatch the event, if any;
//! 3. answer [`Event::Negotiate`] with [`FilterSession::negotiate`] and every
//!    stage event with [`FilterSession::reply`] (at end of message, after any
//!    modifications);
//! 4. when no complete frame is left, write [`FilterSession::output`] in one
//!    write and [`FilterSession::clear_output`], then read again.
//!
//! The session answers by itself every command the milter did not ask to see, and
//! every stage whose reply was negotiated away it leaves unanswered; it never
//! writes a packet the MTA did not agree to.
//!
//! ```
//! use milter_core::{filter::{Event, FilterSession}, frame::FrameDecoder, OptNeg, Spec, Stages, Status};
//! let mut session = FilterSession::new();
//! let mut wire = Vec::new();
//! OptNeg::POSTFIX_3.encode(&mut wire);
//! wire.extend_from_slice(b"\0\0\0\x10Hmx.example.org\0");
//! let mut frames = FrameDecoder::new();
//! frames.push(&wire);
//! let spec = Spec { handled: Stages::HELO, ..Spec::NONE };
//! while let Some(frame) = frames.next_frame().unwrap() {
//!     match session.handle(frame).unwrap().event {
//!         Some(Event::Negotiate(_offer)) => { session.negotiate(&spec).unwrap(); }
//!         Some(Event::Helo(name)) => {
//!             assert_eq!(name, b"mx.example.org");
//!             session.reply(Status::Continue).unwrap();
//!         }
//!         _ => {}
//!     }
//! }
//! // The O reply (version 6, no actions, skip everything but HELO) and `c`.
//! assert_eq!(&session.output()[..5], b"\0\0\0\x0dO");
//! assert_eq!(&session.output()[17..], b"\0\0\0\x01c");
//! ```

use crate::command::{Command, Connect, EnvelopeAddr, Header, OptNeg};
use crate::error::{stage_state, ActionError, SessionError};
use crate::flags::Actions;
use crate::frame::{encode_empty, encode_frame, Frame};
use crate::limits::{MAX_BODY_CHUNK, MAX_SEND_PAYLOAD};
use crate::macros::MacroStore;
use crate::negotiate::{negotiate, Negotiated, Spec};
use crate::reply::{encode_add_header, encode_addr_args, encode_indexed_header};
use crate::stage::{Stage, Stages};
use crate::status::Status;

/// What the driver must do for one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// The MTA's offer: answer with [`FilterSession::negotiate`].
    Negotiate(OptNeg),
    /// Connection information.
    Connect(Connect<'a>),
    /// HELO/EHLO argument.
    Helo(&'a [u8]),
    /// Envelope sender.
    Mail(EnvelopeAddr<'a>),
    /// One envelope recipient.
    Rcpt(EnvelopeAddr<'a>),
    /// DATA.
    Data,
    /// One header.
    Header(Header<'a>),
    /// End of headers.
    Eoh,
    /// One body chunk.
    Body(&'a [u8]),
    /// End of message. The slice is a last body chunk carried inside `E` (empty
    /// from real MTAs); when non-empty, pass it to the body handler first and, if
    /// that returns a final decision, reply with it instead of calling the
    /// end-of-message handler.
    Eom(&'a [u8]),
    /// An unknown SMTP command.
    Unknown(&'a [u8]),
    /// The message in progress was aborted: call the abort handler (no reply).
    Abort,
    /// The session is over (`Q` or end of input): call the close handler, then
    /// close the connection.
    Close,
    /// The session is over and a new one follows on this connection (`K`): call
    /// the close handler and keep reading.
    CloseKeepConnection,
}

impl Event<'_> {
    /// The stage this event is a reply-owing stage of, if any.
    pub fn stage(&self) -> Option<Stage> {
        Some(match self {
            Event::Connect(_) => Stage::Connect,
            Event::Helo(_) => Stage::Helo,
            Event::Mail(_) => Stage::Mail,
            Event::Rcpt(_) => Stage::Rcpt,
            Event::Data => Stage::Data,
            Event::Header(_) => Stage::Header,
            Event::Eoh => Stage::Eoh,
            Event::Body(_) => Stage::Body,
            Event::Eom(_) => Stage::Eom,
            Event::Unknown(_) => Stage::Unknown,
            _ => return None,
        })
    }
}

/// The result of [`FilterSession::handle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Input<'a> {
    /// A message was in progress and this command ends it implicitly (a new `M`,
    /// `H`, `Q`, `K` or end of input without `A`): call the abort handler before
    /// anything else.
    pub abort_first: bool,
    /// This command starts a new message: reset per-message state before the
    /// handler runs.
    pub new_message: bool,
    /// What to dispatch; `None` when the session handled the command itself
    /// (macros, an abort outside a message, a stage the milter does not handle).
    pub event: Option<Event<'a>>,
}

impl<'a> Input<'a> {
    fn none() -> Self {
        Input {
            abort_first: false,
            new_message: false,
            event: None,
        }
    }

    fn event(event: Event<'a>) -> Self {
        Input {
            event: Some(event),
            ..Input::none()
        }
    }
}

/// A status the session did not send as given.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Adjustment {
    /// The stage's reply was negotiated away: nothing was sent.
    NoReplyStage {
        /// The stage.
        stage: Stage,
        /// What the handler returned.
        status: Status,
    },
    /// The stage was declared no-reply but the MTA did not offer the bit: the
    /// session answered continue.
    ForcedContinue {
        /// The stage.
        stage: Stage,
        /// What the handler returned.
        status: Status,
    },
    /// The status is not allowed at this stage (discard at connect, skip outside
    /// the body, ...): continue was sent instead.
    NotAllowed {
        /// The stage.
        stage: Stage,
        /// What the handler returned.
        status: Status,
    },
    /// Skip was returned but not negotiated: continue was sent, and the rest of the
    /// body is answered without calling the body handler.
    SkipNotNegotiated,
}

impl std::fmt::Display for Adjustment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Adjustment::NoReplyStage { stage, status } => write!(
                f,
                "{stage} handler returned {} but the stage was negotiated no-reply: nothing sent",
                status.name()
            ),
            Adjustment::ForcedContinue { stage, status } => write!(
                f,
                "{stage} handler returned {} but the stage is declared no-reply: continue sent",
                status.name()
            ),
            Adjustment::NotAllowed { stage, status } => write!(
                f,
                "{} is not allowed at the {stage} stage: continue sent",
                status.name()
            ),
            Adjustment::SkipNotNegotiated => f.write_str(
                "skip returned but not negotiated: continue sent, rest of the body ignored",
            ),
        }
    }
}

/// What [`FilterSession::reply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyOutcome {
    /// Set when the status was changed or dropped; worth a warning in the log.
    pub adjusted: Option<Adjustment>,
    /// The message is over for this milter (final decision, or end of message):
    /// reset per-message state.
    pub message_ended: bool,
}

/// Where the conversation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    /// Waiting for the MTA's `O`.
    Start,
    /// `O` received; the driver has not answered yet.
    Negotiating,
    /// Negotiated; no command of the session yet (also after `K`).
    Idle,
    /// In a session, outside a message.
    Session,
    /// Inside a message; the last stage received.
    Message(Stage),
    /// The milter gave a final decision for the message; waiting for the next one.
    MessageDone,
    /// The session is over.
    Closed,
}

impl Position {
    /// A short name for status displays.
    pub fn name(&self) -> &'static str {
        match self {
            Position::Start => "start",
            Position::Negotiating => "negotiating",
            Position::Idle => "idle",
            Position::Session => "session",
            Position::Message(s) => s.name(),
            Position::MessageDone => "message-done",
            Position::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyRun {
    NotStarted,
    Running,
    Interrupted,
}

/// The milter side of one connection. See the [module documentation](self).
#[derive(Debug)]
pub struct FilterSession {
    position: Position,
    negotiated: Option<Negotiated>,
    macros: MacroStore,
    out: Vec<u8>,
    owed: Option<Stage>,
    body_ignored: bool,
    body_run: BodyRun,
    progress_deferred: bool,
    session_started: bool,
    pending_offer: Option<OptNeg>,
}

impl Default for FilterSession {
    fn default() -> Self {
        Self::new()
    }
}

impl FilterSession {
    /// A session waiting for the MTA's negotiation packet.
    pub fn new() -> Self {
        FilterSession {
            position: Position::Start,
            negotiated: None,
            macros: MacroStore::new(),
            out: Vec::with_capacity(256),
            owed: None,
            body_ignored: false,
            body_run: BodyRun::NotStarted,
            progress_deferred: false,
            session_started: true,
            pending_offer: None,
        }
    }

    /// Bytes to send to the MTA.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// Drops the output written after the first `len` bytes (a driver that
    /// validates modifications without sending them, as in a dry run).
    pub fn truncate_output(&mut self, len: usize) {
        self.out.truncate(len);
    }

    /// Forgets the output once it was written. Keeps the buffer's capacity.
    pub fn clear_output(&mut self) {
        self.out.clear();
    }

    /// The macros in scope.
    pub fn macros(&self) -> &MacroStore {
        &self.macros
    }

    /// Sets the most bytes of macros the session holds (default
    /// [`DEFAULT_MAX_MACRO_BYTES`](crate::limits::DEFAULT_MAX_MACRO_BYTES));
    /// a `D` packet beyond it is a [`SessionError::Macros`].
    pub fn set_max_macro_bytes(&mut self, bytes: usize) {
        self.macros.set_max_bytes(bytes);
    }

    /// The driver is done with the message that ended (its final reply sent,
    /// or its abort handled): frees the message's macros (see
    /// [`MacroStore::release_message`]).
    pub fn release_message_macros(&mut self) {
        self.macros.release_message();
    }

    /// The negotiated parameters, once negotiation is done.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Where the conversation is.
    pub fn position(&self) -> Position {
        self.position
    }

    /// The stage whose reply the driver still owes, if any.
    pub fn owed(&self) -> Option<Stage> {
        self.owed
    }

    /// Whether a message is in progress.
    pub fn in_message(&self) -> bool {
        matches!(self.position, Position::Message(_))
    }

    /// Processes one frame from the MTA.
    pub fn handle<'a>(&mut self, frame: Frame<'a>) -> Result<Input<'a>, SessionError> {
        if self.owed.is_some() {
            return Err(SessionError::Misuse(
                "a reply is owed before the next command",
            ));
        }
        // Macros, every other packet from a real MTA: stored without the
        // general decode (what `Command::Macro` below does, for a session past
        // negotiation; an empty packet takes the general path to its error).
        if let (b'D', Some((&code, raw))) = (frame.code, frame.payload.split_first()) {
            if !matches!(
                self.position,
                Position::Start | Position::Negotiating | Position::Closed
            ) {
                self.macros
                    .define(code, raw)
                    .map_err(SessionError::Macros)?;
                return Ok(Input::none());
            }
        }
        let cmd = Command::decode(frame)?;
        match self.position {
            Position::Start => {
                return match cmd {
                    Command::OptNeg(offer) => {
                        self.macros.clear();
                        self.position = Position::Negotiating;
                        self.pending_offer = Some(offer);
                        Ok(Input::event(Event::Negotiate(offer)))
                    }
                    other => Err(SessionError::OutOfOrder {
                        code: other.code(),
                        state: "before negotiation",
                    }),
                };
            }
            Position::Negotiating => {
                return Err(SessionError::Misuse("negotiation not answered"));
            }
            Position::Closed => return Err(SessionError::Misuse("session is closed")),
            _ => {}
        }
        if self.position == Position::Idle
            && !matches!(
                cmd,
                Command::Macro(_) | Command::Abort | Command::Quit | Command::QuitNewConnection
            )
        {
            // The first command of a session after `K` starts it (whatever the
            // command: connect may be negotiated away).
            self.session_started = true;
        }
        match cmd {
            Command::Macro(def) => {
                self.macros
                    .define(def.stage, def.raw)
                    .map_err(SessionError::Macros)?;
                Ok(Input::none())
            }
            Command::OptNeg(_) => Err(SessionError::OutOfOrder {
                code: b'O',
                state: "after negotiation",
            }),
            Command::Abort => {
                self.macros.command(b'A');
                match self.position {
                    Position::Message(_) => {
                        self.end_message();
                        Ok(Input::event(Event::Abort))
                    }
                    Position::MessageDone => {
                        self.position = Position::Session;
                        Ok(Input::none())
                    }
                    _ => Ok(Input::none()),
                }
            }
            Command::Quit | Command::QuitNewConnection => {
                let keep = matches!(cmd, Command::QuitNewConnection);
                self.macros.command(cmd.code());
                let abort_first = self.in_message();
                self.end_message();
                // A session that never began (a `K` right after `K`, or `Q` right
                // after `K`) has no close to report.
                let had_session = std::mem::replace(&mut self.session_started, false);
                self.position = if keep {
                    Position::Idle
                } else {
                    Position::Closed
                };
                let event = match (had_session, keep) {
                    (false, _) => None,
                    (true, true) => Some(Event::CloseKeepConnection),
                    (true, false) => Some(Event::Close),
                };
                Ok(Input {
                    abort_first,
                    new_message: false,
                    event,
                })
            }
            Command::Connect(c) => {
                if self.position != Position::Idle {
                    return Err(self.out_of_order(b'C'));
                }
                self.macros.command(b'C');
                self.session_started = true;
                self.position = Position::Session;
                Ok(self.stage_event(Stage::Connect, Event::Connect(c)))
            }
            Command::Helo(name) => {
                self.require_session(b'H', Stage::Helo)?;
                let abort_first = self.in_message();
                self.end_message();
                self.macros.command(b'H');
                self.position = Position::Session;
                let mut input = self.stage_event(Stage::Helo, Event::Helo(name));
                input.abort_first = abort_first;
                Ok(input)
            }
            Command::Mail(addr) => {
                self.require_session(b'M', Stage::Mail)?;
                let abort_first = self.in_message();
                self.end_message();
                self.macros.command(b'M');
                self.position = Position::Message(Stage::Mail);
                let mut input = self.stage_event(Stage::Mail, Event::Mail(addr));
                input.abort_first = abort_first;
                input.new_message = true;
                Ok(input)
            }
            Command::Rcpt(addr) => self.message_command(Stage::Rcpt, Event::Rcpt(addr)),
            Command::Data => self.message_command(Stage::Data, Event::Data),
            Command::Header(h) => self.message_command(Stage::Header, Event::Header(h)),
            Command::Eoh => self.message_command(Stage::Eoh, Event::Eoh),
            Command::Body(chunk) => self.message_command(Stage::Body, Event::Body(chunk)),
            Command::Eom(chunk) => {
                let chunk = if self.wants_body() { chunk } else { &[] };
                self.message_command(Stage::Eom, Event::Eom(chunk))
            }
            Command::Unknown(line) => {
                self.macros.command(b'U');
                if self.position == Position::Idle {
                    self.position = Position::Session;
                }
                Ok(self.stage_event(Stage::Unknown, Event::Unknown(line)))
            }
            Command::Unrecognized { code, .. } => Err(SessionError::UnknownCommand(code)),
        }
    }

    /// Ends the conversation on end of input (EOF, read error, timeout): the abort
    /// handler is due if a message was in progress, and the close handler once per
    /// session. Returns `None` if the session was already closed.
    pub fn end_of_input(&mut self) -> Option<Input<'static>> {
        if self.position == Position::Closed {
            return None;
        }
        let abort_first = self.in_message();
        self.end_message();
        self.owed = None;
        self.position = Position::Closed;
        if !self.session_started {
            // A `K` ended the last session and no new one began.
            return None;
        }
        Some(Input {
            abort_first,
            new_message: false,
            event: Some(Event::Close),
        })
    }

    /// Answers the MTA's offer with what `spec` asks for. On error nothing is
    /// written and the connection should be closed (libmilter does the same).
    pub fn negotiate(&mut self, spec: &Spec) -> Result<&Negotiated, SessionError> {
        let Some(offer) = self.pending_offer.take() else {
            return Err(SessionError::Misuse("no negotiation to answer"));
        };
        let n = negotiate(&offer, spec)?;
        n.reply().encode(&mut self.out);
        self.position = Position::Idle;
        self.session_started = true;
        Ok(&*self.negotiated.insert(n))
    }

    /// Sends the handler's decision for the stage whose event was last returned.
    #[inline]
    pub fn reply(&mut self, status: Status) -> Result<ReplyOutcome, SessionError> {
        // The common case, continue before end of message: one `c` (nothing
        // where the reply was negotiated away) and no change of state. Kept
        // small so that a driver can inline it.
        if let (Status::Continue, Some(stage), Some(n)) = (&status, self.owed, &self.negotiated) {
            if stage != Stage::Eom {
                self.owed = None;
                if !n.no_reply.has(stage) {
                    encode_empty(&mut self.out, b'c');
                }
                return Ok(ReplyOutcome {
                    adjusted: None,
                    message_ended: false,
                });
            }
        }
        self.reply_any(status)
    }

    /// [`reply`](Self::reply) for any status at any stage.
    #[inline(never)]
    fn reply_any(&mut self, status: Status) -> Result<ReplyOutcome, SessionError> {
        let Some(stage) = self.owed.take() else {
            return Err(SessionError::Misuse("no reply is owed"));
        };
        let n = self
            .negotiated
            .as_ref()
            .ok_or(SessionError::Misuse("not negotiated"))?;
        let mut adjusted = None;
        let status = match (stage, status) {
            (Stage::Body, Status::Skip) => {
                self.body_ignored = true;
                if n.can_skip() {
                    Status::Skip
                } else {
                    adjusted = Some(Adjustment::SkipNotNegotiated);
                    Status::Continue
                }
            }
            (Stage::Connect | Stage::Helo | Stage::Unknown, s @ Status::Discard)
            | (Stage::Unknown, s @ Status::Accept)
            | (_, s @ Status::Skip) => {
                adjusted = Some(Adjustment::NotAllowed { stage, status: s });
                Status::Continue
            }
            (_, s) => s,
        };

        if stage == Stage::Eom {
            // A progress deferred during the replacement body goes out now that
            // the run is complete.
            if std::mem::take(&mut self.progress_deferred) {
                encode_empty(&mut self.out, b'p');
            }
            encode_status(&mut self.out, &status);
            self.end_message();
            self.position = Position::Session;
            return Ok(ReplyOutcome {
                adjusted,
                message_ended: true,
            });
        }

        if n.no_reply.has(stage) {
            if status != Status::Continue {
                adjusted = Some(Adjustment::NoReplyStage { stage, status });
            }
            return Ok(ReplyOutcome {
                adjusted,
                message_ended: false,
            });
        }
        if n.forced_continue.has(stage) {
            if status != Status::Continue {
                adjusted = Some(Adjustment::ForcedContinue { stage, status });
            }
            encode_empty(&mut self.out, b'c');
            return Ok(ReplyOutcome {
                adjusted,
                message_ended: false,
            });
        }

        encode_status(&mut self.out, &status);
        let message_ended = self.after_decision(stage, &status);
        Ok(ReplyOutcome {
            adjusted,
            message_ended,
        })
    }

    /// Moves the state machine after a decision at a non-eom stage; returns whether
    /// the message is over for the milter.
    fn after_decision(&mut self, stage: Stage, status: &Status) -> bool {
        if !status.is_final() {
            return false;
        }
        match stage {
            Stage::Connect | Stage::Helo | Stage::Unknown => false,
            Stage::Mail => {
                self.end_message();
                if matches!(status, Status::Accept | Status::Discard) {
                    self.position = Position::MessageDone;
                } else {
                    // MAIL refused: the transaction never started.
                    self.position = Position::Session;
                }
                true
            }
            Stage::Rcpt if !matches!(status, Status::Accept | Status::Discard) => false,
            _ => {
                self.end_message();
                self.position = Position::MessageDone;
                true
            }
        }
    }

    fn end_message(&mut self) {
        self.body_ignored = false;
        self.body_run = BodyRun::NotStarted;
        self.progress_deferred = false;
        if matches!(self.position, Position::Message(_) | Position::MessageDone) {
            self.position = Position::Session;
        }
    }

    fn wants_body(&self) -> bool {
        !self.body_ignored
            && self
                .negotiated
                .as_ref()
                .is_some_and(|n| n.handled.has(Stage::Body))
    }

    fn out_of_order(&self, code: u8) -> SessionError {
        let state = match self.position {
            Position::Message(stage) => stage_state(Some(stage)),
            Position::MessageDone => "after the milter's final decision for the message",
            Position::Idle => "before connect",
            _ => stage_state(None),
        };
        SessionError::OutOfOrder { code, state }
    }

    fn skipped(&self, stage: Stage) -> bool {
        self.negotiated
            .as_ref()
            .is_some_and(|n| n.skipped.has(stage))
    }

    /// `H` and `M` need a session: a `C` first, unless connect was negotiated away.
    fn require_session(&self, code: u8, _stage: Stage) -> Result<(), SessionError> {
        if self.position == Position::Idle && !self.skipped(Stage::Connect) {
            return Err(self.out_of_order(code));
        }
        Ok(())
    }

    /// A command inside a message: checks the order (stages only move forward;
    /// `R`, `L` and `B` repeat) and starts a message implicitly when MAIL was
    /// negotiated away.
    fn message_command<'a>(
        &mut self,
        stage: Stage,
        event: Event<'a>,
    ) -> Result<Input<'a>, SessionError> {
        let mut new_message = false;
        match self.position {
            Position::Message(last) => {
                let repeats =
                    last == stage && matches!(stage, Stage::Rcpt | Stage::Header | Stage::Body);
                let forward = stage > last;
                let rcpt_after_mail = stage == Stage::Rcpt && last == Stage::Mail;
                if !(repeats || forward || rcpt_after_mail)
                    || (stage == Stage::Rcpt && last > Stage::Rcpt)
                {
                    return Err(self.out_of_order(stage.code()));
                }
            }
            Position::Session | Position::Idle if self.skipped(Stage::Mail) => {
                if self.position == Position::Idle && !self.skipped(Stage::Connect) {
                    return Err(self.out_of_order(stage.code()));
                }
                new_message = true;
            }
            _ => return Err(self.out_of_order(stage.code())),
        }
        self.macros.command(stage.code());
        self.position = Position::Message(stage);
        let mut input = self.stage_event(stage, event);
        input.new_message = new_message;
        Ok(input)
    }

    /// Returns the event for a stage the milter handles; answers the others here.
    fn stage_event<'a>(&mut self, stage: Stage, event: Event<'a>) -> Input<'a> {
        let Some(n) = self.negotiated.as_ref() else {
            return Input::none();
        };
        let ignored_body = stage == Stage::Body && self.body_ignored;
        if n.handled.has(stage) && !ignored_body {
            self.owed = Some(stage);
            return Input::event(event);
        }
        if !n.no_reply.has(stage) {
            encode_empty(&mut self.out, b'c');
        }
        Input::none()
    }

    // ---- modifications (end of message only) ----

    fn check_mod(&mut self, action: Actions, call: &'static str) -> Result<(), ActionError> {
        if self.owed != Some(Stage::Eom) {
            return Err(ActionError::NotAtEndOfMessage { call });
        }
        let granted = self
            .negotiated
            .as_ref()
            .map_or(Actions::empty(), |n| n.actions);
        if !granted.contains(action) {
            return Err(ActionError::NotNegotiated { action, call });
        }
        Ok(())
    }

    /// Ends a run of replacement-body packets before another packet.
    fn interrupt_body_run(&mut self) {
        if self.body_run == BodyRun::Running {
            self.body_run = BodyRun::Interrupted;
            if std::mem::take(&mut self.progress_deferred) {
                encode_empty(&mut self.out, b'p');
            }
        }
    }

    /// Appends a header (`h`).
    pub fn add_header(&mut self, name: &[u8], value: &[u8]) -> Result<(), ActionError> {
        const CALL: &str = "add_header";
        self.check_mod(Actions::ADD_HEADER, CALL)?;
        check_name(CALL, name)?;
        check_text(CALL, value, "header value")?;
        check_size(CALL, name.len() + value.len() + 2)?;
        self.interrupt_body_run();
        encode_add_header(&mut self.out, name, value);
        Ok(())
    }

    /// Inserts a header at `index` (`i`; 0 = top, counted in the MTA's own list).
    pub fn insert_header(
        &mut self,
        index: u32,
        name: &[u8],
        value: &[u8],
    ) -> Result<(), ActionError> {
        const CALL: &str = "insert_header";
        self.check_mod(Actions::ADD_HEADER, CALL)?;
        check_name(CALL, name)?;
        check_text(CALL, value, "header value")?;
        check_size(CALL, name.len() + value.len() + 6)?;
        self.interrupt_body_run();
        encode_indexed_header(&mut self.out, b'i', index, name, value);
        Ok(())
    }

    /// Changes the `index`-th (1-based) header called `name` (`m`); an empty value
    /// deletes it.
    pub fn change_header(
        &mut self,
        name: &[u8],
        index: u32,
        value: &[u8],
    ) -> Result<(), ActionError> {
        const CALL: &str = "change_header";
        self.check_mod(Actions::CHANGE_HEADER, CALL)?;
        check_name(CALL, name)?;
        check_text(CALL, value, "header value")?;
        check_size(CALL, name.len() + value.len() + 6)?;
        self.interrupt_body_run();
        encode_indexed_header(&mut self.out, b'm', index, name, value);
        Ok(())
    }

    /// Adds a recipient (`+`).
    pub fn add_rcpt(&mut self, rcpt: &[u8]) -> Result<(), ActionError> {
        const CALL: &str = "add_rcpt";
        self.check_mod(Actions::ADD_RCPT, CALL)?;
        check_addr(CALL, rcpt)?;
        self.interrupt_body_run();
        encode_frame(&mut self.out, b'+', &[rcpt, b"\0"]);
        Ok(())
    }

    /// Adds a recipient with ESMTP arguments (`2`; all arguments in one
    /// space-separated string).
    pub fn add_rcpt_with_args(
        &mut self,
        rcpt: &[u8],
        args: Option<&[u8]>,
    ) -> Result<(), ActionError> {
        const CALL: &str = "add_rcpt_with_args";
        self.check_mod(Actions::ADD_RCPT_WITH_ARGS, CALL)?;
        check_addr(CALL, rcpt)?;
        if let Some(a) = args {
            check_text(CALL, a, "ESMTP arguments")?;
            check_size(CALL, rcpt.len() + a.len() + 2)?;
        }
        self.interrupt_body_run();
        encode_addr_args(&mut self.out, b'2', rcpt, args);
        Ok(())
    }

    /// Deletes a recipient (`-`); give the address exactly as received in RCPT.
    pub fn delete_rcpt(&mut self, rcpt: &[u8]) -> Result<(), ActionError> {
        const CALL: &str = "delete_rcpt";
        self.check_mod(Actions::DELETE_RCPT, CALL)?;
        check_addr(CALL, rcpt)?;
        self.interrupt_body_run();
        encode_frame(&mut self.out, b'-', &[rcpt, b"\0"]);
        Ok(())
    }

    /// Changes the envelope sender (`e`), with optional ESMTP arguments.
    pub fn change_from(&mut self, from: &[u8], args: Option<&[u8]>) -> Result<(), ActionError> {
        const CALL: &str = "change_from";
        self.check_mod(Actions::CHANGE_FROM, CALL)?;
        check_addr(CALL, from)?;
        if let Some(a) = args {
            check_text(CALL, a, "ESMTP arguments")?;
            check_size(CALL, from.len() + a.len() + 2)?;
        }
        self.interrupt_body_run();
        encode_addr_args(&mut self.out, b'e', from, args);
        Ok(())
    }

    /// Appends to the replacement body (`b` packets of at most 65535 bytes). Call
    /// it as often as needed, with no other modification in between; an empty
    /// chunk sends one empty packet (an empty new body).
    pub fn replace_body(&mut self, chunk: &[u8]) -> Result<(), ActionError> {
        self.check_mod(Actions::CHANGE_BODY, "replace_body")?;
        if self.body_run == BodyRun::Interrupted {
            return Err(ActionError::BodyRunInterrupted);
        }
        self.body_run = BodyRun::Running;
        if chunk.is_empty() {
            encode_frame(&mut self.out, b'b', &[]);
        }
        for part in chunk.chunks(MAX_BODY_CHUNK) {
            encode_frame(&mut self.out, b'b', &[part]);
        }
        Ok(())
    }

    /// Quarantines the message (`q`) with a non-empty reason.
    pub fn quarantine(&mut self, reason: &[u8]) -> Result<(), ActionError> {
        const CALL: &str = "quarantine";
        self.check_mod(Actions::QUARANTINE, CALL)?;
        if reason.is_empty() {
            return Err(ActionError::InvalidArgument {
                call: CALL,
                reason: "the reason may not be empty",
            });
        }
        check_text(CALL, reason, "reason")?;
        check_size(CALL, reason.len() + 1)?;
        self.interrupt_body_run();
        encode_frame(&mut self.out, b'q', &[reason, b"\0"]);
        Ok(())
    }

    /// Tells the MTA the milter is still working (`p`). Inside a run of
    /// replacement-body packets it is deferred until the run ends.
    pub fn progress(&mut self) -> Result<(), ActionError> {
        if self.owed != Some(Stage::Eom) {
            return Err(ActionError::NotAtEndOfMessage { call: "progress" });
        }
        if self.body_run == BodyRun::Running {
            self.progress_deferred = true;
        } else {
            encode_empty(&mut self.out, b'p');
        }
        Ok(())
    }

    /// The actions negotiated for this connection.
    pub fn actions(&self) -> Actions {
        self.negotiated
            .as_ref()
            .map_or(Actions::empty(), |n| n.actions)
    }

    /// The stages the milter handles (as negotiated).
    pub fn handled(&self) -> Stages {
        self.negotiated
            .as_ref()
            .map_or(Stages::empty(), |n| n.handled)
    }
}

/// Appends the packet for a decision.
fn encode_status(out: &mut Vec<u8>, status: &Status) {
    match status {
        Status::Continue => encode_empty(out, b'c'),
        Status::Accept => encode_empty(out, b'a'),
        Status::Reject => encode_empty(out, b'r'),
        Status::Tempfail => encode_empty(out, b't'),
        Status::Discard => encode_empty(out, b'd'),
        Status::Skip => encode_empty(out, b's'),
        Status::Reply(r) => encode_frame(out, b'y', &[r.wire_text(), b"\0"]),
    }
}

fn check_name(call: &'static str, name: &[u8]) -> Result<(), ActionError> {
    if name.is_empty() {
        return Err(ActionError::InvalidArgument {
            call,
            reason: "the header name may not be empty",
        });
    }
    if name
        .iter()
        .any(|&b| b == 0 || b == b':' || b.is_ascii_whitespace())
    {
        return Err(ActionError::InvalidArgument {
            call,
            reason: "the header name may not contain NUL, ':' or white space",
        });
    }
    Ok(())
}

fn check_text(call: &'static str, text: &[u8], _what: &'static str) -> Result<(), ActionError> {
    if text.contains(&0) {
        return Err(ActionError::InvalidArgument {
            call,
            reason: "the text may not contain a NUL byte",
        });
    }
    Ok(())
}

fn check_addr(call: &'static str, addr: &[u8]) -> Result<(), ActionError> {
    if addr.is_empty() {
        return Err(ActionError::InvalidArgument {
            call,
            reason: "the address may not be empty",
        });
    }
    check_text(call, addr, "address")?;
    check_size(call, addr.len() + 1)
}

fn check_size(call: &'static str, len: usize) -> Result<(), ActionError> {
    if len > MAX_SEND_PAYLOAD {
        return Err(ActionError::TooLarge { call, len });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::ProtocolOpts;

    /// One command per stage, in protocol order (unknown after HELO).
    const COMMANDS: [(Stage, u8, &[u8]); 10] = [
        (Stage::Connect, b'C', b"client.example\0U"),
        (Stage::Helo, b'H', b"client.example\0"),
        (Stage::Unknown, b'U', b"NOOP\0"),
        (Stage::Mail, b'M', b"<a@example.org>\0"),
        (Stage::Rcpt, b'R', b"<b@example.org>\0"),
        (Stage::Data, b'T', b""),
        (Stage::Header, b'L', b"Subject\0hi\0"),
        (Stage::Eoh, b'N', b""),
        (Stage::Body, b'B', b"body"),
        (Stage::Eom, b'E', b""),
    ];

    /// A session negotiated with `spec` against `offer` that has just handed
    /// out the event of `stage` (every stage before it answered continue);
    /// its output holds only what that command wrote.
    fn owing(offer: OptNeg, spec: &Spec, stage: Stage) -> FilterSession {
        let mut s = FilterSession::new();
        let mut wire = Vec::new();
        offer.encode(&mut wire);
        let frame = Frame {
            code: wire[4],
            payload: &wire[5..],
        };
        s.handle(frame).unwrap();
        s.negotiate(spec).unwrap();
        for (at, code, payload) in COMMANDS {
            s.clear_output();
            s.handle(Frame { code, payload }).unwrap();
            if at == stage {
                break;
            }
            if s.owed().is_some() {
                s.reply_any(Status::Continue).unwrap();
            }
        }
        assert_eq!(s.owed(), Some(stage));
        s
    }

    #[test]
    fn continue_takes_the_short_path_with_the_same_result_as_the_general_one() {
        let without_no_reply = OptNeg {
            protocol: OptNeg::POSTFIX_3.protocol
                - (ProtocolOpts::NR_CONNECT
                    | ProtocolOpts::NR_HELO
                    | ProtocolOpts::NR_MAIL
                    | ProtocolOpts::NR_RCPT
                    | ProtocolOpts::NR_DATA
                    | ProtocolOpts::NR_UNKNOWN
                    | ProtocolOpts::NR_HEADER
                    | ProtocolOpts::NR_EOH
                    | ProtocolOpts::NR_BODY),
            ..OptNeg::POSTFIX_3
        };
        let mut checked = 0;
        for (stage, _, _) in COMMANDS {
            let no_reply = if stage == Stage::Eom {
                Stages::empty()
            } else {
                stage.set()
            };
            for (offer, no_reply) in [
                // Answered: `c`.
                (OptNeg::POSTFIX_3, Stages::empty()),
                // Reply negotiated away: nothing.
                (OptNeg::POSTFIX_3, no_reply),
                // Declared no-reply but not offered: `c` all the same.
                (without_no_reply, no_reply),
            ] {
                let spec = Spec {
                    handled: Stages::all(),
                    no_reply,
                    actions: Actions::ADD_HEADER,
                    ..Spec::NONE
                };
                let mut short = owing(offer, &spec, stage);
                let mut general = owing(offer, &spec, stage);
                let a = short.reply(Status::Continue).unwrap();
                let b = general.reply_any(Status::Continue).unwrap();
                let what = format!("{stage}, offer {:?}, no-reply {no_reply:?}", offer.protocol);
                assert_eq!(a, b, "{what}");
                assert_eq!(short.output(), general.output(), "{what}");
                assert_eq!(short.position(), general.position(), "{what}");
                assert_eq!(short.owed(), None, "{what}");
                let answered = !(no_reply.has(stage) && offer == OptNeg::POSTFIX_3);
                let want: &[u8] = if answered { b"\0\0\0\x01c" } else { b"" };
                assert_eq!(short.output(), want, "{what}");
                checked += 1;
            }
        }
        assert_eq!(checked, 30);
    }

    fn negotiated(spec: &Spec) -> FilterSession {
        let mut s = FilterSession::new();
        let mut wire = Vec::new();
        OptNeg::POSTFIX_3.encode(&mut wire);
        s.handle(Frame {
            code: wire[4],
            payload: &wire[5..],
        })
        .unwrap();
        s.negotiate(spec).unwrap();
        s.clear_output();
        s
    }

    fn macro_frame(payload: &[u8]) -> Frame<'_> {
        Frame {
            code: b'D',
            payload,
        }
    }

    #[test]
    fn macros_are_refused_where_the_session_cannot_take_them() {
        let mut s = FilterSession::new();
        assert!(matches!(
            s.handle(macro_frame(b"Ci\0Q1\0")),
            Err(SessionError::OutOfOrder { code: b'D', .. })
        ));
        let spec = Spec {
            handled: Stages::all(),
            ..Spec::NONE
        };
        let mut s = negotiated(&spec);
        assert!(
            s.handle(macro_frame(b"")).is_err(),
            "a packet without its code"
        );
        let after: [(u8, &[u8], &str); 2] = [
            (b'C', b"client.example\0U", "a reply is owed"),
            (b'Q', b"", "closed"),
        ];
        for (code, payload, why) in after {
            let mut s = negotiated(&spec);
            s.handle(Frame { code, payload }).unwrap();
            assert!(
                matches!(
                    s.handle(macro_frame(b"Hi\0Q1\0")),
                    Err(SessionError::Misuse(_))
                ),
                "{why}"
            );
        }
    }

    #[test]
    fn macros_are_stored_and_do_not_start_a_session() {
        let mut s = negotiated(&Spec {
            handled: Stages::all(),
            ..Spec::NONE
        });
        let input = s.handle(macro_frame(b"C{daemon_name}\0mx\0")).unwrap();
        assert_eq!(input, Input::none());
        assert_eq!(s.macros().get("daemon_name"), Some(&b"mx"[..]));
        assert!(s.output().is_empty());
        // After `K` a macro alone does not begin a session: `Q` has no close to report.
        s.handle(Frame {
            code: b'K',
            payload: b"",
        })
        .unwrap();
        s.handle(macro_frame(b"Ci\0Q1\0")).unwrap();
        let input = s
            .handle(Frame {
                code: b'Q',
                payload: b"",
            })
            .unwrap();
        assert_eq!(input.event, None);
    }
}
