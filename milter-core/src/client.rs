//! The MTA side of a milter conversation (our client): offer, send each stage,
//! classify the milter's replies, collect modifications.
//!
//! Like the filter side it does no I/O: commands are appended to
//! [`ClientSession::output`], and frames read from the milter are passed to
//! [`ClientSession::receive_negotiation`] and [`ClientSession::receive`].
//!
//! ```
//! use milter_core::client::{ClientSession, Sent};
//! use milter_core::{Command, OptNeg};
//! let mut mta = ClientSession::new(OptNeg::POSTFIX_3);
//! // Negotiation must come first: sending a stage now is misuse.
//! assert!(mta.send(&Command::Helo(b"x")).is_err());
//! ```

use crate::command::{Command, MacroDef, OptNeg};
use crate::error::ClientError;
use crate::flags::{Actions, ProtocolOpts};
use crate::frame::Frame;
use crate::limits::{MAX_BODY_CHUNK, MAX_SEND_PAYLOAD, MIN_PROTOCOL_VERSION};
use crate::modification::Modification;
use crate::reply::{Reply, SymbolList};
use crate::stage::{MacroStage, Stage, Stages};

/// How strictly the client checks the milter.
///
/// The default is the strictest reading of the protocol (to catch milter bugs);
/// the MTA profiles of the client relax it where a real MTA is more lenient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strictness {
    /// Refuse protocol bits in the negotiation reply that were not offered
    /// (Sendmail does; Postfix does not check).
    pub options_subset: bool,
    /// Refuse a replacement-body packet after the run of them was interrupted
    /// (Postfix does; Sendmail does not).
    pub body_run: bool,
    /// Refuse a modification whose action was not negotiated (neither MTA does;
    /// on by default to catch milter bugs).
    pub negotiated_actions: bool,
    /// Read a progress packet (`p`) in answer to any command as "still working"
    /// and keep waiting (Postfix); otherwise it is allowed only at end of message
    /// (Sendmail puts the milter in its error state).
    pub progress_anywhere: bool,
    /// Accept skip (`s`) in answer to any command, not only to a body chunk:
    /// further commands of the same kind are then not sent until another kind is
    /// sent (Postfix).
    pub skip_anywhere: bool,
    /// Accept a quarantine request (`q`) before end of message (Postfix holds the
    /// message, keeps waiting for the decision, and sends no more envelope
    /// commands in the session). The quarantine comes as
    /// [`Received::Modification`], then the decision.
    pub quarantine_anywhere: bool,
    /// How the text of a `y` reply is checked.
    pub reply_text: ReplyTextCheck,
    /// What a negotiation reply with version 0 or 1 means.
    pub low_version: LowVersion,
}

impl Default for Strictness {
    fn default() -> Self {
        Strictness {
            options_subset: true,
            body_run: true,
            negotiated_actions: true,
            progress_anywhere: false,
            skip_anywhere: false,
            quarantine_anywhere: false,
            reply_text: ReplyTextCheck::EveryLineSameCode,
            low_version: LowVersion::Refuse,
        }
    }
}

/// How the text of a `y` (reply code) answer is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyTextCheck {
    /// Only the start of the text: `4` or `5`, two digits, a space or `-`, and an
    /// enhanced status code (if any) of the same class (Postfix 3.7 to 3.11;
    /// Sendmail checks less still). Later lines are not looked at, so a
    /// multi-line reply whose lines carry different codes passes.
    FirstLine,
    /// Every line as above, `-` after the code on every line but the last
    /// (Postfix 3.12's `milter8_valid_smtp_reply`).
    EveryLine,
    /// Every line, and every line with the first line's code (the same check
    /// in Postfix development snapshots; the default).
    EveryLineSameCode,
    /// Sendmail's check: a text that does not start with `4` or `5` and two
    /// digits, or has a lone `%` (Sendmail uses it as a format string), is not
    /// an error but is replaced by the MTA's default reply for the command
    /// (`550 5.7.1 Command rejected`; `554 ...` at connect, body and end of
    /// message; `550 Command rejected` at HELO). Nothing else is checked.
    ReplaceMalformed,
}

