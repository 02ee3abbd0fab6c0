//! Error types, one per family of operation. Each says whose fault it is.

use crate::flags::{Actions, ProtocolOpts};
use crate::stage::Stage;
use std::fmt;

/// Bytes from the peer that are not a valid packet. Always the peer's fault.
///
/// "Not enough bytes yet" is never an error: decoders return `Ok(None)` for it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// A length prefix of 0: there is not even a code byte.
    ZeroLength,
    /// A length prefix announcing a payload above the configured maximum. Detected
    /// before any of the payload is buffered.
    FrameTooLarge {
        /// Payload size the length prefix announced.
        payload: u64,
        /// The configured maximum payload.
        max: usize,
    },
    /// A packet whose payload is shorter than its fixed fields, or empty where
    /// the command needs one.
    Truncated {
        /// Command or reply code.
        code: u8,
        /// Which field is missing.
        field: &'static str,
    },
    /// A string field without its terminating NUL.
    MissingNul {
        /// Command or reply code.
        code: u8,
        /// Which field is unterminated.
        field: &'static str,
    },
    /// Bytes after the last field where the protocol allows none.
    TrailingBytes {
        /// Command or reply code.
        code: u8,
        /// How many bytes were left over.
        count: usize,
    },
    /// A connect packet with a family byte other than `4`, `6`, `L` or `U`.
    BadFamily(u8),
    /// A connect packet whose address text does not parse for its family.
    BadAddress {
        /// The family byte.
        family: u8,
    },
    /// A value outside the range the protocol allows (named in `field`).
    BadValue {
        /// Command or reply code.
        code: u8,
        /// Which field.
        field: &'static str,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::ZeroLength => f.write_str("packet with length 0 (no command code)"),
            DecodeError::FrameTooLarge { payload, max } => write!(
                f,
                "packet announces a {payload}-byte payload, above the limit of {max} bytes"
            ),
            DecodeError::Truncated { code, field } => {
                write!(f, "{} packet too short: {field} missing", show_code(*code))
            }
            DecodeError::MissingNul { code, field } => {
                write!(
                    f,
                    "{} packet: {field} is not NUL-terminated",
                    show_code(*code)
                )
            }
            DecodeError::TrailingBytes { code, count } => {
                write!(
                    f,
                    "{} packet: {count} unexpected trailing bytes",
                    show_code(*code)
                )
            }
            DecodeError::BadFamily(b) => {
                write!(
                    f,
                    "connect packet with unknown address family {}",
                    show_code(*b)
                )
            }
            DecodeError::BadAddress { family } => write!(
                f,
                "connect packet: address does not parse for family {}",
                show_code(*family)
            ),
            DecodeError::BadValue { code, field } => {
                write!(f, "{} packet: invalid {field}", show_code(*code))
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Renders a code byte for messages: `'C'` or `0x00`.
pub(crate) fn show_code(code: u8) -> String {
    if code.is_ascii_graphic() {
        format!("'{}'", code as char)
    } else {
        format!("0x{code:02x}")
    }
}

/// Why negotiation with an MTA failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NegotiateError {
    /// The MTA offered a protocol version below 2 (peer's fault).
    VersionTooOld(u32),
    /// The milter requires actions the MTA did not offer.
    ActionsNotOffered {
        /// The required actions that are missing from the offer.
        missing: Actions,
    },
    /// The milter requires protocol options the MTA did not offer.
    OptionsNotOffered {
        /// The required options that are missing from the offer.
        missing: ProtocolOpts,
    },
}

impl fmt::Display for NegotiateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NegotiateError::VersionTooOld(v) => {
                write!(f, "MTA offers protocol version {v}; at least 2 is needed")
            }
            NegotiateError::ActionsNotOffered { missing } => write!(
                f,
                "milter requires actions the MTA does not offer: {missing:?} (0x{:x})",
                missing.bits()
            ),
            NegotiateError::OptionsNotOffered { missing } => write!(
                f,
                "milter requires protocol options the MTA does not offer: {missing:?} (0x{:x})",
                missing.bits()
            ),
        }
    }
}

