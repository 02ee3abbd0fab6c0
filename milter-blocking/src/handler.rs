//! The trait users implement with their handlers, and the types those handlers
//! may return.

use crate::context::{Context, EomContext};
use crate::declaration::Declaration;
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

/// The usual return type of a stage handler.
pub type HandlerResult<T = Status> = Result<T, HandlerError>;

mod sealed {
    /// Keeps the set of handler return types closed: the negotiation reads
    /// [`super::StageReturn::NO_REPLY`], and only this crate's types set it right.
    pub trait Sealed {}
    impl Sealed for () {}
    impl Sealed for milter_core::Status {}
    impl<E: Into<super::HandlerError>> Sealed for Result<milter_core::Status, E> {}
    impl<E: Into<super::HandlerError>> Sealed for Result<(), E> {}
}

/// A type a stage handler may return, and what it means for negotiation.
///
/// | return type | the stage is | the handler may |
/// | --- | --- | --- |
/// | [`Status`] | answered | decide anything |
/// | [`HandlerResult`], `Result<Status, E>` | answered | decide anything, or fail |
/// | `()` | negotiated as "no reply" (`NR_*`) | only continue |
/// | `Result<(), E>` | negotiated as "no reply" (`NR_*`) | only continue, or fail |
///
/// `E` is any type with `E: Into<HandlerError>` (every error type). An error
/// answers the stage with the server's failure status and closes the connection.
/// End of message always gets a reply; a handler returning `()` there continues.
///
/// The trait is sealed: these are the only return types.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a return type a milter stage handler may have",
    label = "a stage handler cannot return `{Self}`",
    note = "a stage handler returns `Status`, `HandlerResult` or `Result<Status, E>`, \
            or, when it never replies, `()` or `Result<(), E>`, with `E: Into<HandlerError>`"
)]
pub trait StageReturn: sealed::Sealed {
    /// Whether the handler can only continue: its stage is negotiated as "no
    /// reply" where the MTA offers that.
    const NO_REPLY: bool;
    /// The result the server acts on.
    fn into_result(self) -> HandlerResult;
}

impl StageReturn for () {
    const NO_REPLY: bool = true;
    #[inline]
    fn into_result(self) -> HandlerResult {
        Ok(Status::Continue)
    }
}

impl StageReturn for Status {
    const NO_REPLY: bool = false;
    #[inline]
    fn into_result(self) -> HandlerResult {
        Ok(self)
    }
}

impl<E: Into<HandlerError>> StageReturn for Result<Status, E> {
    const NO_REPLY: bool = false;
    #[inline]
    fn into_result(self) -> HandlerResult {
        self.map_err(Into::into)
    }
}

impl<E: Into<HandlerError>> StageReturn for Result<(), E> {
    const NO_REPLY: bool = true;
    #[inline]
    fn into_result(self) -> HandlerResult {
        self.map(|()| Status::Continue).map_err(Into::into)
    }
}

/// A type a [`Milter::negotiate`], [`Milter::abort`] or [`Milter::close`]
/// handler may return: `()`, [`HandlerResult<()>`](HandlerResult) or
/// `Result<(), E>` with `E: Into<HandlerError>`. Sealed.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a return type a milter `negotiate`, `abort` or `close` handler may have",
    label = "this handler cannot return `{Self}`",
    note = "`negotiate`, `abort` and `close` return `()`, `HandlerResult<()>` \
            or `Result<(), E>` with `E: Into<HandlerError>`"
)]
pub trait UnitReturn: sealed::Sealed {
    /// The result the server acts on.
    fn into_result(self) -> HandlerResult<()>;
}

impl UnitReturn for () {
    #[inline]
    fn into_result(self) -> HandlerResult<()> {
        Ok(())
    }
}

impl<E: Into<HandlerError>> UnitReturn for Result<(), E> {
    #[inline]
    fn into_result(self) -> HandlerResult<()> {
        self.map_err(Into::into)
    }
}