/// What the client does with a milter that answers the negotiation with version
/// 0 or 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LowVersion {
    /// Refuse it (libmilter knows no version below 2; the default).
    Refuse,
    /// Accept it and send the events of the offered version (Postfix logs
    /// "unexpected protocol version" and goes on).
    AsOffered,
    /// Accept 0 and treat it like version 2 (no DATA, no unknown command); refuse
    /// 1 (Sendmail's check).
    ZeroAsTwo,
}

/// What the client and the milter agreed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientNegotiated {
    /// The version the milter speaks.
    pub version: u32,
    /// Actions the milter may use.
    pub actions: Actions,
    /// Protocol options the milter chose.
    pub protocol: ProtocolOpts,
    /// Stages not sent to the milter (skip bits, and stages its version lacks).
    pub skipped: Stages,
    /// Stages the milter does not answer.
    pub no_reply: Stages,
    /// The symbol lists the milter sent (unknown stage indexes dropped).
    pub symbol_lists: Vec<SymbolList>,
}

impl ClientNegotiated {
    /// The macros the milter asked for at a stage, if it sent a list.
    pub fn macros_for(&self, stage: MacroStage) -> Option<&[u8]> {
        self.symbol_lists
            .iter()
            .rev()
            .find(|l| l.index == stage.index())
            .map(|l| l.macros.as_slice())
    }
}

/// What [`ClientSession::send`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Sent; a reply is expected.
    AwaitReply,
    /// Sent; the milter negotiated no reply for this stage (or the command never
    /// has one: `D`, `A`, `Q`, `K`).
    NoReply,
    /// Not sent: the milter asked to skip this stage, or its version lacks it.
    Skipped,
}

/// A final answer of the milter to one command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Decision {
    /// `c`.
    Continue,
    /// `a`.
    Accept,
    /// `r`.
    Reject,
    /// `t`.
    Tempfail,
    /// `d`.
    Discard,
    /// `s` (body only).
    Skip,
    /// `y`, with the reply text.
    Reply(Vec<u8>),
    /// `4` (Postfix: 421 and close).
    Shutdown,
}

impl Decision {
    /// A short name for output: `continue`, `reject`, `reply`, ...
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Continue => "continue",
            Decision::Accept => "accept",
            Decision::Reject => "reject",
            Decision::Tempfail => "tempfail",
            Decision::Discard => "discard",
            Decision::Skip => "skip",
            Decision::Reply(_) => "reply",
            Decision::Shutdown => "shutdown",
        }
    }

    /// Whether this ends the message (or session).
    pub fn is_final(&self) -> bool {
        !matches!(self, Decision::Continue | Decision::Skip)
    }
}

/// One packet from the milter, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// `p`: the milter is still working.
    Progress,
    /// A modification (end of message only).
    Modification(Modification),
    /// The decision for the command; the exchange is over.
    Decision(Decision),
}

/// The MTA side of one milter connection.
#[derive(Debug)]
pub struct ClientSession {
    offer: OptNeg,
    strictness: Strictness,
    out: Vec<u8>,
    negotiated: Option<ClientNegotiated>,
    awaiting_negotiation: bool,
    awaiting: Option<Stage>,
    body_run: u8,
    /// The stage the milter answered skip to, until another kind of command.
    skipping: Option<Stage>,
    send_limit: Option<usize>,
}

impl ClientSession {
    /// A session that offers `offer`; the `O` packet is already in the output.
    pub fn new(offer: OptNeg) -> Self {
        Self::with_strictness(offer, Strictness::default())
    }

    /// Like [`ClientSession::new`] with explicit strictness.
    pub fn with_strictness(offer: OptNeg, strictness: Strictness) -> Self {
        let mut out = Vec::with_capacity(512);
        offer.encode(&mut out);
        ClientSession {
            offer,
            strictness,
            out,
            negotiated: None,
            awaiting_negotiation: true,
            awaiting: None,
            body_run: 0,
            skipping: None,
            send_limit: Some(MAX_SEND_PAYLOAD),
        }
    }

    /// Sets the largest packet payload [`ClientSession::send`] sends: `None` sends
    /// any size (Postfix's milter code has no limit; its cleanup server cuts
    /// headers to 60,000 bytes before they get there); the default is 65535
    /// bytes, libmilter's limit, which Sendmail also keeps to (a larger packet
    /// puts the milter in its error state there).
    pub fn set_send_limit(&mut self, limit: Option<usize>) {
        self.send_limit = limit;
    }

