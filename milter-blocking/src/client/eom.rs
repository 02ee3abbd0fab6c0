//! The end-of-message result: the decision, the modifications in order, questions
//! about them, and applying them to a message as an MTA would.

use super::message::{postfix_header_cut, to_crlf, Address, Envelope, HeaderField, Message};
use milter_core::client::Decision;
use milter_core::Modification;
use std::borrow::Cow;

/// What the milter answered to end of message.
///
/// ```
/// use milter_blocking::client::{Decision, EomResult, Modification};
/// let eom = EomResult {
///     decision: Decision::Continue,
///     modifications: vec![
///         Modification::AddHeader { name: b"X-Spam".to_vec(), value: b"no".to_vec() },
///         Modification::ChangeHeader { index: 1, name: b"Subject".to_vec(), value: b"[ok] hi".to_vec() },
///         Modification::AddRcpt(b"<archive@example.com>".to_vec()),
///         Modification::DeleteRcpt(b"<sales@example.com>".to_vec()),
///         Modification::Quarantine(b"review".to_vec()),
///     ],
///     progress: 0,
///     header_leading_space: false,
/// };
/// assert_eq!(eom.added_header("X-Spam"), Some(&b"no"[..]));
/// assert_eq!(eom.header_changes("Subject"), [(1, &b"[ok] hi"[..])]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EomResult {
    /// The final decision.
    pub decision: Decision,
    /// The modifications, in the order received. Consecutive replacement-body
    /// packets are merged into one [`Modification::ReplaceBody`].
    pub modifications: Vec<Modification>,
    /// How many progress packets (`p`) came before the decision.
    pub progress: usize,
    /// Whether `HDR_LEADSPC` was negotiated: header values in the modifications are
    /// then verbatim (leading space included), else the MTA adds one space.
    pub header_leading_space: bool,
}

/// Whose rules [`EomResult::apply_with`] follows where the MTAs differ.
///
/// ```
/// use milter_blocking::client::{ApplyRules, Decision, EomResult, Envelope, Message, Modification};
/// let message = Message::parse(b"X-A: 1\r\nX-A: 2\r\nX-A: 3\r\n\r\n");
/// // Delete the first X-A, then change "the second" one.
/// let eom = EomResult {
///     decision: Decision::Continue,
///     modifications: vec![
///         Modification::ChangeHeader { index: 1, name: b"X-A".to_vec(), value: vec![] },
///         Modification::ChangeHeader { index: 2, name: b"X-A".to_vec(), value: b"new".to_vec() },
///     ],
///     progress: 0,
///     header_leading_space: false,
/// };
/// let envelope = Envelope::new("a@example.org");
/// let postfix = eom.apply_with(ApplyRules::Postfix, &message, &envelope).message;
/// let sendmail = eom.apply_with(ApplyRules::Sendmail, &message, &envelope).message;
/// // Postfix renumbers after the delete: "the second" is now the third.
/// assert_eq!(postfix.header_all("X-A"), [&b"2"[..], &b"new"[..]]);
/// // Sendmail still counts the deleted one: "the second" is the second.
/// assert_eq!(sendmail.header_all("X-A"), [&b"new"[..], &b"3"[..]]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ApplyRules {
    /// Postfix (the default): a deleted header no longer counts for later change
    /// or insert indexes (the headers are renumbered); a delete-recipient removes
    /// every recipient whose address matches after removing angle brackets.
    #[default]
    Postfix,
    /// Sendmail: a deleted header still counts for later indexes; a
    /// delete-recipient removes only recipients whose token matches exactly.
    Sendmail,
}