/// A milter: one value per connection, one method per stage.
///
/// Implement it on a type that derives [`Milter`](derive@crate::Milter) (which
/// implements [`Declaration`]: actions, options, macros, per-message state), and
/// put [`#[handlers]`](macro@crate::handlers) on the `impl` block, which tells
/// the negotiation which stages have handlers and which never reply. Write only
/// the handlers you need; the others keep their default (continue) and their
/// stages are negotiated away.
///
/// ```
/// use milter_blocking::{handlers, Context, EnvelopeAddr, HandlerResult, Milter, Status};
///
/// #[derive(Milter, Default)]
/// struct NoNullSender;
///
/// #[handlers]
/// impl Milter for NoNullSender {
///     fn mail(&mut self, _ctx: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
///         if from.bare().is_empty() {
///             return Ok(Status::reply(550, Some("5.7.1"), "no bounces here")?);
///         }
///         Ok(Status::Continue)
///     }
/// }
///
/// use milter_blocking::Stages;
/// assert_eq!(<NoNullSender as Milter>::SPEC.handled, Stages::MAIL);
/// ```
///
/// # Handlers
///
/// | handler | called with | MTA command |
/// | --- | --- | --- |
/// | [`negotiate`](Milter::negotiate) | `&OptNeg, &mut Spec` | option negotiation |
/// | [`connect`](Milter::connect) | `&mut Context<'_>, hostname: &[u8], addr: ConnectAddr<'_>` | connection |
/// | [`helo`](Milter::helo) | `&mut Context<'_>, name: &[u8]` | HELO/EHLO |
/// | [`mail`](Milter::mail) | `&mut Context<'_>, sender: &EnvelopeAddr<'_>` | MAIL FROM |
/// | [`rcpt`](Milter::rcpt) | `&mut Context<'_>, rcpt: &EnvelopeAddr<'_>` | RCPT TO |
/// | [`data`](Milter::data) | `&mut Context<'_>` | DATA |
/// | [`header`](Milter::header) | `&mut Context<'_>, header: &Header<'_>` | one header |
/// | [`eoh`](Milter::eoh) | `&mut Context<'_>` | end of headers |
/// | [`body`](Milter::body) | `&mut Context<'_>, chunk: &[u8]` | one body chunk |
/// | [`eom`](Milter::eom) | `&mut EomContext<'_, Self>` | end of message |
/// | [`abort`](Milter::abort) | `&mut Context<'_>` | message abandoned |
/// | [`close`](Milter::close) | `&mut Context<'_>` | session over |
/// | [`unknown`](Milter::unknown) | `&mut Context<'_>, command: &[u8]` | unknown SMTP command |
///
/// Stage handlers return a [`StageReturn`] type; write the concrete type in
/// your `impl` (`-> HandlerResult`, `-> Status`, `-> ()` or nothing), since it
/// decides the negotiation: `()` and `Result<(), E>` make the stage "no reply".
/// `negotiate`, `abort` and `close` return a [`UnitReturn`] type.
///
/// # Call order
///
/// [`negotiate`](Milter::negotiate) once, then per session
/// [`connect`](Milter::connect), [`helo`](Milter::helo) (any number of times),
/// per message [`mail`](Milter::mail) … [`eom`](Milter::eom) or
/// [`abort`](Milter::abort), and [`close`](Milter::close) exactly once per
/// session. [`Declaration::reset_message`] runs before every new message and
/// after every message ends (end of message, abort, or a final decision).
///
/// One exception to "close exactly once": after a handler returned an error or
/// panicked (or negotiation failed), the connection answers the failure status
/// and the value is dropped without further calls, since its state may be
/// inconsistent. Release resources in `Drop`, not only in `close`.
///
/// # Mistakes the compiler catches
///
/// - A misspelt handler (`recpt`, `envfrom`, `eom_`): `#[handlers]` reports it
///   at the name with the stage it resembles.
/// - A wrong argument type: rustc's "incompatible type for trait" error shows
///   the stage's signature.
/// - A wrong return type: the error names the return types allowed.
/// - A modification whose action is not declared (`ctx.add_header(..)` without
///   `#[milter(actions(add_header))]`): an error at the call naming the
///   attribute to add (see [`action`](crate::action)).
/// - A missing `#[derive(Milter)]` or `#[handlers]`: an error at the `impl`
///   saying what to add.
/// - Handlers in two `impl Milter` blocks: conflicting implementations.
///
/// # How it works, and the trade-offs
///
/// - Handlers are trait methods: rustc checks their names and signatures, and
///   the server, generic over the milter type, calls them with static dispatch
///   (inlined as any generic call).
/// - The stage methods return `impl StageReturn`, which an `impl` refines to
///   the type written. The server sees only the opaque type, so which stages
///   never reply cannot be read from it: [`#[handlers]`](macro@crate::handlers)
///   reads the written return types and handler names and writes a hidden impl
///   whose constants the compiler computes from them. That is why the
///   attribute is required and the return type must be written out (a written
///   `-> impl StageReturn` is an error). The opaque type also captures the
///   arguments' lifetimes: use a handler's result before its arguments go away.
/// - [`Milter::SPEC`] is built from [`Declaration`] and that hidden impl, both
///   supertraits of `Milter`; a missing derive or attribute is an unsatisfied
///   bound whose message says what to add.
/// - [`EomContext<'_, Self>`](EomContext) is typed by the milter, and each
///   modification requires the [`action`](crate::action) marker of its
///   action: an undeclared action is a compile error at the call, while an
///   optional action the MTA did not offer is a run-time [`ModifyError`](crate::ModifyError).
/// - All handlers live in one `impl Milter` block; shared code goes in
///   inherent methods, where a name like `connect` or `body` is just a method.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a milter",
    label = "`{Self}` has no `impl Milter`",
    note = "implement it with `#[milter_blocking::handlers] impl Milter for {Self} {{ … }}` \
            next to `#[derive(Milter)]` on the type"
)]
#[allow(unused_variables)]
pub trait Milter: Send + Sized + Declaration + crate::__private_v1::Handlers {
    /// What to negotiate: handled stages, no-reply stages, actions, options,
    /// macros. Built from [`Declaration`] and the stage list that
    /// [`#[handlers]`](macro@crate::handlers) writes; never written by hand.
    const SPEC: Spec = Spec {
        handled: <Self as crate::__private_v1::Handlers>::HANDLED,
        no_reply: <Self as crate::__private_v1::Handlers>::NO_REPLY,
        actions: <Self as Declaration>::ACTIONS,
        optional_actions: <Self as Declaration>::OPTIONAL_ACTIONS,
        options: <Self as Declaration>::OPTIONS,
        optional_options: <Self as Declaration>::OPTIONAL_OPTIONS,
        macros: <Self as Declaration>::MACROS,
    };

