//! Helpers shared by the integration tests: frame splitting, readable event
//! summaries, a driver that feeds an MTA byte stream to a `FilterSession`, and an
//! in-memory `ClientSession` ↔ `FilterSession` pair.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use milter_core::client::{ClientSession, Decision, Received, Sent};
use milter_core::filter::{Adjustment, Event, FilterSession, Input};
use milter_core::frame::{decode_frame, Frame, FrameDecoder};
use milter_core::limits::DEFAULT_MAX_PAYLOAD;
use milter_core::{ClientError, Command, OptNeg, SessionError, Spec, Status};

/// Splits a byte stream into whole packets (length prefix included).
///
/// # Panics
/// If the stream is not a sequence of valid frames or ends inside one.
pub fn raw_frames(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (_, used) = decode_frame(bytes, DEFAULT_MAX_PAYLOAD)
            .unwrap()
            .expect("the stream ends inside a frame");
        out.push(&bytes[..used]);
        bytes = &bytes[used..];
    }
    out
}

/// The frame of one whole packet.
pub fn frame(raw: &[u8]) -> Frame<'_> {
    let (f, used) = decode_frame(raw, DEFAULT_MAX_PAYLOAD).unwrap().unwrap();
    assert_eq!(used, raw.len(), "exactly one packet");
    f
}

/// A packet with a correct length prefix.
pub fn pkt(code: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = u32::try_from(payload.len() + 1)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    v.push(code);
    v.extend_from_slice(payload);
    v
}

/// The wire bytes of a command.
pub fn wire(cmd: &Command<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    cmd.encode(&mut v);
    v
}

/// A 64-bit FNV-1a hash, to summarise body chunks in event lists.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn text(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// A one-line summary of an event, stable across runs.
pub fn describe_event(event: &Event<'_>) -> String {
    match event {
        Event::Negotiate(o) => format!(
            "negotiate v{} actions={:#x} protocol={:#x}",
            o.version,
            o.actions.bits(),
            o.protocol.bits()
        ),
        Event::Connect(c) => format!("connect {} {}", text(c.hostname), c.addr()),
        Event::Helo(h) => format!("helo {}", text(h)),
        Event::Mail(a) | Event::Rcpt(a) => {
            let kind = if matches!(event, Event::Mail(_)) {
                "mail"
            } else {
                "rcpt"
            };
            let mut s = format!("{kind} {}", text(a.address));
            for arg in a.args() {
                s.push(' ');
                s.push_str(&text(arg));
            }
            s
        }
        Event::Data => "data".into(),
        Event::Header(h) => format!("header {}: {}", text(h.name), text(h.value)),
        Event::Eoh => "eoh".into(),
        Event::Body(b) => format!("body {} bytes {:016x}", b.len(), fnv(b)),
        Event::Eom([]) => "eom".into(),
        Event::Eom(b) => format!("eom +{} bytes {:016x}", b.len(), fnv(b)),
        Event::Unknown(u) => format!("unknown {}", text(u)),
        Event::Abort => "abort".into(),
        Event::Close => "close".into(),
        Event::CloseKeepConnection => "close-keep".into(),
        other => format!("{other:?}"),
    }
}

/// Appends the summary of an input: `implicit-abort` first when due, then
/// `new-message`, then the event.
pub fn describe_input(input: &Input<'_>, out: &mut Vec<String>) {
    if input.abort_first {
        out.push("implicit-abort".into());
    }
    if input.new_message {
        out.push("new-message".into());
    }
    if let Some(e) = &input.event {
        out.push(describe_event(e));
    }
}

/// What a `FilterSession` did with a whole MTA byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript {
    /// Event summaries, in order (see [`describe_input`]); `end-of-input`
    /// separates the events of the stream from those of
    /// [`FilterSession::end_of_input`].
    pub events: Vec<String>,
    /// Everything the session wrote.
    pub output: Vec<u8>,
    /// The error that ended the session early, if any.
    pub error: Option<SessionError>,
    /// Adjustments the session reported.
    pub adjustments: Vec<Adjustment>,
}

