//! What a handler decides at a stage.

use crate::error::ReplyError;
use crate::smtp_reply::SmtpReply;

/// A handler's decision for the current stage.
///
/// ```
/// use milter_core::Status;
/// let s = Status::reply(550, Some("5.7.1"), "no thanks").unwrap();
/// assert!(s.is_final());
/// assert!(!Status::Continue.is_final());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Status {
    /// Go on with the next stage (at end of message: accept for this milter).
    #[default]
    Continue,
    /// Accept: no more callbacks for this message (at connect/HELO: for the whole
    /// session).
    Accept,
    /// Reject with the MTA's default 5xx text (at RCPT: this recipient only).
    Reject,
    /// Fail temporarily with the MTA's default 4xx text (at RCPT: this recipient
    /// only).
    Tempfail,
    /// Accept the message and then silently drop it (message stages only).
    Discard,
    /// Skip the rest of the body and go to end of message (body stage only).
    Skip,
    /// Reject (5xx) or fail temporarily (4xx) with this exact SMTP reply.
    Reply(SmtpReply),
}

impl Status {
    /// A reject or tempfail with a custom reply, validated.
    pub fn reply(code: u16, enhanced: Option<&str>, text: &str) -> Result<Status, ReplyError> {
        SmtpReply::new(code, enhanced, text).map(Status::Reply)
    }

    /// Whether this ends the message (or session) for the milter: everything but
    /// continue and skip.
    pub fn is_final(&self) -> bool {
        !matches!(self, Status::Continue | Status::Skip)
    }

    /// A short name for logs: `continue`, `reject`, `reply 550`, ...
    pub fn name(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Status::Continue => "continue".into(),
            Status::Accept => "accept".into(),
            Status::Reject => "reject".into(),
            Status::Tempfail => "tempfail".into(),
            Status::Discard => "discard".into(),
            Status::Skip => "skip".into(),
            Status::Reply(r) => format!("reply {}", r).into(),
        }
    }
}

impl From<SmtpReply> for Status {
    fn from(r: SmtpReply) -> Self {
        Status::Reply(r)
    }
}