/// A message after the modifications: what the MTA would queue.
///
/// ```
/// use milter_blocking::client::{Decision, EomResult, Modification};
/// let eom = EomResult {
///     decision: Decision::Continue,
///     modifications: vec![
///         Modification::AddHeader { name: b"X-Spam".to_vec(), value: b"no".to_vec() },
///         Modification::ChangeHeader { index: 1, name: b"Subject".to_vec(), value: b"[ok] hi".to_vec() },
///         Modification::AddRcpt(b"<archive@example.com>".to_vec()),
///         Modification::DeleteRcpt(b"<sales@example.com>".to_vec()),
///         Modification::Quarantine(b"review".to_vec()),
///     ],
///     progress: 0,
///     header_leading_space: false,
/// };
/// use milter_blocking::client::{Envelope, Message};
/// let applied = eom.apply(&Message::parse(b"Subject: hi\r\n\r\nbody\r\n"), &Envelope::new("a@example.org").rcpt("sales@example.com"));
/// assert_eq!(applied.message.header("X-Spam"), Some(&b"no"[..]));
/// assert_eq!(applied.envelope.recipients[0].address, "<archive@example.com>");
/// assert_eq!(applied.quarantine.as_deref(), Some(&b"review"[..]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The message with headers changed and the body replaced.
    pub message: Message,
    /// The envelope with the sender changed and recipients added or removed.
    pub envelope: Envelope,
    /// The quarantine reason (Postfix: hold queue), if the milter asked for it.
    pub quarantine: Option<Vec<u8>>,
}

impl EomResult {
    /// The value of the first header called `name` (any case) that was added or
    /// inserted.
    ///
    /// ```
    /// use milter_blocking::client::{Decision, EomResult, Modification};
    /// let eom = EomResult {
    ///     decision: Decision::Continue,
    ///     modifications: vec![
    ///         Modification::AddHeader { name: b"X-Spam".to_vec(), value: b"no".to_vec() },
    ///         Modification::ChangeHeader { index: 1, name: b"Subject".to_vec(), value: b"[ok] hi".to_vec() },
    ///         Modification::AddRcpt(b"<archive@example.com>".to_vec()),
    ///         Modification::DeleteRcpt(b"<sales@example.com>".to_vec()),
    ///         Modification::Quarantine(b"review".to_vec()),
    ///     ],
    ///     progress: 0,
    ///     header_leading_space: false,
    /// };
    /// assert_eq!(eom.added_header("x-spam"), Some(&b"no"[..])); // any case
    /// assert_eq!(eom.added_header("X-Other"), None);
    /// ```
    pub fn added_header(&self, name: &str) -> Option<&[u8]> {
        self.modifications.iter().find_map(|m| match m {
            Modification::AddHeader { name: n, value }
            | Modification::InsertHeader { name: n, value, .. }
                if n.eq_ignore_ascii_case(name.as_bytes()) =>
            {
                Some(value.as_slice())
            }
            _ => None,
        })
    }

    /// Whether a header with this name (any case) and exactly this value was added
    /// or inserted.
    ///
    /// ```
    /// use milter_blocking::client::{Decision, EomResult};
    /// use milter_blocking::milter_core::Modification;
    /// let r = EomResult {
    ///     decision: Decision::Continue,
    ///     modifications: vec![Modification::AddHeader { name: b"X-Spam".to_vec(), value: b"no".to_vec() }],
    ///     progress: 0,
    ///     header_leading_space: false,
    /// };
    /// assert!(r.has_added_header("x-spam", "no"));
    /// assert!(!r.has_added_header("x-spam", "yes"));
    /// ```
    pub fn has_added_header(&self, name: &str, value: impl AsRef<[u8]>) -> bool {
        self.modifications.iter().any(|m| match m {
            Modification::AddHeader { name: n, value: v }
            | Modification::InsertHeader {
                name: n, value: v, ..
            } => n.eq_ignore_ascii_case(name.as_bytes()) && v == value.as_ref(),
            _ => false,
        })
    }

    /// The change-header requests for `name` (any case), as (index, new value); an
    /// empty value is a delete.
    ///
    /// ```
    /// use milter_blocking::client::{Decision, EomResult, Modification};
    /// let eom = EomResult {
    ///     decision: Decision::Continue,
    ///     modifications: vec![
    ///         Modification::AddHeader { name: b"X-Spam".to_vec(), value: b"no".to_vec() },
    ///         Modification::ChangeHeader { index: 1, name: b"Subject".to_vec(), value: b"[ok] hi".to_vec() },
    ///         Modification::AddRcpt(b"<archive@example.com>".to_vec()),
    ///         Modification::DeleteRcpt(b"<sales@example.com>".to_vec()),
    ///         Modification::Quarantine(b"review".to_vec()),
    ///     ],
    ///     progress: 0,
    ///     header_leading_space: false,
    /// };
    /// assert_eq!(eom.header_changes("subject"), [(1, &b"[ok] hi"[..])]);
    /// ```
    pub fn header_changes(&self, name: &str) -> Vec<(u32, &[u8])> {
        self.modifications
            .iter()
            .filter_map(|m| match m {
                Modification::ChangeHeader {
                    index,
                    name: n,
                    value,
                } if n.eq_ignore_ascii_case(name.as_bytes()) => Some((*index, value.as_slice())),
                _ => None,
            })
            .collect()
    }

