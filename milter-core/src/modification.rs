//! Modifications as the MTA side collects them at end of message.

use crate::reply::Reply;

/// One change a milter asked for at end of message, as received by the MTA side.
/// Each replacement-body packet is one [`Modification::ReplaceBody`] here
/// (`milter-blocking`'s client merges consecutive ones).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Modification {
    /// `h`: append a header.
    AddHeader {
        /// Name.
        name: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// `i`: insert a header at a position.
    InsertHeader {
        /// Position (0 = top).
        index: u32,
        /// Name.
        name: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// `m`: change the `index`-th header of that name; an empty value deletes.
    ChangeHeader {
        /// Occurrence, 1-based (0 acts as 1).
        index: u32,
        /// Name.
        name: Vec<u8>,
        /// New value (empty: delete).
        value: Vec<u8>,
    },
    /// `+`: add a recipient.
    AddRcpt(Vec<u8>),
    /// `2`: add a recipient with ESMTP arguments.
    AddRcptWithArgs {
        /// Recipient.
        rcpt: Vec<u8>,
        /// Arguments (one space-separated string), if any.
        args: Option<Vec<u8>>,
    },
    /// `-`: delete a recipient.
    DeleteRcpt(Vec<u8>),
    /// `e`: change the envelope sender.
    ChangeFrom {
        /// New sender.
        from: Vec<u8>,
        /// Arguments, if any.
        args: Option<Vec<u8>>,
    },
    /// `b`: a chunk of the replacement body (one packet).
    ReplaceBody(Vec<u8>),
    /// `q`: quarantine with this reason.
    Quarantine(Vec<u8>),
}

impl Modification {
    /// The modification a reply carries, if it is one.
    pub fn from_reply(reply: Reply) -> Option<Modification> {
        Some(match reply {
            Reply::AddHeader { name, value } => Modification::AddHeader { name, value },
            Reply::InsertHeader { index, name, value } => {
                Modification::InsertHeader { index, name, value }
            }
            Reply::ChangeHeader { index, name, value } => {
                Modification::ChangeHeader { index, name, value }
            }
            Reply::AddRcpt(r) => Modification::AddRcpt(r),
            Reply::AddRcptWithArgs { rcpt, args } => Modification::AddRcptWithArgs { rcpt, args },
            Reply::DeleteRcpt(r) => Modification::DeleteRcpt(r),
            Reply::ChangeFrom { from, args } => Modification::ChangeFrom { from, args },
            Reply::ReplaceBody(b) => Modification::ReplaceBody(b),
            Reply::Quarantine(q) => Modification::Quarantine(q),
            _ => return None,
        })
    }

    /// The action bit this modification needs.
    pub fn action(&self) -> crate::Actions {
        use crate::Actions as A;
        match self {
            Modification::AddHeader { .. } | Modification::InsertHeader { .. } => A::ADD_HEADER,
            Modification::ChangeHeader { .. } => A::CHANGE_HEADER,
            Modification::AddRcpt(_) => A::ADD_RCPT,
            Modification::AddRcptWithArgs { .. } => A::ADD_RCPT_WITH_ARGS,
            Modification::DeleteRcpt(_) => A::DELETE_RCPT,
            Modification::ChangeFrom { .. } => A::CHANGE_FROM,
            Modification::ReplaceBody(_) => A::CHANGE_BODY,
            Modification::Quarantine(_) => A::QUARANTINE,
        }
    }
}
