//! Serving one milter connection: read frames, feed the session, call the
//! handlers, write the replies owed in one write per batch.

use crate::context::{ConnectionInfo, Context, EomContext};
use crate::handler::{HandlerError, Milter, StageReturn, UnitReturn};
use crate::header_index::HeaderIndex;
use crate::hooks::{Hooks, Observer};
use crate::listener::Stream;
use crate::read_watch::ReadWatch;
use crate::registry::LiveConnection;
use crate::spin::SpinPolicy;
use milter_core::filter::{Event, FilterSession, Input, ReplyOutcome};
use milter_core::frame::FrameDecoder;
use milter_core::{Stage, Status};
use std::any::Any;
use std::io::{self, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Keep at most this much read buffer between messages; a larger one (after a
/// big header or body chunk) is released.
const KEEP_READ_BUFFER: usize = 128 * 1024;

/// Settings every connection shares.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionConfig {
    /// The read timeout, kept by the accept loop (`None`: wait forever).
    pub(crate) read_watch: Option<Arc<ReadWatch>>,
    pub(crate) write_timeout: Option<Duration>,
    pub(crate) max_payload: usize,
    pub(crate) max_macro_bytes: usize,
    pub(crate) failure_status: Status,
    pub(crate) shadow: bool,
    pub(crate) hooks: Option<Arc<dyn Hooks>>,
    pub(crate) spin: SpinPolicy,
}

/// What to do after a command.
enum Flow {
    Go,
    /// The session is over: write what is owed and close.
    Close,
    /// A handler failed: write what is owed (the failure reply) and close without
    /// calling any more handlers.
    Fail,
}

/// Serves one connection to the end.
pub(crate) fn serve<M: Milter>(
    stream: Stream,
    milter: M,
    info: ConnectionInfo,
    config: &ConnectionConfig,
    live: &LiveConnection,
    stopping: &AtomicBool,
) {
    // The read timeout is kept by the watchdog (see `read_watch.rs`).
    if let Err(e) = stream.set_timeouts(None, config.write_timeout) {
        log::warn!("{info}: cannot set socket timeouts: {e}");
        return;
    }
    let _open = config.spin.enter();
    let observer = Observer {
        hooks: config.hooks.clone(),
        shadow: config.shadow,
        would: Vec::new(),
    };
    let mut session = FilterSession::new();
    session.set_max_macro_bytes(config.max_macro_bytes);
    let mut conn = Connection {
        stream,
        milter,
        info,
        session,
        config,
        live,
        observer,
        headers: HeaderIndex::default(),
        opened: std::time::Instant::now(),
        lost: None,
        first_bytes: Vec::new(),
    };
    conn.run(stopping);
}

struct Connection<'a, M> {
    stream: Stream,
    milter: M,
    info: ConnectionInfo,
    session: FilterSession,
    config: &'a ConnectionConfig,
    live: &'a LiveConnection,
    observer: Observer,
    headers: HeaderIndex,
    opened: std::time::Instant,
    /// A write at end of message failed: the connection is lost.
    lost: Option<io::ErrorKind>,
    /// The connection's first bytes, to describe a peer that is not an MTA.
    first_bytes: Vec<u8>,
}