    /// The recipients added, with or without ESMTP arguments.
    ///
    /// ```
    /// use milter_blocking::client::{Decision, EomResult, Modification};
    /// let eom = EomResult {
    ///     decision: Decision::Continue,
    ///     modifications: vec![
    ///         Modification::AddHeader { name: b"X-Spam".to_vec(), value: b"no".to_vec() },
    ///         Modification::ChangeHeader { index: 1, name: b"Subject".to_vec(), value: b"[ok] hi".to_vec() },
    ///         Modification::AddRcpt(b"<archive@example.com>".to_vec()),
    ///         Modification::DeleteRcpt(b"<sales@example.com>".to_vec()),
    ///         Modification::Quarantine(b"review".to_vec()),
    ///     ],
    ///     progress: 0,
    ///     header_leading_space: false,
    /// };
    /// assert_eq!(eom.added_rcpts(), [&b"<archive@example.com>"[..]]);
    /// ```
    pub fn added_rcpts(&self) -> Vec<&[u8]> {
        self.modifications
            .iter()
            .filter_map(|m| match m {
                Modification::AddRcpt(r) | Modification::AddRcptWithArgs { rcpt: r, .. } => {
                    Some(r.as_slice())
                }
                _ => None,
            })
            .collect()
    }

    /// The recipients deleted.
    ///
    /// ```
    /// use milter_blocking::client::{Decision, EomResult, Modification};
    /// let eom = EomResult {
    ///     decision: Decision::Continue,
    ///     modifications: vec![
    ///         Modification::AddHeader { name: b"X-Spam".to_vec(), value: b"no".to_vec() },
    ///         Modification::ChangeHeader { index: 1, name: b"Subject".to_vec(), value: b"[ok] hi".to_vec() },
    ///         Modification::AddRcpt(b"<archive@example.com>".to_vec()),
    ///         Modification::DeleteRcpt(b"<sales@example.com>".to_vec()),
    ///         Modification::Quarantine(b"review".to_vec()),
    ///     ],
    ///     progress: 0,
    ///     header_leading_space: false,
    /// };
    /// assert_eq!(eom.deleted_rcpts(), [&b"<sales@example.com>"[..]]);
    /// ```
    pub fn deleted_rcpts(&self) -> Vec<&[u8]> {
        self.modifications
            .iter()
            .filter_map(|m| match m {
                Modification::DeleteRcpt(r) => Some(r.as_slice()),
                _ => None,
            })
            .collect()
    }

    /// The new envelope sender, if it was changed (the last change wins).
    ///
    /// ```
    /// use milter_blocking::client::{Decision, EomResult, Modification};
    /// let eom = EomResult {
    ///     decision: Decision::Continue,
    ///     modifications: vec![
    ///         Modification::AddHeader { name: b"X-Spam".to_vec(), value: b"no".to_vec() },
    ///         Modification::ChangeHeader { index: 1, name: b"Subject".to_vec(), value: b"[ok] hi".to_vec() },
    ///         Modification::AddRcpt(b"<archive@example.com>".to_vec()),
    ///         Modification::DeleteRcpt(b"<sales@example.com>".to_vec()),
    ///         Modification::Quarantine(b"review".to_vec()),
    ///     ],
    ///     progress: 0,
    ///     header_leading_space: false,
    /// };
    /// assert_eq!(eom.new_sender(), None); // the sender was not changed
    /// ```
    pub fn new_sender(&self) -> Option<&[u8]> {
        self.modifications.iter().rev().find_map(|m| match m {
            Modification::ChangeFrom { from, .. } => Some(from.as_slice()),
            _ => None,
        })
    }