impl std::error::Error for NegotiateError {}

/// A custom SMTP reply that cannot be sent (the caller's fault).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyError {
    /// The code is not three digits from 400 to 599.
    BadCode(String),
    /// The code's class does not match the decision (4xx with reject, 5xx with
    /// tempfail).
    ClassMismatch {
        /// The reply code.
        code: u16,
        /// What was asked: "reject" or "tempfail".
        decision: &'static str,
    },
    /// The enhanced status code is not `class.subject.detail` with the class of the
    /// reply code.
    BadEnhancedCode(String),
    /// A line of text contains CR, LF or NUL.
    ControlCharacter {
        /// The 0-based line number.
        line: usize,
    },
    /// A line is longer than [`crate::limits::MAX_REPLY_LINE`] bytes.
    LineTooLong {
        /// The 0-based line number.
        line: usize,
        /// Its length.
        len: usize,
    },
    /// More than [`crate::limits::MAX_REPLY_LINES`] lines, or none.
    LineCount(usize),
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::BadCode(c) => {
                write!(f, "SMTP reply code {c:?} is not a 4xx or 5xx code")
            }
            ReplyError::ClassMismatch { code, decision } => {
                write!(f, "SMTP reply code {code} does not fit a {decision}")
            }
            ReplyError::BadEnhancedCode(c) => write!(
                f,
                "enhanced status code {c:?} is not class.subject.detail matching the reply code"
            ),
            ReplyError::ControlCharacter { line } => {
                write!(f, "SMTP reply line {line} contains CR, LF or NUL")
            }
            ReplyError::LineTooLong { line, len } => write!(
                f,
                "SMTP reply line {line} is {len} bytes long; at most {} are allowed",
                crate::limits::MAX_REPLY_LINE
            ),
            ReplyError::LineCount(n) => write!(
                f,
                "SMTP reply with {n} lines; 1 to {} are allowed",
                crate::limits::MAX_REPLY_LINES
            ),
        }
    }
}

impl std::error::Error for ReplyError {}

/// A modification that cannot be sent now (the caller's fault).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ActionError {
    /// The action was not negotiated with the MTA (not declared by the milter,
    /// or not offered by the MTA).
    NotNegotiated {
        /// The action that is missing.
        action: Actions,
        /// The name of the call that needed it.
        call: &'static str,
    },
    /// Modifications are only allowed while answering end of message.
    NotAtEndOfMessage {
        /// The name of the call.
        call: &'static str,
    },
    /// An argument is empty where it may not be, or contains a NUL byte.
    InvalidArgument {
        /// The name of the call.
        call: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The packet would exceed the largest payload the MTA accepts.
    TooLarge {
        /// The name of the call.
        call: &'static str,
        /// The payload size.
        len: usize,
    },
    /// A replacement body chunk after the run of replacement-body packets was
    /// interrupted by another modification (Postfix fails the message then).
    BodyRunInterrupted,
}

impl fmt::Display for ActionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionError::NotNegotiated { action, call } => write!(
                f,
                "{call}: action {action:?} was not negotiated (declare it on the milter; the MTA must offer it)"
            ),
            ActionError::NotAtEndOfMessage { call } => {
                write!(f, "{call}: modifications are only allowed at end of message")
            }
            ActionError::InvalidArgument { call, reason } => write!(f, "{call}: {reason}"),
            ActionError::TooLarge { call, len } => write!(
                f,
                "{call}: {len}-byte packet exceeds the {}-byte limit",
                crate::limits::MAX_SEND_PAYLOAD
            ),
            ActionError::BodyRunInterrupted => f.write_str(
                "replace_body: the replacement body must be sent in one uninterrupted run",
            ),
        }
    }
}

impl std::error::Error for ActionError {}