impl<M: Milter> Connection<'_, M> {
    fn hooks(&self) -> Option<&dyn Hooks> {
        self.observer.hooks.as_deref()
    }

    fn run(&mut self, stopping: &AtomicBool) {
        let mut decoder = FrameDecoder::with_max_payload(self.config.max_payload);
        // The last command was a macro packet: the command it belongs to follows.
        let mut after_macros = false;
        loop {
            // Idle only while waiting for the first byte of a new command
            // outside a message (see `registry.rs`).
            let waiting = !self.session.in_message() && decoder.buffered() == 0 && !after_macros;
            if waiting {
                decoder.shrink_to(KEEP_READ_BUFFER);
                if !self.live.wait_for_command(stopping) {
                    log::debug!("{}: closing for shutdown", self.info);
                    return self.end_of_input();
                }
            }
            let read = self.read_input(decoder.spare());
            let n = match read {
                Ok(0) if self.live.read_timed_out() => return self.read_timed_out(),
                Ok(0) if self.live.closed_for_shutdown() => {
                    log::debug!("{}: closing for shutdown", self.info);
                    return self.end_of_input();
                }
                Ok(0) => {
                    if decoder.buffered() > 0 {
                        log::warn!(
                            "{}: MTA closed the connection in the middle of a packet ({} bytes buffered)",
                            self.info,
                            decoder.buffered()
                        );
                    } else {
                        log::debug!("{}: MTA closed the connection", self.info);
                    }
                    return self.end_of_input();
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("{}: read error: {e}", self.tag());
                    return self.end_of_input();
                }
            };
            if self.first_bytes.len() < crate::foreign_peer::KEPT
                && self.session.negotiated().is_none()
            {
                let take = n.min(crate::foreign_peer::KEPT - self.first_bytes.len());
                self.first_bytes.extend_from_slice(&decoder.spare()[..take]);
            }
            if waiting && !self.live.command_arrived() {
                // The shutdown closed the connection as the bytes arrived.
                log::debug!("{}: closing for shutdown", self.info);
                return self.end_of_input();
            }
            decoder.commit(n);
            loop {
                let frame = match decoder.next_frame() {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => {
                        if let Some(h) = self.hooks() {
                            h.protocol_error(&self.info, &e);
                        }
                        log::warn!(
                            "{}: protocol error: {e}{}; closing",
                            self.tag(),
                            self.foreign_peer()
                        );
                        self.flush();
                        return self.end_of_input();
                    }
                };
                log::trace!("{}: command {:?}", self.info, frame.code as char);
                after_macros = frame.code == b'D';
                match self.command(frame) {
                    Flow::Go => {}
                    Flow::Close => {
                        self.flush();
                        return;
                    }
                    Flow::Fail => {
                        self.flush();
                        self.live
                            .set_position(milter_core::filter::Position::Closed);
                        return;
                    }
                }
            }
            if !self.flush() {
                return self.end_of_input();
            }
            self.live.set_position(self.session.position());
        }
    }

    /// Reads what the MTA sent next; first polls for it without blocking for a
    /// moment when the spin policy allows (see `spin.rs`). A read that blocks
    /// is watched for the read timeout (see `read_watch.rs`).
    fn read_input(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(budget) = self.config.spin.budget() {
            if let Some(result) = self.poll_input(buf, budget) {
                return result;
            }
        }
        let _reading = self
            .config
            .read_watch
            .as_ref()
            .map(|w| w.reading(self.live));
        self.stream.read(buf)
    }

    /// The MTA sent nothing for the read timeout: log, tell the hooks, end.
    fn read_timed_out(&mut self) {
        if let Some(h) = self.hooks() {
            h.timeout(&self.info);
        }
        log::warn!(
            "{}: no command from the MTA for {:?} (connection open {:?}, at {}); closing",
            self.tag(),
            self.config
                .read_watch
                .as_ref()
                .map_or(Duration::ZERO, |w| w.limit()),
            self.opened.elapsed(),
            self.session.position().name()
        );
        self.end_of_input();
    }

    /// Polls without blocking for up to `budget`; `None` if nothing came (the
    /// socket is blocking again then).
    fn poll_input(&mut self, buf: &mut [u8], budget: Duration) -> Option<io::Result<usize>> {
        if let Err(e) = self.stream.set_nonblocking(true) {
            return Some(Err(e));
        }
        let start = Instant::now();
        let outcome = loop {
            match self.stream.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if start.elapsed() >= budget {
                        break None;
                    }
                    std::hint::spin_loop();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break Some(other),
            }
        };
        match self.stream.set_nonblocking(false) {
            Ok(()) => outcome,
            Err(e) => Some(Err(e)),
        }
    }

    /// Writes what the session owes the MTA; false if the connection is lost.
    fn flush(&mut self) -> bool {
        if self.session.output().is_empty() {
            return true;
        }
        let result = self.stream.write_all(self.session.output());
        self.session.clear_output();
        match result {
            Ok(()) => true,
            Err(e) if is_timeout(e.kind()) => {
                log::warn!(
                    "{}: write to the MTA timed out after {:?} (the MTA stopped reading); closing",
                    self.tag(),
                    self.config.write_timeout.unwrap_or_default()
                );
                false
            }
            Err(e) => {
                log::warn!("{}: write error: {e}; closing", self.tag());
                false
            }
        }
    }

    /// For a protocol error before negotiation: what the peer seems to be,
    /// when its first bytes are clearly not a milter packet (else nothing).
    fn foreign_peer(&self) -> String {
        if self.session.negotiated().is_some() {
            return String::new();
        }
        crate::foreign_peer::describe(&self.first_bytes)
            .map_or_else(String::new, |d| format!("; {d}"))
    }

    /// The connection and, when known, the queue id, for log lines.
    fn tag(&self) -> String {
        match self.session.macros().get("i") {
            Some(q) => format!("{} {}", self.info, String::from_utf8_lossy(q)),
            None => self.info.to_string(),
        }
    }

    fn end_of_input(&mut self) {
        if let Some(input) = self.session.end_of_input() {
            let _ = self.dispatch(input);
        }
        self.live
            .set_position(milter_core::filter::Position::Closed);
    }

    fn command(&mut self, frame: milter_core::frame::Frame<'_>) -> Flow {
        match self.session.handle(frame) {
            Ok(input) => self.dispatch(input),
            Err(e) => {
                if let Some(h) = self.hooks() {
                    h.protocol_error(&self.info, &e);
                }
                log::warn!("{}: {e}{}; closing", self.tag(), self.foreign_peer());
                self.end_of_input();
                Flow::Close
            }
        }
    }

    fn dispatch(&mut self, input: Input<'_>) -> Flow {
        if input.abort_first {
            self.shadow_message_ended(|| "aborted".to_string());
            if let Flow::Fail = self.call_unit("abort", |m, ctx| m.abort(ctx).into_result()) {
                return Flow::Fail;
            }
            self.milter.reset_message();
        }
        if input.new_message {
            self.milter.reset_message();
            self.headers.clear();
        }
        let Some(event) = input.event else {
            return Flow::Go;
        };
        let stage = event.stage();
        match event {
            Event::Negotiate(offer) => self.negotiate(offer),
            Event::Connect(c) => {
                let addr = c.addr();
                self.call_stage(Stage::Connect, |m, ctx| {
                    m.connect(ctx, c.hostname, addr).into_result()
                })
            }
            Event::Helo(name) => {
                self.call_stage(Stage::Helo, |m, ctx| m.helo(ctx, name).into_result())
            }
            Event::Mail(a) => self.call_stage(Stage::Mail, |m, ctx| m.mail(ctx, &a).into_result()),
            Event::Rcpt(a) => self.call_stage(Stage::Rcpt, |m, ctx| m.rcpt(ctx, &a).into_result()),
            Event::Data => self.call_stage(Stage::Data, |m, ctx| m.data(ctx).into_result()),
            Event::Header(h) => {
                self.headers.record(h.name);
                self.call_stage(Stage::Header, |m, ctx| m.header(ctx, &h).into_result())
            }
            Event::Eoh => self.call_stage(Stage::Eoh, |m, ctx| m.eoh(ctx).into_result()),
            Event::Body(chunk) => {
                self.call_stage(Stage::Body, |m, ctx| m.body(ctx, chunk).into_result())
            }
            Event::Unknown(line) => {
                self.call_stage(Stage::Unknown, |m, ctx| m.unknown(ctx, line).into_result())
            }
            Event::Eom(chunk) => self.eom(chunk),
            Event::Abort => {
                self.shadow_message_ended(|| "aborted".to_string());
                let flow = self.call_unit("abort", |m, ctx| m.abort(ctx).into_result());
                self.message_over();
                flow
            }
            Event::Close => {
                let _ = self.call_unit("close", |m, ctx| m.close(ctx).into_result());
                Flow::Close
            }
            Event::CloseKeepConnection => {
                self.call_unit("close", |m, ctx| m.close(ctx).into_result())
            }
            _ => {
                log::warn!("{}: unexpected event at {stage:?}; closing", self.info);
                Flow::Fail
            }
        }
    }

    fn negotiate(&mut self, offer: milter_core::OptNeg) -> Flow {
        let mut spec = M::SPEC;
        let hook = catch_unwind(AssertUnwindSafe(|| {
            self.milter.negotiate(&offer, &mut spec).into_result()
        }));
        match hook {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                log::warn!("{}: negotiate handler failed: {e}; closing", self.info);
                return Flow::Fail;
            }
            Err(p) => {
                log::error!(
                    "{}: negotiate handler panicked: {}",
                    self.info,
                    panic_message(&p)
                );
                return Flow::Fail;
            }
        }
        match self.session.negotiate(&spec) {
            Ok(n) => {
                self.headers.tracking =
                    n.handled.has(Stage::Header) && !n.skipped.has(Stage::Header);
                log::debug!(
                    "{}: negotiated version {}, actions 0x{:x}, protocol 0x{:x} (MTA offered version {}, actions 0x{:x}, protocol 0x{:x})",
                    self.info,
                    n.version,
                    n.actions.bits(),
                    n.protocol.bits(),
                    offer.version,
                    offer.actions.bits(),
                    offer.protocol.bits()
                );
                Flow::Go
            }
            Err(e) => {
                log::warn!("{}: {e}; closing", self.info);
                Flow::Fail
            }
        }
    }

    /// Calls a stage handler and sends its decision.
    fn call_stage(
        &mut self,
        stage: Stage,
        f: impl FnOnce(&mut M, &mut Context<'_>) -> Result<Status, HandlerError>,
    ) -> Flow {
        let started = self.observer.hooks.is_some().then(std::time::Instant::now);
        let result = {
            let mut ctx = Context::new(&self.session, &self.info, Some(stage));
            let milter = &mut self.milter;
            catch_unwind(AssertUnwindSafe(|| f(milter, &mut ctx)))
        };
        if let (Some(h), Some(t)) = (self.hooks(), started) {
            h.stage(&self.info, stage, t.elapsed());
        }
        self.finish_stage(stage, result)
    }

    fn finish_stage(
        &mut self,
        stage: Stage,
        result: Result<Result<Status, HandlerError>, Box<dyn Any + Send>>,
    ) -> Flow {
        match result {
            Ok(Ok(status)) => self.send_decision(stage, status, Flow::Go),
            Ok(Err(e)) => {
                let status = self.handler_failed(stage, &e);
                self.send_decision(stage, status, Flow::Fail)
            }
            Err(p) => {
                let status = self.handler_panicked(stage, &p);
                self.send_decision(stage, status, Flow::Fail)
            }
        }
    }

    /// Logs a stage handler's error; returns the status to answer with.
    #[cold]
    #[inline(never)]
    fn handler_failed(&mut self, stage: Stage, e: &HandlerError) -> Status {
        if let Some(h) = self.hooks() {
            h.handler_failed(&self.info, Some(stage), false);
        }
        log::warn!(
            "{}: {stage} handler failed: {e}; answering {} and closing",
            self.tag(),
            self.config.failure_status.name()
        );
        self.config.failure_status.clone()
    }

    /// Logs a stage handler's panic; returns the status to answer with.
    #[cold]
    #[inline(never)]
    fn handler_panicked(&mut self, stage: Stage, p: &Box<dyn Any + Send>) -> Status {
        if let Some(h) = self.hooks() {
            h.handler_failed(&self.info, Some(stage), true);
        }
        log::error!(
            "{}: {stage} handler panicked: {}; answering {} and closing",
            self.tag(),
            panic_message(p),
            self.config.failure_status.name()
        );
        self.config.failure_status.clone()
    }

    /// Sends the decision for `stage`. The common case (no hooks, no shadow
    /// mode, the status sent as given) stays small: every command of every
    /// message passes here.
    #[inline]
    fn send_decision(&mut self, stage: Stage, status: Status, flow: Flow) -> Flow {
        if self.observer.hooks.is_some() || self.observer.shadow {
            return self.send_observed_decision(stage, status, flow);
        }
        match self.session.reply(status) {
            Ok(ReplyOutcome {
                adjusted: None,
                message_ended,
            }) => {
                if message_ended {
                    self.message_over();
                }
                flow
            }
            Ok(outcome) => self.reply_adjusted(stage, outcome, None, flow),
            Err(e) => self.reply_refused(e),
        }
    }

    /// [`send_decision`](Self::send_decision) with hooks or shadow mode: they
    /// see the handler's own decision.
    #[inline(never)]
    fn send_observed_decision(&mut self, stage: Stage, status: Status, flow: Flow) -> Flow {
        let decided = status.clone();
        let status = self.observer.filter_status(stage, status);
        match self.session.reply(status) {
            Ok(outcome) => self.reply_adjusted(stage, outcome, Some(&decided), flow),
            Err(e) => self.reply_refused(e),
        }
    }

    /// After a reply that was adjusted, or with observers to tell: logs the
    /// adjustment and, if the message ended, tells the observers and resets.
    #[inline(never)]
    fn reply_adjusted(
        &mut self,
        stage: Stage,
        outcome: ReplyOutcome,
        decided: Option<&Status>,
        flow: Flow,
    ) -> Flow {
        if let Some(a) = outcome.adjusted {
            log::warn!("{}: {a}", self.tag());
        }
        if outcome.message_ended {
            if let Some(decided) = decided {
                if let Some(h) = self.hooks() {
                    h.verdict(&self.info, stage, decided);
                }
                self.shadow_message_ended(|| format!("ended with {} at {stage}", decided.name()));
            }
            self.message_over();
        }
        flow
    }

    /// The message ended (its final reply sent, or its abort handled): the
    /// milter's per-message state is reset and the message's macros freed.
    fn message_over(&mut self) {
        self.milter.reset_message();
        self.session.release_message_macros();
    }

    #[cold]
    #[inline(never)]
    fn reply_refused(&mut self, e: milter_core::SessionError) -> Flow {
        log::error!("{}: {e}; closing", self.info);
        Flow::Fail
    }

    /// Shadow mode's one line for a message that ended (nothing otherwise: the
    /// line's text is only made when it is logged).
    fn shadow_message_ended(&mut self, how: impl FnOnce() -> String) {
        if self.observer.shadow {
            let tag = self.tag();
            self.observer.message_ended(&tag, &how());
        }
    }

    /// Calls abort or close (no reply).
    fn call_unit(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut M, &mut Context<'_>) -> Result<(), HandlerError>,
    ) -> Flow {
        let result = {
            let mut ctx = Context::new(&self.session, &self.info, None);
            let milter = &mut self.milter;
            catch_unwind(AssertUnwindSafe(|| f(milter, &mut ctx)))
        };
        match result {
            Ok(Ok(())) => Flow::Go,
            Ok(Err(e)) => {
                if let Some(h) = self.hooks() {
                    h.handler_failed(&self.info, None, false);
                }
                log::warn!("{}: {name} handler failed: {e}; closing", self.tag());
                Flow::Fail
            }
            Err(p) => {
                if let Some(h) = self.hooks() {
                    h.handler_failed(&self.info, None, true);
                }
                log::error!(
                    "{}: {name} handler panicked: {}; closing",
                    self.tag(),
                    panic_message(&p)
                );
                Flow::Fail
            }
        }
    }

    fn eom(&mut self, chunk: &[u8]) -> Flow {
        if !chunk.is_empty() {
            // A last body chunk inside `E`: the body handler sees it first; a final
            // decision there is the answer to end of message.
            let result = {
                let mut ctx = Context::new(&self.session, &self.info, Some(Stage::Body));
                let milter = &mut self.milter;
                catch_unwind(AssertUnwindSafe(|| {
                    milter.body(&mut ctx, chunk).into_result()
                }))
            };
            match result {
                Ok(Ok(s)) if !s.is_final() => {}
                other => return self.finish_stage(Stage::Eom, other),
            }
        }
        let started = self.observer.hooks.is_some().then(std::time::Instant::now);
        let result = {
            let Connection {
                stream,
                milter,
                info,
                session,
                observer,
                headers,
                lost,
                ..
            } = self;
            let mut ctx = EomContext::new(session, info, stream, observer, headers, lost);
            catch_unwind(AssertUnwindSafe(|| milter.eom(&mut ctx).into_result()))
        };
        if let (Some(h), Some(t)) = (self.hooks(), started) {
            h.stage(&self.info, Stage::Eom, t.elapsed());
        }
        let flow = self.finish_stage(Stage::Eom, result);
        if let Some(kind) = self.lost {
            if is_timeout(kind) {
                log::warn!(
                    "{}: write to the MTA timed out after {:?} during end of message (the MTA stopped reading); closing",
                    self.tag(),
                    self.config.write_timeout.unwrap_or_default()
                );
            } else {
                log::warn!(
                    "{}: connection to the MTA lost during end of message ({kind:?}); closing",
                    self.tag()
                );
            }
            self.session.clear_output();
            return Flow::Fail;
        }
        flow
    }
}

/// A socket timeout: `SO_SNDTIMEO` expiring shows as "would block" (EAGAIN).
fn is_timeout(kind: io::ErrorKind) -> bool {
    matches!(kind, io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

pub(crate) fn panic_message(p: &Box<dyn Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}