    /// The replacement body as the milter sent it (all replacement-body packets
    /// concatenated), if it replaced the body.
    ///
    /// ```
    /// use milter_blocking::client::{Decision, EomResult, Modification};
    /// let eom = EomResult {
    ///     decision: Decision::Continue,
    ///     modifications: vec![
    ///         Modification::ReplaceBody(b"Hello, ".to_vec()),
    ///         Modification::ReplaceBody(b"world.\r\n".to_vec()),
    ///     ],
    ///     progress: 0,
    ///     header_leading_space: false,
    /// };
    /// assert_eq!(eom.new_body().as_deref(), Some(&b"Hello, world.\r\n"[..]));
    /// ```
    pub fn new_body(&self) -> Option<Cow<'_, [u8]>> {
        let mut parts = self.modifications.iter().filter_map(|m| match m {
            Modification::ReplaceBody(b) => Some(b.as_slice()),
            _ => None,
        });
        let first = parts.next()?;
        let mut rest = parts.peekable();
        if rest.peek().is_none() {
            return Some(Cow::Borrowed(first));
        }
        let mut all = first.to_vec();
        for p in rest {
            all.extend_from_slice(p);
        }
        Some(Cow::Owned(all))
    }

    /// The quarantine reason, if the milter asked for quarantine.
    ///
    /// ```
    /// use milter_blocking::client::{Decision, EomResult, Modification};
    /// let eom = EomResult {
    ///     decision: Decision::Continue,
    ///     modifications: vec![
    ///         Modification::AddHeader { name: b"X-Spam".to_vec(), value: b"no".to_vec() },
    ///         Modification::ChangeHeader { index: 1, name: b"Subject".to_vec(), value: b"[ok] hi".to_vec() },
    ///         Modification::AddRcpt(b"<archive@example.com>".to_vec()),
    ///         Modification::DeleteRcpt(b"<sales@example.com>".to_vec()),
    ///         Modification::Quarantine(b"review".to_vec()),
    ///     ],
    ///     progress: 0,
    ///     header_leading_space: false,
    /// };
    /// assert_eq!(eom.quarantine(), Some(&b"review"[..]));
    /// ```
    pub fn quarantine(&self) -> Option<&[u8]> {
        self.modifications.iter().rev().find_map(|m| match m {
            Modification::Quarantine(r) => Some(r.as_slice()),
            _ => None,
        })
    }

    /// Applies the modifications to `message` and `envelope` with Postfix's rules.
    /// See [`EomResult::apply_with`].
    ///
    /// ```
    /// use milter_blocking::client::{Decision, EomResult, Modification};
    /// let eom = EomResult {
    ///     decision: Decision::Continue,
    ///     modifications: vec![
    ///         Modification::AddHeader { name: b"X-Spam".to_vec(), value: b"no".to_vec() },
    ///         Modification::ChangeHeader { index: 1, name: b"Subject".to_vec(), value: b"[ok] hi".to_vec() },
    ///         Modification::AddRcpt(b"<archive@example.com>".to_vec()),
    ///         Modification::DeleteRcpt(b"<sales@example.com>".to_vec()),
    ///         Modification::Quarantine(b"review".to_vec()),
    ///     ],
    ///     progress: 0,
    ///     header_leading_space: false,
    /// };
    /// use milter_blocking::client::{Envelope, Message};
    /// let message = Message::parse(b"Subject: hi\r\n\r\nbody\r\n");
    /// let envelope = Envelope::new("a@example.org").rcpt("sales@example.com");
    /// let queued = eom.apply(&message, &envelope);
    /// assert_eq!(queued.message.header("Subject"), Some(&b"[ok] hi"[..]));
    /// assert_eq!(queued.envelope.recipients.len(), 1); // sales@ out, archive@ in
    /// ```
    pub fn apply(&self, message: &Message, envelope: &Envelope) -> Applied {
        self.apply_with(ApplyRules::Postfix, message, envelope)
    }

    /// Applies the modifications in order, as an MTA would before queueing.
    ///
    /// - With Postfix's rules the message's headers are first cut to 60,000 bytes
    ///   ([`Message::as_postfix_stores_it`]).
    /// - Add header: appended after the last header.
    /// - Insert header at `n`: 0 puts it at the top; `n` puts it after the `n`-th
    ///   header; beyond the end it is appended. Postfix counts its own
    ///   `Received:` header, which it adds on top and never shows the milter, as
    ///   the first header (but not for change indexes): with [`ApplyRules::Postfix`]
    ///   an insert at 1 lands above the message's first header (below any insert
    ///   at 0), at `n` after the message's `n - 1`-th header. The `Received:`
    ///   header itself is not in the result.
    /// - Change header `name`/`n` (1-based; 0 acts as 1; names compared
    ///   case-insensitively): replaces the value of that occurrence; an empty value
    ///   deletes it; an occurrence that does not exist is appended (non-empty value)
    ///   or nothing happens (empty value). Whether a deleted header still counts
    ///   depends on `rules` (Postfix renumbers, Sendmail does not).
    /// - Values get one space after the colon unless `HDR_LEADSPC` was negotiated;
    ///   multi-line values are written with CRLF for each LF.
    /// - Add recipient (with or without arguments): appended; arguments are split at
    ///   spaces. Delete recipient: see [`ApplyRules`].
    /// - Change sender: replaces the sender and its arguments.
    /// - Replace body: the concatenated packets, split into lines at LF (a CR before
    ///   the LF dropped), every line ended by CRLF, an unterminated last line kept,
    ///   as Postfix stores it.
    /// - Quarantine: reported in [`Applied::quarantine`].
    ///
    /// ```
    /// use milter_blocking::client::{Decision, EomResult, Modification};
    /// let eom = EomResult {
    ///     decision: Decision::Continue,
    ///     modifications: vec![
    ///         Modification::AddHeader { name: b"X-Spam".to_vec(), value: b"no".to_vec() },
    ///         Modification::ChangeHeader { index: 1, name: b"Subject".to_vec(), value: b"[ok] hi".to_vec() },
    ///         Modification::AddRcpt(b"<archive@example.com>".to_vec()),
    ///         Modification::DeleteRcpt(b"<sales@example.com>".to_vec()),
    ///         Modification::Quarantine(b"review".to_vec()),
    ///     ],
    ///     progress: 0,
    ///     header_leading_space: false,
    /// };
    /// use milter_blocking::client::{ApplyRules, Envelope, Message};
    /// let message = Message::parse(b"Subject: hi\r\n\r\nbody\r\n");
    /// let envelope = Envelope::new("a@example.org").rcpt("<sales@example.com>");
    /// let queued = eom.apply_with(ApplyRules::Sendmail, &message, &envelope);
    /// assert!(queued.message.to_bytes().starts_with(b"Subject: [ok] hi\r\n"));
    /// ```
    pub fn apply_with(&self, rules: ApplyRules, message: &Message, envelope: &Envelope) -> Applied {
        // Deleted headers stay as tombstones so Sendmail's counting can see them;
        // Postfix's own Received: header counts for inserts only.
        // Postfix stores (and queues) headers cut to 60,000 bytes.
        let mut headers: Vec<(HeaderField, Slot)> = message
            .headers
            .iter()
            .map(|h| match rules {
                ApplyRules::Postfix => postfix_header_cut(h).into_owned(),
                ApplyRules::Sendmail => h.clone(),
            })
            .map(|h| (h, Slot::Live))
            .collect();
        if rules == ApplyRules::Postfix {
            headers.insert(0, (HeaderField::new("Received", ""), Slot::MtaOwn));
        }
        let mut env = envelope.clone();
        let mut body: Option<Vec<u8>> = None;
        let mut quarantine = None;
        let raw = |value: &[u8]| -> Vec<u8> {
            if self.header_leading_space {
                value.to_vec()
            } else {
                let mut v = Vec::with_capacity(value.len() + 1);
                v.push(b' ');
                v.extend_from_slice(value);
                v
            }
        };
        let deleted_count = rules == ApplyRules::Sendmail;
        for m in &self.modifications {
            match m {
                Modification::AddHeader { name, value } => headers.push((
                    HeaderField {
                        name: name.clone(),
                        raw_value: raw(value),
                    },
                    Slot::Live,
                )),
                Modification::InsertHeader { index, name, value } => {
                    let field = HeaderField {
                        name: name.clone(),
                        raw_value: raw(value),
                    };
                    let mut seen = 0u64;
                    let mut at = headers.len();
                    for (i, (_, slot)) in headers.iter().enumerate() {
                        if seen == u64::from(*index) {
                            at = i;
                            break;
                        }
                        if *slot != Slot::Deleted || deleted_count {
                            seen += 1;
                        }
                    }
                    headers.insert(at, (field, Slot::Live));
                }
                Modification::ChangeHeader { index, name, value } => {
                    let wanted = u64::from((*index).max(1));
                    let mut seen = 0u64;
                    let found = headers.iter().position(|(h, slot)| {
                        let counts = match slot {
                            Slot::Live => true,
                            Slot::Deleted => deleted_count,
                            Slot::MtaOwn => false,
                        };
                        if counts && h.is(name) {
                            seen += 1;
                            seen == wanted
                        } else {
                            false
                        }
                    });
                    match (found, value.is_empty()) {
                        (Some(i), true) => headers[i].1 = Slot::Deleted,
                        (Some(i), false) => {
                            headers[i].0.raw_value = raw(value);
                            headers[i].1 = Slot::Live;
                        }
                        (None, true) => {}
                        (None, false) => headers.push((
                            HeaderField {
                                name: name.clone(),
                                raw_value: raw(value),
                            },
                            Slot::Live,
                        )),
                    }
                }
                Modification::AddRcpt(r) => env
                    .recipients
                    .push(Address::verbatim(&String::from_utf8_lossy(r))),
                Modification::AddRcptWithArgs { rcpt, args } => {
                    let mut a = Address::verbatim(&String::from_utf8_lossy(rcpt));
                    a.args = split_args(args.as_deref());
                    env.recipients.push(a);
                }
                Modification::DeleteRcpt(r) => {
                    let r = String::from_utf8_lossy(r);
                    match rules {
                        ApplyRules::Postfix => {
                            let target = Address::verbatim(&r);
                            env.recipients.retain(|a| a.bare() != target.bare());
                        }
                        ApplyRules::Sendmail => env.recipients.retain(|a| a.address != r),
                    }
                }
                Modification::ChangeFrom { from, args } => {
                    env.sender = Address::verbatim(&String::from_utf8_lossy(from));
                    env.sender.args = split_args(args.as_deref());
                }
                Modification::ReplaceBody(b) => body.get_or_insert_with(Vec::new).extend(b),
                Modification::Quarantine(q) => quarantine = Some(q.clone()),
                _ => {}
            }
        }
        let body = match body {
            Some(b) => normalize_body(&b),
            None => message.body.clone(),
        };
        Applied {
            message: Message {
                headers: headers
                    .into_iter()
                    .filter(|(_, slot)| *slot == Slot::Live)
                    .map(|(h, _)| h)
                    .collect(),
                body,
            },
            envelope: env,
            quarantine,
        }
    }
}