    /// Called with the MTA's offer before the negotiation reply is computed; may
    /// adjust `spec` (drop an action, request macros). An error closes the
    /// connection.
    fn negotiate(&mut self, offer: &OptNeg, spec: &mut Spec) -> impl UnitReturn {}

    /// Connection information: the client's host name and address.
    fn connect(
        &mut self,
        ctx: &mut Context<'_>,
        hostname: &[u8],
        addr: ConnectAddr<'_>,
    ) -> impl StageReturn {
        Status::Continue
    }

    /// The HELO/EHLO argument.
    fn helo(&mut self, ctx: &mut Context<'_>, name: &[u8]) -> impl StageReturn {
        Status::Continue
    }

    /// The envelope sender and its ESMTP arguments.
    fn mail(&mut self, ctx: &mut Context<'_>, sender: &EnvelopeAddr<'_>) -> impl StageReturn {
        Status::Continue
    }

    /// One envelope recipient and its ESMTP arguments.
    fn rcpt(&mut self, ctx: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> impl StageReturn {
        Status::Continue
    }

    /// DATA.
    fn data(&mut self, ctx: &mut Context<'_>) -> impl StageReturn {
        Status::Continue
    }

    /// One header.
    fn header(&mut self, ctx: &mut Context<'_>, header: &Header<'_>) -> impl StageReturn {
        Status::Continue
    }

    /// End of headers.
    fn eoh(&mut self, ctx: &mut Context<'_>) -> impl StageReturn {
        Status::Continue
    }

    /// One body chunk (at most 65535 bytes; CRLF line ends; a chunk boundary may
    /// split a line).
    fn body(&mut self, ctx: &mut Context<'_>, chunk: &[u8]) -> impl StageReturn {
        Status::Continue
    }

    /// End of message: the only place to modify the message, through `ctx`,
    /// whose modification calls exist for the actions the type declares.
    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> impl StageReturn {
        Status::Continue
    }

    /// The message in progress was abandoned.
    fn abort(&mut self, ctx: &mut Context<'_>) -> impl UnitReturn {}

    /// The session is over (called exactly once per session).
    fn close(&mut self, ctx: &mut Context<'_>) -> impl UnitReturn {}

    /// An SMTP command the MTA does not know (the whole line).
    fn unknown(&mut self, ctx: &mut Context<'_>, command: &[u8]) -> impl StageReturn {
        Status::Continue
    }
}