    /// The stage whose commands an MTA does not send now because the milter
    /// answered skip (`s`) to the last one; sending any other command ends the
    /// skip. (This session sends them if asked, so that a test can show how a
    /// milter copes.)
    pub fn skipping(&self) -> Option<Stage> {
        self.skipping
    }

    /// The offer this session made.
    pub fn offer(&self) -> &OptNeg {
        &self.offer
    }

    /// Bytes to send to the milter.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// Forgets the output once written (keeps capacity).
    pub fn clear_output(&mut self) {
        self.out.clear();
    }

    /// The negotiated parameters.
    pub fn negotiated(&self) -> Option<&ClientNegotiated> {
        self.negotiated.as_ref()
    }

    /// The stage whose reply is awaited.
    pub fn awaiting(&self) -> Option<Stage> {
        self.awaiting
    }

    /// Checks the milter's `O` reply.
    pub fn receive_negotiation(
        &mut self,
        frame: Frame<'_>,
    ) -> Result<&ClientNegotiated, ClientError> {
        if !self.awaiting_negotiation {
            return Err(protocol("negotiation reply not expected", frame));
        }
        if frame.code != b'O' {
            return Err(protocol("expected the negotiation reply 'O'", frame));
        }
        let reply = match Reply::decode(frame)? {
            Reply::OptNeg(o) => o,
            _ => return Err(protocol("expected the negotiation reply 'O'", frame)),
        };
        // The version whose events are sent.
        let effective = match (reply.version, self.strictness.low_version) {
            (0 | 1, LowVersion::AsOffered) => self.offer.version,
            (0, LowVersion::ZeroAsTwo) => 2,
            (v, _) => v,
        };
        if effective < MIN_PROTOCOL_VERSION || reply.version > self.offer.version {
            return Err(protocol(
                &format!(
                    "milter answered version {} to an offer of {}",
                    reply.version, self.offer.version
                ),
                frame,
            ));
        }
        if !self.offer.actions.contains(reply.actions) {
            return Err(protocol(
                &format!(
                    "milter asked for actions 0x{:x} beyond the offer 0x{:x}",
                    reply.actions.bits(),
                    self.offer.actions.bits()
                ),
                frame,
            ));
        }
        if self.strictness.options_subset && !self.offer.protocol.contains(reply.protocol) {
            return Err(protocol(
                &format!(
                    "milter asked for protocol options 0x{:x} beyond the offer 0x{:x}",
                    reply.protocol.bits(),
                    self.offer.protocol.bits()
                ),
                frame,
            ));
        }
        let mut skipped = Stages::empty();
        let mut no_reply = Stages::empty();
        for stage in Stage::ALL {
            if stage
                .skip_flag()
                .is_some_and(|f| reply.protocol.contains(f))
            {
                skipped |= stage.set();
            }
            if stage
                .no_reply_flag()
                .is_some_and(|f| reply.protocol.contains(f))
            {
                no_reply |= stage.set();
            }
        }
        if effective < 4 {
            skipped |= Stages::DATA;
        }
        if effective < 3 {
            skipped |= Stages::UNKNOWN;
        }
        let symbol_lists = reply
            .symbol_lists
            .into_iter()
            .filter(|l| l.stage().is_some())
            .collect();
        self.awaiting_negotiation = false;
        Ok(self.negotiated.insert(ClientNegotiated {
            version: reply.version,
            actions: reply.actions,
            protocol: reply.protocol,
            skipped,
            no_reply,
            symbol_lists,
        }))
    }

    /// Appends a macro packet for the command `code`.
    pub fn send_macros(&mut self, code: u8, pairs: &[(&[u8], &[u8])]) -> Result<(), ClientError> {
        self.check_ready()?;
        MacroDef::encode_pairs(&mut self.out, code, pairs.iter().copied());
        Ok(())
    }