/// A handler for [`run_filter`] and [`Pair`]: sees each event that owes a reply
/// (and may call modifications on the session at end of message) and returns the
/// status to send.
pub trait Handler {
    fn answer(&mut self, event: &Event<'_>, session: &mut FilterSession) -> Status;
}

impl<F: FnMut(&Event<'_>, &mut FilterSession) -> Status> Handler for F {
    fn answer(&mut self, event: &Event<'_>, session: &mut FilterSession) -> Status {
        self(event, session)
    }
}

/// Answers every stage with continue.
pub fn always_continue(_: &Event<'_>, _: &mut FilterSession) -> Status {
    Status::Continue
}

/// Feeds an MTA byte stream, pushed in the given pieces, through a
/// `FrameDecoder` and a `FilterSession` as a driver would: negotiation with
/// `spec`, every owed reply from `handler`, output collected after each piece.
pub fn run_filter<'c>(
    pieces: impl IntoIterator<Item = &'c [u8]>,
    spec: &Spec,
    handler: &mut impl Handler,
) -> Transcript {
    let mut session = FilterSession::new();
    let mut decoder = FrameDecoder::new();
    let mut t = Transcript {
        events: Vec::new(),
        output: Vec::new(),
        error: None,
        adjustments: Vec::new(),
    };
    'pieces: for piece in pieces {
        decoder.push(piece);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    t.error = Some(SessionError::Decode(e));
                    break 'pieces;
                }
            };
            let input = match session.handle(frame) {
                Ok(i) => i,
                Err(e) => {
                    t.error = Some(e);
                    break 'pieces;
                }
            };
            describe_input(&input, &mut t.events);
            match input.event {
                Some(Event::Negotiate(_)) => {
                    if let Err(e) = session.negotiate(spec) {
                        t.error = Some(e);
                        break 'pieces;
                    }
                }
                Some(event) if session.owed().is_some() => {
                    let status = handler.answer(&event, &mut session);
                    let outcome = session.reply(status).unwrap();
                    t.adjustments.extend(outcome.adjusted);
                }
                _ => {}
            }
        }
        t.output.extend_from_slice(session.output());
        session.clear_output();
    }
    if t.error.is_none() {
        t.events.push("end-of-input".into());
        if let Some(input) = session.end_of_input() {
            describe_input(&input, &mut t.events);
        }
    }
    t.output.extend_from_slice(session.output());
    t
}

/// What the MTA side got back for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// What `ClientSession::send` said.
    pub sent: Sent,
    /// Progress and modification packets, in order.
    pub received: Vec<Received>,
    /// The final decision (`None` when no reply was due).
    pub decision: Option<Decision>,
}

