//! Replies: the packets the milter sends to the MTA.
//!
//! [`Reply`] is the owned, typed form used by the MTA side (our client) to decode
//! what a milter sent. The milter side encodes straight into its output buffer
//! with the `encode_*` functions, which [`Reply::encode`] shares.

use crate::error::DecodeError;
use crate::flags::{Actions, ProtocolOpts};
use crate::frame::{encode_empty, encode_frame, Frame};
use crate::reader::Reader;
use crate::stage::MacroStage;

/// A symbol list in a negotiation reply: the macros wanted at one stage.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SymbolList {
    /// The wire stage index (0–6 are the known [`MacroStage`]s; others are kept
    /// so that a client can see and ignore them).
    pub index: u32,
    /// Space-separated macro names (`{i} {auth_authen} j`); may be empty.
    pub macros: Vec<u8>,
}

impl SymbolList {
    /// The stage, if the index is one of the seven known ones.
    pub fn stage(&self) -> Option<MacroStage> {
        MacroStage::from_index(self.index)
    }
}

/// The milter's answer to option negotiation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OptNegReply {
    /// The version the milter will speak.
    pub version: u32,
    /// The actions the milter wants.
    pub actions: Actions,
    /// The protocol options the milter wants.
    pub protocol: ProtocolOpts,
    /// Symbol lists, in the order sent.
    pub symbol_lists: Vec<SymbolList>,
}

impl OptNegReply {
    /// Decodes the payload of an `O` reply. Trailing bytes that do not form a whole
    /// symbol list are an error (a list without its NUL).
    pub fn decode(payload: &[u8]) -> Result<OptNegReply, DecodeError> {
        let mut r = Reader::new(b'O', payload);
        let version = r.u32("version")?;
        let actions = Actions::from_bits_retain(r.u32("actions")?);
        let protocol = ProtocolOpts::from_bits_retain(r.u32("protocol flags")?);
        let mut symbol_lists = Vec::new();
        while !r.is_empty() {
            let index = r.u32("symbol list stage")?;
            let macros = r.cstr("symbol list")?.to_vec();
            symbol_lists.push(SymbolList { index, macros });
        }
        Ok(OptNegReply {
            version,
            actions,
            protocol,
            symbol_lists,
        })
    }

    /// Appends the `O` reply packet.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut payload = Vec::with_capacity(12 + self.symbol_lists.len() * 24);
        payload.extend_from_slice(&self.version.to_be_bytes());
        payload.extend_from_slice(&self.actions.bits().to_be_bytes());
        payload.extend_from_slice(&self.protocol.bits().to_be_bytes());
        for l in &self.symbol_lists {
            payload.extend_from_slice(&l.index.to_be_bytes());
            payload.extend_from_slice(&l.macros);
            payload.push(0);
        }
        encode_frame(out, b'O', &[&payload]);
    }
}

