//! Commands: the packets the MTA sends to the milter.
//!
//! Every command borrows from the frame it was decoded from; nothing is copied.

mod connect;
mod envelope;
mod header;
mod macro_def;
mod optneg;

pub use connect::{Connect, ConnectAddr, Family};
pub use envelope::{bare_address, Args, EnvelopeAddr};
pub use header::Header;
pub use macro_def::{MacroDef, MacroPairs};
pub use optneg::OptNeg;

use crate::error::DecodeError;
use crate::frame::{encode_empty, encode_frame, Frame};
use crate::reader::Reader;

/// A command from the MTA.
///
/// ```
/// use milter_core::{Command, frame::Frame};
/// let cmd = Command::decode(Frame { code: b'H', payload: b"mx.example.org\0" }).unwrap();
/// assert_eq!(cmd, Command::Helo(b"mx.example.org"));
/// let mut wire = Vec::new();
/// cmd.encode(&mut wire);
/// assert_eq!(wire, b"\0\0\0\x10Hmx.example.org\0");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command<'a> {
    /// `O`: option negotiation.
    OptNeg(OptNeg),
    /// `D`: macros for the next command.
    Macro(MacroDef<'a>),
    /// `C`: connection information.
    Connect(Connect<'a>),
    /// `H`: the HELO/EHLO argument.
    Helo(&'a [u8]),
    /// `M`: the envelope sender.
    Mail(EnvelopeAddr<'a>),
    /// `R`: one envelope recipient.
    Rcpt(EnvelopeAddr<'a>),
    /// `T`: DATA.
    Data,
    /// `L`: one header.
    Header(Header<'a>),
    /// `N`: end of headers.
    Eoh,
    /// `B`: one body chunk.
    Body(&'a [u8]),
    /// `E`: end of message; real MTAs send it empty, but it may carry a last body
    /// chunk (empty slice when there is none).
    Eom(&'a [u8]),
    /// `A`: abort the current message.
    Abort,
    /// `Q`: quit.
    Quit,
    /// `K`: quit, a new session follows on this connection.
    QuitNewConnection,
    /// `U`: an SMTP command the MTA does not know (the whole line, no CRLF).
    Unknown(&'a [u8]),
    /// A code that is not a command of the protocol.
    Unrecognized {
        /// The code byte.
        code: u8,
        /// Its payload.
        payload: &'a [u8],
    },
}

impl<'a> Command<'a> {
    /// Decodes a frame into a command.
    ///
    /// Commands that need a payload and got none, strings without their NUL, and
    /// bad connect addresses are errors; an unknown code is
    /// [`Command::Unrecognized`], not an error.
    pub fn decode(frame: Frame<'a>) -> Result<Command<'a>, DecodeError> {
        let p = frame.payload;
        Ok(match frame.code {
            b'O' => Command::OptNeg(OptNeg::decode(p)?),
            b'D' => Command::Macro(MacroDef::decode(p)?),
            b'C' => Command::Connect(Connect::decode(p)?),
            b'H' => Command::Helo(Reader::new(b'H', p).cstr("HELO name")?),
            b'M' => Command::Mail(EnvelopeAddr::decode(b'M', p)?),
            b'R' => Command::Rcpt(EnvelopeAddr::decode(b'R', p)?),
            b'T' => Command::Data,
            b'L' => Command::Header(Header::decode(p)?),
            b'N' => Command::Eoh,
            b'B' => {
                if p.is_empty() {
                    return Err(DecodeError::Truncated {
                        code: b'B',
                        field: "body chunk",
                    });
                }
                Command::Body(p)
            }
            b'E' => Command::Eom(p),
            b'A' => Command::Abort,
            b'Q' => Command::Quit,
            b'K' => Command::QuitNewConnection,
            b'U' => Command::Unknown(Reader::new(b'U', p).cstr("SMTP command")?),
            code => Command::Unrecognized { code, payload: p },
        })
    }

    /// The code byte of this command.
    pub fn code(&self) -> u8 {
        match self {
            Command::OptNeg(_) => b'O',
            Command::Macro(_) => b'D',
            Command::Connect(_) => b'C',
            Command::Helo(_) => b'H',
            Command::Mail(_) => b'M',
            Command::Rcpt(_) => b'R',
            Command::Data => b'T',
            Command::Header(_) => b'L',
            Command::Eoh => b'N',
            Command::Body(_) => b'B',
            Command::Eom(_) => b'E',
            Command::Abort => b'A',
            Command::Quit => b'Q',
            Command::QuitNewConnection => b'K',
            Command::Unknown(_) => b'U',
            Command::Unrecognized { code, .. } => *code,
        }
    }

    /// Appends the packet for this command.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Command::OptNeg(o) => o.encode(out),
            Command::Macro(m) => m.encode(out),
            Command::Connect(c) => c.encode(out),
            Command::Helo(h) => encode_frame(out, b'H', &[h, b"\0"]),
            Command::Mail(m) => m.encode(b'M', out),
            Command::Rcpt(r) => r.encode(b'R', out),
            Command::Header(h) => h.encode(out),
            Command::Body(b) => encode_frame(out, b'B', &[b]),
            Command::Eom(b) => encode_frame(out, b'E', &[b]),
            Command::Unknown(u) => encode_frame(out, b'U', &[u, b"\0"]),
            Command::Unrecognized { code, payload } => encode_frame(out, *code, &[payload]),
            Command::Data => encode_empty(out, b'T'),
            Command::Eoh => encode_empty(out, b'N'),
            Command::Abort => encode_empty(out, b'A'),
            Command::Quit => encode_empty(out, b'Q'),
            Command::QuitNewConnection => encode_empty(out, b'K'),
        }
    }
}

#[cfg(test)]
mod tests;