    /// Appends a command, unless the milter negotiated its stage away.
    ///
    /// Empty body chunks and chunks over 65535 bytes are refused (no real MTA sends
    /// them); so is `E` with data. `O` and `D` have their own calls.
    pub fn send(&mut self, cmd: &Command<'_>) -> Result<Sent, ClientError> {
        self.check_ready()?;
        let stage = match cmd {
            Command::Connect(_) => Some(Stage::Connect),
            Command::Helo(_) => Some(Stage::Helo),
            Command::Mail(_) => Some(Stage::Mail),
            Command::Rcpt(_) => Some(Stage::Rcpt),
            Command::Data => Some(Stage::Data),
            Command::Header(_) => Some(Stage::Header),
            Command::Eoh => Some(Stage::Eoh),
            Command::Body(b) => {
                if b.is_empty() || b.len() > MAX_BODY_CHUNK {
                    return Err(ClientError::Misuse(format!(
                        "body chunks must be 1 to {MAX_BODY_CHUNK} bytes, not {}",
                        b.len()
                    )));
                }
                Some(Stage::Body)
            }
            Command::Eom(b) => {
                if !b.is_empty() {
                    return Err(ClientError::Misuse(
                        "end of message never carries data; send a body chunk first".into(),
                    ));
                }
                Some(Stage::Eom)
            }
            Command::Unknown(_) => Some(Stage::Unknown),
            Command::Abort | Command::Quit | Command::QuitNewConnection => None,
            Command::OptNeg(_) | Command::Macro(_) | Command::Unrecognized { .. } => {
                return Err(ClientError::Misuse(
                    "use the negotiation and macro calls for O and D".into(),
                ))
            }
        };
        let n = self
            .negotiated
            .as_ref()
            .ok_or_else(|| ClientError::Misuse("not negotiated".into()))?;
        // Another kind of command ends a skip (abort and quit too). The MTA side
        // decides whether to send more of the skipped kind (see `skipping`).
        if stage != self.skipping {
            self.skipping = None;
        }
        let result = match stage {
            Some(s) if n.skipped.has(s) => return Ok(Sent::Skipped),
            Some(s) if n.no_reply.has(s) => Sent::NoReply,
            Some(s) => {
                self.awaiting = Some(s);
                Sent::AwaitReply
            }
            None => Sent::NoReply,
        };
        let before = self.out.len();
        cmd.encode(&mut self.out);
        let packet = self.out.len() - before;
        if let Some(limit) = self.send_limit.filter(|&l| packet - 5 > l) {
            self.out.truncate(before);
            self.awaiting = None;
            return Err(ClientError::Misuse(format!(
                "a {packet}-byte packet exceeds the {limit}-byte payload limit"
            )));
        }
        if u32::try_from(packet - 4).is_err() {
            self.out.truncate(before);
            self.awaiting = None;
            return Err(ClientError::Misuse(format!(
                "a {packet}-byte packet does not fit the 32-bit length prefix"
            )));
        }
        if stage == Some(Stage::Eom) {
            self.body_run = 0;
        }
        Ok(result)
    }

    /// Classifies one packet from the milter while a reply is awaited.
    pub fn receive(&mut self, frame: Frame<'_>) -> Result<Received, ClientError> {
        let Some(stage) = self.awaiting else {
            return Err(protocol(
                "packet from the milter when no reply is due",
                frame,
            ));
        };
        let reply = Reply::decode(frame)?;
        let decision = match reply {
            Reply::Continue => Decision::Continue,
            Reply::Accept => Decision::Accept,
            Reply::Reject => Decision::Reject,
            Reply::Tempfail => Decision::Tempfail,
            Reply::Discard => Decision::Discard,
            Reply::ReplyCode(t)
                if self.strictness.reply_text == ReplyTextCheck::ReplaceMalformed =>
            {
                if sendmail_accepts(&t) {
                    Decision::Reply(t)
                } else {
                    Decision::Reply(sendmail_default_reply(stage).to_vec())
                }
            }
            Reply::ReplyCode(t) => {
                check_reply_text(&t, self.strictness.reply_text)
                    .map_err(|why| protocol(why, frame))?;
                Decision::Reply(t)
            }
            Reply::Shutdown => Decision::Shutdown,
            Reply::Skip if stage == Stage::Body || self.strictness.skip_anywhere => {
                self.skipping = Some(stage);
                Decision::Skip
            }
            Reply::Progress if stage == Stage::Eom => {
                if self.body_run == 1 {
                    self.body_run = 2;
                }
                return Ok(Received::Progress);
            }
            Reply::Progress if self.strictness.progress_anywhere => return Ok(Received::Progress),
            other if other.is_modification() => {
                let early_quarantine =
                    self.strictness.quarantine_anywhere && matches!(other, Reply::Quarantine(_));
                if stage != Stage::Eom && !early_quarantine {
                    return Err(protocol(
                        &format!(
                            "modification in reply to {stage}, only allowed at end of message"
                        ),
                        frame,
                    ));
                }
                let m = Modification::from_reply(other)
                    .ok_or_else(|| protocol("bad modification", frame))?;
                let granted = self
                    .negotiated
                    .as_ref()
                    .map_or(Actions::empty(), |n| n.actions);
                if self.strictness.negotiated_actions && !granted.contains(m.action()) {
                    return Err(protocol(
                        &format!("modification needs action {:?}, not negotiated", m.action()),
                        frame,
                    ));
                }
                if matches!(m, Modification::ReplaceBody(_)) {
                    if self.body_run == 2 && self.strictness.body_run {
                        return Err(protocol(
                            "replacement body packet after the run was interrupted",
                            frame,
                        ));
                    }
                    self.body_run = 1;
                } else if self.body_run == 1 {
                    self.body_run = 2;
                }
                return Ok(Received::Modification(m));
            }
            _ => {
                return Err(protocol(
                    &format!(
                        "reply {} not allowed in answer to {stage}",
                        crate::error::show_code(frame.code)
                    ),
                    frame,
                ))
            }
        };
        self.awaiting = None;
        Ok(Received::Decision(decision))
    }

