//! A small test milter for the recording and replay tests: it continues at
//! connect, MAIL, RCPT and each header, and at end of message adds `X-Tag: TAG`,
//! or with the tag `reject` rejects the message instead. Two taggers with different
//! tags are "the same milter, changed".

use milter_blocking::{
    ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status,
};

/// See the module documentation.
#[derive(Milter, Default)]
#[milter(actions(add_header))]
pub struct Tagger {
    /// The header value, or `reject`.
    pub tag: &'static str,
}

#[milter_blocking::handlers]
impl Milter for Tagger {
    fn connect(&mut self, _: &mut Context<'_>, _: &[u8], _: ConnectAddr<'_>) -> Status {
        Status::Continue
    }

    fn mail(&mut self, _: &mut Context<'_>, _: &EnvelopeAddr<'_>) -> Status {
        Status::Continue
    }

    fn rcpt(&mut self, _: &mut Context<'_>, _: &EnvelopeAddr<'_>) -> Status {
        Status::Continue
    }

    fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status {
        Status::Continue
    }

    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        if self.tag == "reject" {
            return Ok(Status::Reject);
        }
        ctx.add_header("X-Tag", self.tag)?;
        Ok(Status::Continue)
    }
}

/// A [`Tagger`] changed to look at nothing before end of message: it negotiates
/// connect, MAIL, RCPT and the headers away.
#[derive(Milter, Default)]
#[milter(actions(add_header))]
pub struct EomOnlyTagger;

#[milter_blocking::handlers]
impl Milter for EomOnlyTagger {
    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        ctx.add_header("X-Tag", "one")?;
        Ok(Status::Continue)
    }
}