/// A reply from the milter.
///
/// ```
/// use milter_core::{Reply, frame::Frame};
/// let r = Reply::decode(Frame { code: b'h', payload: b"X-Scan\0clean\0" }).unwrap();
/// assert_eq!(r, Reply::AddHeader { name: b"X-Scan".to_vec(), value: b"clean".to_vec() });
/// let mut wire = Vec::new();
/// r.encode(&mut wire);
/// assert_eq!(wire, b"\0\0\0\x0ehX-Scan\0clean\0");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reply {
    /// `O`: the negotiation answer.
    OptNeg(OptNegReply),
    /// `c`: continue.
    Continue,
    /// `a`: accept.
    Accept,
    /// `r`: reject.
    Reject,
    /// `t`: temporary failure.
    Tempfail,
    /// `d`: discard.
    Discard,
    /// `y`: reject or tempfail with this SMTP reply text (without the NUL).
    ReplyCode(Vec<u8>),
    /// `s`: skip the rest of the body.
    Skip,
    /// `p`: progress (keep-alive during end of message).
    Progress,
    /// `h`: add a header.
    AddHeader {
        /// Header name.
        name: Vec<u8>,
        /// Header value.
        value: Vec<u8>,
    },
    /// `i`: insert a header at a position.
    InsertHeader {
        /// Position (0 = top).
        index: u32,
        /// Header name.
        name: Vec<u8>,
        /// Header value.
        value: Vec<u8>,
    },
    /// `m`: change the `index`-th header of that name (1-based); an empty value
    /// deletes it.
    ChangeHeader {
        /// Occurrence of the name, 1-based.
        index: u32,
        /// Header name.
        name: Vec<u8>,
        /// New value (empty: delete).
        value: Vec<u8>,
    },
    /// `+`: add a recipient.
    AddRcpt(Vec<u8>),
    /// `2`: add a recipient with ESMTP arguments (one space-separated string).
    AddRcptWithArgs {
        /// The recipient.
        rcpt: Vec<u8>,
        /// The arguments, if any.
        args: Option<Vec<u8>>,
    },
    /// `-`: delete a recipient.
    DeleteRcpt(Vec<u8>),
    /// `e`: change the envelope sender.
    ChangeFrom {
        /// The new sender.
        from: Vec<u8>,
        /// ESMTP arguments, if any (one space-separated string).
        args: Option<Vec<u8>>,
    },
    /// `b`: a chunk of the replacement body.
    ReplaceBody(Vec<u8>),
    /// `q`: quarantine with this reason.
    Quarantine(Vec<u8>),
    /// `f`: connection failure (implemented by neither MTA; never sent by us).
    ConnectionFailure,
    /// `l`: set symbol list as a packet (defined, never used by anyone; the layout
    /// mirrors one symbol-list entry).
    SetSymbolList(SymbolList),
    /// `4`: shutdown (421). Postfix accepts it; never sent by us.
    Shutdown,
    /// A code that is not a reply of the protocol.
    Unrecognized {
        /// The code byte.
        code: u8,
        /// Its payload.
        payload: Vec<u8>,
    },
}

impl Reply {
    /// Decodes a frame into a reply. Strings must be NUL-terminated and, as
    /// Postfix checks, no bytes may follow the expected fields.
    pub fn decode(frame: Frame<'_>) -> Result<Reply, DecodeError> {
        let code = frame.code;
        let mut r = Reader::new(code, frame.payload);
        let reply = match code {
            b'O' => return Ok(Reply::OptNeg(OptNegReply::decode(frame.payload)?)),
            b'c' => Reply::Continue,
            b'a' => Reply::Accept,
            b'r' => Reply::Reject,
            b't' => Reply::Tempfail,
            b'd' => Reply::Discard,
            b's' => Reply::Skip,
            b'p' => Reply::Progress,
            b'f' => Reply::ConnectionFailure,
            b'4' => Reply::Shutdown,
            b'y' => Reply::ReplyCode(r.cstr("reply text")?.to_vec()),
            b'h' => Reply::AddHeader {
                name: r.cstr("header name")?.to_vec(),
                value: r.cstr("header value")?.to_vec(),
            },
            b'i' | b'm' => {
                let index = r.u32("header index")?;
                let name = r.cstr("header name")?.to_vec();
                let value = r.cstr("header value")?.to_vec();
                if code == b'i' {
                    Reply::InsertHeader { index, name, value }
                } else {
                    Reply::ChangeHeader { index, name, value }
                }
            }
            b'+' => Reply::AddRcpt(r.cstr("recipient")?.to_vec()),
            b'-' => Reply::DeleteRcpt(r.cstr("recipient")?.to_vec()),
            b'2' | b'e' => {
                let addr = r.cstr("address")?.to_vec();
                let args = if r.is_empty() {
                    None
                } else {
                    Some(r.cstr("ESMTP arguments")?.to_vec())
                };
                if code == b'2' {
                    Reply::AddRcptWithArgs { rcpt: addr, args }
                } else {
                    Reply::ChangeFrom { from: addr, args }
                }
            }
            b'b' => Reply::ReplaceBody(r.rest().to_vec()),
            b'q' => Reply::Quarantine(r.cstr("reason")?.to_vec()),
            b'l' => Reply::SetSymbolList(SymbolList {
                index: r.u32("symbol list stage")?,
                macros: r.cstr("symbol list")?.to_vec(),
            }),
            _ => {
                return Ok(Reply::Unrecognized {
                    code,
                    payload: frame.payload.to_vec(),
                })
            }
        };
        r.finish()?;
        Ok(reply)
    }

