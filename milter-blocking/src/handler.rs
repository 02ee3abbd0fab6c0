//! The handler trait users implement (usually through `#[derive(Milter)]`).

use crate::context::{Context, EomContext};
use milter_core::{ConnectAddr, EnvelopeAddr, Header, OptNeg, Spec, Status};
use std::fmt;

/// The error a handler may return. Any error type converts into it with `?`.
///
/// The server answers the stage with the configured failure status (tempfail by
/// default), logs the error and closes the connection.
pub struct HandlerError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl HandlerError {
    /// An error with a message.
    pub fn msg(message: impl Into<String>) -> Self {
        HandlerError(message.into().into())
    }

    /// The underlying error.
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl<E> From<E> for HandlerError
where
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    fn from(e: E) -> Self {
        HandlerError(e.into())
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// What a stage handler returns.
pub type HandlerResult<T = Status> = Result<T, HandlerError>;

/// A milter: one value per connection, one method per stage.
///
/// Most users do not implement this by hand: they write inherent methods named
/// after the stages and put `#[derive(Milter)]` on the type, which works out
/// [`Milter::SPEC`] (which stages to ask for, which get no reply, which actions)
/// from the methods that exist. A hand-written implementation gets conservative
/// defaults: every stage is asked for and answered with continue, and no action is
/// requested.
///
/// Call order for one connection: [`negotiate`](Milter::negotiate) once, then per
/// session [`connect`](Milter::connect), [`helo`](Milter::helo) (any number of
/// times), per message [`mail`](Milter::mail) … [`eom`](Milter::eom) or
/// [`abort`](Milter::abort), and [`close`](Milter::close) exactly once per session.
/// [`reset_message`](Milter::reset_message) runs before every new message and
/// after every message ends (end of message, abort, or a final decision).
///
/// One exception to "close exactly once": after a handler returned an error or
/// panicked (or negotiation failed), the connection answers the failure status
/// and the value is dropped without further calls, since its state may be
/// inconsistent. Release resources in `Drop`, not only in `close`.
///
/// ```
/// use milter_blocking::{Context, EnvelopeAddr, HandlerResult, Milter, Spec, Stages, Status};
///
/// #[derive(Default)]
/// struct NoNullSender;
///
/// impl Milter for NoNullSender {
///     const SPEC: Spec = Spec { handled: Stages::MAIL, ..Spec::NONE };
///
///     fn mail(&mut self, _ctx: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
///         if from.bare().is_empty() {
///             return Ok(Status::reply(550, Some("5.7.1"), "no bounces here")?);
///         }
///         Ok(Status::Continue)
///     }
/// }
/// ```
#[allow(unused_variables)]
pub trait Milter: Send {
    /// What to negotiate: handled stages, no-reply stages, actions, options,
    /// macros. Computed by `#[derive(Milter)]`.
    const SPEC: Spec = Spec::ALL_STAGES;

    /// Called with the MTA's offer before the negotiation reply is computed; may
    /// adjust `spec` (drop an action, request macros). An error closes the
    /// connection.
    fn negotiate(&mut self, offer: &OptNeg, spec: &mut Spec) -> HandlerResult<()> {
        Ok(())
    }

    /// Connection information: the client's host name and address.
    fn connect(
        &mut self,
        ctx: &mut Context<'_>,
        hostname: &[u8],
        addr: ConnectAddr<'_>,
    ) -> HandlerResult {
        Ok(Status::Continue)
    }

    /// The HELO/EHLO argument.
    fn helo(&mut self, ctx: &mut Context<'_>, name: &[u8]) -> HandlerResult {
        Ok(Status::Continue)
    }

    /// The envelope sender and its ESMTP arguments.
    fn mail(&mut self, ctx: &mut Context<'_>, sender: &EnvelopeAddr<'_>) -> HandlerResult {
        Ok(Status::Continue)
    }

    /// One envelope recipient and its ESMTP arguments.
    fn rcpt(&mut self, ctx: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> HandlerResult {
        Ok(Status::Continue)
    }

    /// DATA.
    fn data(&mut self, ctx: &mut Context<'_>) -> HandlerResult {
        Ok(Status::Continue)
    }

    /// One header.
    fn header(&mut self, ctx: &mut Context<'_>, header: &Header<'_>) -> HandlerResult {
        Ok(Status::Continue)
    }

    /// End of headers.
    fn eoh(&mut self, ctx: &mut Context<'_>) -> HandlerResult {
        Ok(Status::Continue)
    }

    /// One body chunk (at most 65535 bytes; CRLF line ends; a chunk boundary may
    /// split a line).
    fn body(&mut self, ctx: &mut Context<'_>, chunk: &[u8]) -> HandlerResult {
        Ok(Status::Continue)
    }

    /// End of message: the only place to modify the message.
    fn eom(&mut self, ctx: &mut EomContext<'_>) -> HandlerResult {
        Ok(Status::Continue)
    }

    /// The message in progress was abandoned.
    fn abort(&mut self, ctx: &mut Context<'_>) -> HandlerResult<()> {
        Ok(())
    }

    /// The session is over (called exactly once per session).
    fn close(&mut self, ctx: &mut Context<'_>) -> HandlerResult<()> {
        Ok(())
    }

    /// An SMTP command the MTA does not know (the whole line).
    fn unknown(&mut self, ctx: &mut Context<'_>, command: &[u8]) -> HandlerResult {
        Ok(Status::Continue)
    }

    /// Resets per-message state. `#[derive(Milter)]` resets the fields marked
    /// `#[milter(per_message)]` to their `Default`.
    fn reset_message(&mut self) {}
}