    fn check_ready(&self) -> Result<(), ClientError> {
        if self.awaiting_negotiation {
            return Err(ClientError::Misuse("negotiation is not finished".into()));
        }
        if let Some(s) = self.awaiting {
            return Err(ClientError::Misuse(format!(
                "the reply to {s} has not been received"
            )));
        }
        Ok(())
    }
}

/// Checks a `y` text as `how` says.
fn check_reply_text(text: &[u8], how: ReplyTextCheck) -> Result<(), &'static str> {
    let lines: Vec<&[u8]> = match how {
        ReplyTextCheck::FirstLine => vec![text],
        _ => split_crlf(text),
    };
    for (i, line) in lines.iter().enumerate() {
        let last = i + 1 == lines.len();
        let separator = match how {
            ReplyTextCheck::FirstLine => matches!(line.get(3), Some(b' ' | b'-')),
            _ => line.get(3) == Some(if last { &b' ' } else { &b'-' }),
        };
        let ok = line.len() >= 4
            && matches!(line[0], b'4' | b'5')
            && line[1].is_ascii_digit()
            && line[2].is_ascii_digit()
            && separator
            && (how != ReplyTextCheck::EveryLineSameCode || line[..3] == lines[0][..3]);
        if !ok {
            if how == ReplyTextCheck::EveryLineSameCode && line.len() >= 3 {
                return Err(
                    "malformed SMTP reply text (every line must carry the first line's code)",
                );
            }
            return Err("malformed SMTP reply text");
        }
        if line.len() > 4 && line[4].is_ascii_digit() && line[4] != line[0] {
            return Err("enhanced status code class differs from the reply code");
        }
    }
    Ok(())
}

/// Sendmail's `MILTER_CHECK_REPLYCODE`: a code of `4` or `5` and two digits, and
/// every `%` doubled.
fn sendmail_accepts(text: &[u8]) -> bool {
    let code = text.len() >= 3
        && matches!(text[0], b'4' | b'5')
        && text[1].is_ascii_digit()
        && text[2].is_ascii_digit();
    let mut rest = text;
    while let Some(i) = rest.iter().position(|&b| b == b'%') {
        if rest.get(i + 1) != Some(&b'%') {
            return false;
        }
        rest = &rest[i + 2..];
    }
    code
}

/// The reply Sendmail puts in place of a malformed one (`milter_send_command`'s
/// `defresponse`, and end of message's).
fn sendmail_default_reply(stage: Stage) -> &'static [u8] {
    match stage {
        Stage::Connect => b"554 Command rejected",
        Stage::Helo => b"550 Command rejected",
        Stage::Body | Stage::Eom => b"554 5.7.1 Command rejected",
        _ => b"550 5.7.1 Command rejected",
    }
}

fn split_crlf(text: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
        lines.push(&rest[..i]);
        rest = &rest[i + 2..];
    }
    lines.push(rest);
    lines
}

fn protocol(reason: &str, frame: Frame<'_>) -> ClientError {
    let mut bytes = vec![frame.code];
    bytes.extend_from_slice(&frame.payload[..frame.payload.len().min(63)]);
    ClientError::Protocol {
        reason: reason.to_string(),
        bytes,
    }
}