/// A filter-side session that cannot go on. The connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionError {
    /// Bytes that are not a valid packet (the MTA's fault).
    Decode(DecodeError),
    /// A valid packet at a point of the conversation where it is not allowed
    /// (the MTA's fault).
    OutOfOrder {
        /// The command code.
        code: u8,
        /// Where the conversation was.
        state: &'static str,
    },
    /// A command code that is not in the protocol (the MTA's fault).
    UnknownCommand(u8),
    /// Negotiation failed.
    Negotiate(NegotiateError),
    /// The driver called the session at the wrong time (a bug in the caller).
    Misuse(&'static str),
    /// A `D` packet would take the session's macros beyond their bounds (the
    /// MTA's fault, or a bound set too low).
    Macros(MacroLimitError),
}

/// A `D` packet that would take a session's macros beyond their bounds (see
/// [`MacroStore`](crate::MacroStore)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacroLimitError {
    /// The command code the packet names.
    pub code: u8,
    /// Bytes of names and values the session would hold.
    pub bytes: usize,
    /// Macros the session would hold (0 when the bytes alone are too many).
    pub macros: usize,
    /// The bound on bytes.
    pub max_bytes: usize,
    /// The bound on macros.
    pub max_macros: usize,
}

impl fmt::Display for MacroLimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.bytes > self.max_bytes {
            write!(
                f,
                "macros for {} would bring the session's macros to {} bytes, above the limit of {} bytes",
                show_code(self.code),
                self.bytes,
                self.max_bytes
            )
        } else {
            write!(
                f,
                "macros for {} would bring the session's macros to {} pairs, above the limit of {}",
                show_code(self.code),
                self.macros,
                self.max_macros
            )
        }
    }
}

impl std::error::Error for MacroLimitError {}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Decode(e) => write!(f, "malformed packet from MTA: {e}"),
            SessionError::OutOfOrder { code, state } => {
                write!(f, "command {} not allowed {state}", show_code(*code))
            }
            SessionError::UnknownCommand(c) => {
                write!(f, "unknown command code {}", show_code(*c))
            }
            SessionError::Negotiate(e) => write!(f, "negotiation failed: {e}"),
            SessionError::Misuse(m) => write!(f, "session driver misuse: {m}"),
            SessionError::Macros(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SessionError::Decode(e) => Some(e),
            SessionError::Negotiate(e) => Some(e),
            SessionError::Macros(e) => Some(e),
            _ => None,
        }
    }
}

impl From<DecodeError> for SessionError {
    fn from(e: DecodeError) -> Self {
        SessionError::Decode(e)
    }
}

impl From<NegotiateError> for SessionError {
    fn from(e: NegotiateError) -> Self {
        SessionError::Negotiate(e)
    }
}

/// What went wrong on the MTA side of a conversation (our client).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// The caller used the session wrongly (sent a stage out of order, asked for a
    /// modification-free call at end of message, ...).
    Misuse(String),
    /// The milter broke the protocol; `bytes` holds the offending packet (code and
    /// payload), at most 64 bytes of it.
    Protocol {
        /// What is wrong.
        reason: String,
        /// The start of the offending packet.
        bytes: Vec<u8>,
    },
    /// The milter's bytes are not a valid packet.
    Decode(DecodeError),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Misuse(m) => write!(f, "client misuse: {m}"),
            ClientError::Protocol { reason, bytes } => {
                write!(
                    f,
                    "milter broke the protocol: {reason} (packet: {})",
                    hex(bytes)
                )
            }
            ClientError::Decode(e) => write!(f, "malformed packet from milter: {e}"),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Decode(e) => Some(e),
            _ => None,
        }
    }
}

impl From<DecodeError> for ClientError {
    fn from(e: DecodeError) -> Self {
        ClientError::Decode(e)
    }
}

/// Used in messages about stages.
pub(crate) fn stage_state(stage: Option<Stage>) -> &'static str {
    match stage {
        None => "outside a message",
        Some(Stage::Connect) => "after connect",
        Some(Stage::Helo) => "after HELO",
        Some(Stage::Mail) => "after MAIL",
        Some(Stage::Rcpt) => "after RCPT",
        Some(Stage::Data) => "after DATA",
        Some(Stage::Header) => "after a header",
        Some(Stage::Eoh) => "after end of headers",
        Some(Stage::Body) => "after a body chunk",
        Some(Stage::Eom) => "after end of message",
        Some(Stage::Unknown) => "after an unknown command",
    }
}