impl Exchange {
    /// The modifications received, in order.
    pub fn modifications(&self) -> Vec<milter_core::Modification> {
        self.received
            .iter()
            .filter_map(|r| match r {
                Received::Modification(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }
}

/// A `ClientSession` and a `FilterSession` connected through memory.
pub struct Pair<H> {
    pub mta: ClientSession,
    pub milter: FilterSession,
    to_milter: FrameDecoder,
    to_mta: FrameDecoder,
    pub handler: H,
    /// What the milter side saw, as [`describe_input`] summaries.
    pub events: Vec<String>,
    /// Adjustments the filter reported.
    pub adjustments: Vec<Adjustment>,
    /// Bytes the filter wrote, over the whole conversation.
    pub milter_wrote: Vec<u8>,
    spec: Spec,
}

impl<H: Handler> Pair<H> {
    /// Connects, negotiates (the milter answers with `spec`) and checks that both
    /// sides agree.
    pub fn new(offer: OptNeg, spec: Spec, handler: H) -> Pair<H> {
        Self::try_new(offer, spec, handler).unwrap()
    }

    /// Like [`Pair::new`], returning the first error of either side.
    pub fn try_new(offer: OptNeg, spec: Spec, handler: H) -> Result<Pair<H>, String> {
        let mut p = Pair {
            mta: ClientSession::new(offer),
            milter: FilterSession::new(),
            to_milter: FrameDecoder::new(),
            to_mta: FrameDecoder::new(),
            handler,
            events: Vec::new(),
            adjustments: Vec::new(),
            milter_wrote: Vec::new(),
            spec,
        };
        p.pump_to_milter().map_err(|e| e.to_string())?;
        let f = p
            .to_mta
            .next_frame()
            .map_err(|e| e.to_string())?
            .ok_or("no negotiation reply")?;
        p.mta.receive_negotiation(f).map_err(|e| e.to_string())?;
        assert_eq!(p.to_mta.buffered(), 0, "one O reply only");
        Ok(p)
    }

    /// Moves the MTA's output through the milter, and the milter's output into the
    /// MTA's receive buffer.
    fn pump_to_milter(&mut self) -> Result<(), SessionError> {
        self.to_milter.push(self.mta.output());
        self.mta.clear_output();
        let result = loop {
            let frame = match self.to_milter.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break Ok(()),
                Err(e) => break Err(SessionError::Decode(e)),
            };
            let input = match self.milter.handle(frame) {
                Ok(i) => i,
                Err(e) => break Err(e),
            };
            describe_input(&input, &mut self.events);
            match input.event {
                Some(Event::Negotiate(_)) => {
                    if let Err(e) = self.milter.negotiate(&self.spec) {
                        break Err(e);
                    }
                }
                Some(event) if self.milter.owed().is_some() => {
                    let status = self.handler.answer(&event, &mut self.milter);
                    let outcome = self.milter.reply(status).unwrap();
                    self.adjustments.extend(outcome.adjusted);
                }
                _ => {}
            }
        };
        self.milter_wrote.extend_from_slice(self.milter.output());
        self.to_mta.push(self.milter.output());
        self.milter.clear_output();
        result
    }

    /// Sends macros for the command `code`; the milter must not answer.
    pub fn macros(&mut self, code: u8, pairs: &[(&str, &str)]) {
        let pairs: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        self.mta.send_macros(code, &pairs).unwrap();
        self.pump_to_milter().unwrap();
        assert_eq!(self.to_mta.buffered(), 0, "a reply to D");
    }

    /// Sends one command and reads the milter's answer to it, if one is due.
    pub fn send(&mut self, cmd: &Command<'_>) -> Exchange {
        self.try_send(cmd).unwrap()
    }

    /// Like [`Pair::send`], returning the first error of either side.
    pub fn try_send(&mut self, cmd: &Command<'_>) -> Result<Exchange, String> {
        let sent = self.mta.send(cmd).map_err(|e| format!("client: {e}"))?;
        self.pump_to_milter().map_err(|e| format!("milter: {e}"))?;
        let mut ex = Exchange {
            sent,
            received: Vec::new(),
            decision: None,
        };
        if sent == Sent::AwaitReply {
            loop {
                let f = self
                    .to_mta
                    .next_frame()
                    .map_err(|e| format!("client: {e}"))?
                    .ok_or_else(|| format!("no reply to {}", cmd.code() as char))?;
                match self.mta.receive(f).map_err(|e| format!("client: {e}"))? {
                    Received::Decision(d) => {
                        ex.decision = Some(d);
                        break;
                    }
                    other => ex.received.push(other),
                }
            }
        }
        if self.to_mta.buffered() != 0 {
            return Err(format!(
                "{} stray bytes from the milter after {}",
                self.to_mta.buffered(),
                cmd.code() as char
            ));
        }
        Ok(ex)
    }

    /// Sends a command and returns the decision (panics if none was due).
    pub fn decide(&mut self, cmd: &Command<'_>) -> Decision {
        let ex = self.send(cmd);
        assert_eq!(ex.sent, Sent::AwaitReply, "{ex:?}");
        ex.decision.unwrap()
    }

    /// Ends the connection (EOF) and records the milter's last events.
    pub fn eof(&mut self) {
        if let Some(input) = self.milter.end_of_input() {
            describe_input(&input, &mut self.events);
        }
        assert!(self.milter.output().is_empty(), "no write at EOF");
    }

    /// Returns and forgets the events seen so far.
    pub fn take_events(&mut self) -> Vec<String> {
        std::mem::take(&mut self.events)
    }
}

/// Why a client call failed, as text (for `assert!(... .contains(...))`).
pub fn client_err(r: Result<impl std::fmt::Debug, ClientError>) -> String {
    r.unwrap_err().to_string()
}