    /// The code byte.
    pub fn code(&self) -> u8 {
        match self {
            Reply::OptNeg(_) => b'O',
            Reply::Continue => b'c',
            Reply::Accept => b'a',
            Reply::Reject => b'r',
            Reply::Tempfail => b't',
            Reply::Discard => b'd',
            Reply::ReplyCode(_) => b'y',
            Reply::Skip => b's',
            Reply::Progress => b'p',
            Reply::AddHeader { .. } => b'h',
            Reply::InsertHeader { .. } => b'i',
            Reply::ChangeHeader { .. } => b'm',
            Reply::AddRcpt(_) => b'+',
            Reply::AddRcptWithArgs { .. } => b'2',
            Reply::DeleteRcpt(_) => b'-',
            Reply::ChangeFrom { .. } => b'e',
            Reply::ReplaceBody(_) => b'b',
            Reply::Quarantine(_) => b'q',
            Reply::ConnectionFailure => b'f',
            Reply::SetSymbolList(_) => b'l',
            Reply::Shutdown => b'4',
            Reply::Unrecognized { code, .. } => *code,
        }
    }

    /// Whether this reply is a final decision (`c a r t d y`; `s` ends the body).
    pub fn is_decision(&self) -> bool {
        matches!(
            self,
            Reply::Continue
                | Reply::Accept
                | Reply::Reject
                | Reply::Tempfail
                | Reply::Discard
                | Reply::ReplyCode(_)
        )
    }

    /// Whether this reply is a modification (only legal at end of message).
    pub fn is_modification(&self) -> bool {
        matches!(
            self,
            Reply::AddHeader { .. }
                | Reply::InsertHeader { .. }
                | Reply::ChangeHeader { .. }
                | Reply::AddRcpt(_)
                | Reply::AddRcptWithArgs { .. }
                | Reply::DeleteRcpt(_)
                | Reply::ChangeFrom { .. }
                | Reply::ReplaceBody(_)
                | Reply::Quarantine(_)
        )
    }

    /// Appends the packet for this reply.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::OptNeg(o) => o.encode(out),
            Reply::ReplyCode(t) => encode_frame(out, b'y', &[t, b"\0"]),
            Reply::AddHeader { name, value } => encode_add_header(out, name, value),
            Reply::InsertHeader { index, name, value } => {
                encode_indexed_header(out, b'i', *index, name, value)
            }
            Reply::ChangeHeader { index, name, value } => {
                encode_indexed_header(out, b'm', *index, name, value)
            }
            Reply::AddRcpt(r) => encode_frame(out, b'+', &[r, b"\0"]),
            Reply::DeleteRcpt(r) => encode_frame(out, b'-', &[r, b"\0"]),
            Reply::AddRcptWithArgs { rcpt, args } => {
                encode_addr_args(out, b'2', rcpt, args.as_deref())
            }
            Reply::ChangeFrom { from, args } => encode_addr_args(out, b'e', from, args.as_deref()),
            Reply::ReplaceBody(b) => encode_frame(out, b'b', &[b]),
            Reply::Quarantine(q) => encode_frame(out, b'q', &[q, b"\0"]),
            Reply::SetSymbolList(l) => {
                encode_frame(out, b'l', &[&l.index.to_be_bytes(), &l.macros, b"\0"])
            }
            Reply::Unrecognized { code, payload } => encode_frame(out, *code, &[payload]),
            other => encode_empty(out, other.code()),
        }
    }
}

/// Appends an `h` packet.
pub fn encode_add_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    encode_frame(out, b'h', &[name, b"\0", value, b"\0"]);
}

/// Appends an `i` or `m` packet.
pub fn encode_indexed_header(out: &mut Vec<u8>, code: u8, index: u32, name: &[u8], value: &[u8]) {
    encode_frame(
        out,
        code,
        &[&index.to_be_bytes(), name, b"\0", value, b"\0"],
    );
}

/// Appends a `2` or `e` packet: the address and, only when given, one string of
/// space-separated arguments.
pub fn encode_addr_args(out: &mut Vec<u8>, code: u8, addr: &[u8], args: Option<&[u8]>) {
    match args {
        Some(a) => encode_frame(out, code, &[addr, b"\0", a, b"\0"]),
        None => encode_frame(out, code, &[addr, b"\0"]),
    }
}