/// A header's place in the list [`EomResult::apply_with`] edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// In the message.
    Live,
    /// Deleted by the milter (still counted by Sendmail).
    Deleted,
    /// The MTA's own `Received:` (Postfix), counted for inserts only.
    MtaOwn,
}

fn split_args(args: Option<&[u8]>) -> Vec<String> {
    args.map(|a| {
        String::from_utf8_lossy(a)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

/// Postfix's reading of a replacement body: lines split at LF, a CR before the LF
/// dropped, each line stored and later written with CRLF.
fn normalize_body(b: &[u8]) -> Vec<u8> {
    let mut out = to_crlf(b);
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(mods: Vec<Modification>) -> EomResult {
        EomResult {
            decision: Decision::Continue,
            modifications: mods,
            progress: 0,
            header_leading_space: false,
        }
    }

    fn msg() -> Message {
        Message::parse(b"A: 1\r\nB: x\r\nA: 2\r\nA: 3\r\n\r\nbody\r\n")
    }

    fn names(m: &Message) -> Vec<String> {
        m.headers.iter().map(|h| h.to_string()).collect()
    }

    #[test]
    fn deletes_renumber_in_postfix_but_not_in_sendmail() {
        let r = result(vec![
            Modification::ChangeHeader {
                index: 1,
                name: b"a".to_vec(),
                value: vec![],
            },
            Modification::ChangeHeader {
                index: 2,
                name: b"A".to_vec(),
                value: b"new".to_vec(),
            },
        ]);
        let env = Envelope::new("s@x");
        let p = r.apply(&msg(), &env).message;
        assert_eq!(names(&p), ["B: x", "A: 2", "A: new"]);
        let s = r.apply_with(ApplyRules::Sendmail, &msg(), &env).message;
        assert_eq!(names(&s), ["B: x", "A: new", "A: 3"]);
    }

    #[test]
    fn insert_positions_and_change_beyond_the_end() {
        let r = result(vec![
            Modification::InsertHeader {
                index: 0,
                name: b"Top".to_vec(),
                value: b"t".to_vec(),
            },
            Modification::InsertHeader {
                index: 2,
                name: b"Mid".to_vec(),
                value: b"m".to_vec(),
            },
            Modification::InsertHeader {
                index: 99,
                name: b"End".to_vec(),
                value: b"e".to_vec(),
            },
            Modification::ChangeHeader {
                index: 7,
                name: b"B".to_vec(),
                value: b"appended".to_vec(),
            },
            Modification::ChangeHeader {
                index: 0,
                name: b"b".to_vec(),
                value: b"first".to_vec(),
            },
        ]);
        let out = r.apply(&msg(), &Envelope::new("s@x")).message;
        assert_eq!(
            names(&out),
            [
                "Top: t",
                "Mid: m",
                "A: 1",
                "B: first",
                "A: 2",
                "A: 3",
                "End: e",
                "B: appended"
            ]
        );
    }

    #[test]
    fn postfix_counts_its_own_received_for_inserts_only() {
        let insert = |index, name: &str| Modification::InsertHeader {
            index,
            name: name.as_bytes().to_vec(),
            value: b"v".to_vec(),
        };
        let m = Message::parse(b"From: a@b\r\nTo: c@d\r\nReceived: x\r\n\r\nbody\r\n");
        let r = result(vec![
            insert(1, "One"),
            insert(0, "Zero"),
            Modification::ChangeHeader {
                index: 1,
                name: b"Received".to_vec(),
                value: b"changed".to_vec(),
            },
        ]);
        let env = Envelope::new("s@x");
        // Postfix: [Zero] [its Received] [One] From To Received; the change hits
        // the message's own Received, not Postfix's.
        assert_eq!(
            names(&r.apply(&m, &env).message),
            [
                "Zero: v",
                "One: v",
                "From: a@b",
                "To: c@d",
                "Received: changed"
            ]
        );
        // Sendmail's rules count only the message's headers.
        assert_eq!(
            names(&r.apply_with(ApplyRules::Sendmail, &m, &env).message),
            [
                "Zero: v",
                "From: a@b",
                "One: v",
                "To: c@d",
                "Received: changed"
            ]
        );
    }

    #[test]
    fn envelope_and_body() {
        let env = Envelope::new("s@x").rcpt("keep@x").rcpt("<gone@x>");
        let r = result(vec![
            Modification::AddRcpt(b"<new@x>".to_vec()),
            Modification::AddRcptWithArgs {
                rcpt: b"<args@x>".to_vec(),
                args: Some(b"NOTIFY=NEVER ORCPT=rfc822;a@b".to_vec()),
            },
            Modification::DeleteRcpt(b"gone@x".to_vec()),
            Modification::ChangeFrom {
                from: b"<>".to_vec(),
                args: None,
            },
            Modification::ReplaceBody(b"one\ntwo\r\nthree".to_vec()),
            Modification::Quarantine(b"why".to_vec()),
        ]);
        let a = r.apply(&msg(), &env);
        let rcpts: Vec<String> = a
            .envelope
            .recipients
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(
            rcpts,
            [
                "<keep@x>",
                "<new@x>",
                "<args@x> NOTIFY=NEVER ORCPT=rfc822;a@b"
            ]
        );
        assert_eq!(a.envelope.sender.address, "<>");
        assert_eq!(a.message.body, b"one\r\ntwo\r\nthree\r\n");
        assert_eq!(a.quarantine.as_deref(), Some(&b"why"[..]));
        // Sendmail matches the token exactly: "gone@x" is not "<gone@x>".
        let s = r.apply_with(ApplyRules::Sendmail, &msg(), &env);
        assert_eq!(s.envelope.recipients.len(), 4);
        assert_eq!(r.new_body().as_deref(), Some(&b"one\ntwo\r\nthree"[..]));
    }
}
