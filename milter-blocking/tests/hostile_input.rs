//! Hostile input from the MTA side: bad length fields, truncated frames, unknown
//! and out-of-order commands, malformed payloads, odd negotiation offers.
//!
//! Every case checks: a warning or error line that names the problem (captured
//! from the `log` facade), the offending connection closed without a partial
//! reply (the abort handler runs first when a message was in progress, then the
//! close handler, as libmilter does), the server alive, and a healthy MTA on the
//! same server completing its messages the whole time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{watchdog, Capture, Mta, TestServer};
use milter_blocking::milter_core::client::Decision;
use milter_blocking::milter_core::frame::FrameDecoder;
use milter_blocking::milter_core::{Command, Connect, EnvelopeAddr, Family, Header, OptNeg};
use milter_blocking::{
    Actions, ConnectAddr, Context, EomContext, HandlerResult, Milter, ProtocolOpts, SocketSpec,
    Spec, Status,
};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Log capture
// ---------------------------------------------------------------------------

/// Collects every log line of this test binary.
fn logs() -> &'static Capture {
    common::capture_logs(log::LevelFilter::Debug, false)
}

/// Whether a log line is about the connection from local port `port`
/// (lines start with `#id 127.0.0.1:PORT`).
fn mentions_port(line: &str, port: u16) -> bool {
    let needle = format!("127.0.0.1:{port}");
    line.match_indices(&needle).any(|(i, _)| {
        !line[i + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// Whether `line` contains the parts of `pattern` (separated by `*`) in order.
fn matches(line: &str, pattern: &str) -> bool {
    let mut rest = line;
    for part in pattern.split('*') {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// Waits for a WARN or ERROR line about `port` matching `pattern` (`*` stands
/// for anything, so that details such as durations may change).
fn expect_log(port: u16, pattern: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (found, mine) = {
            let lines = logs().0.lock().unwrap_or_else(|p| p.into_inner());
            let found = lines
                .iter()
                .find(|l| mentions_port(l, port) && matches(l, pattern))
                .cloned();
            let mine: Vec<String> = lines
                .iter()
                .filter(|l| mentions_port(l, port))
                .cloned()
                .collect();
            (found, mine)
        };
        if let Some(l) = found {
            assert!(
                l.starts_with("WARN") || l.starts_with("ERROR"),
                "not a warning: {l}"
            );
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "no log line matching {pattern:?} for port {port}; lines for it: {mine:#?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------
// A milter that records what it was called for, per MTA port
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Events(Mutex<Vec<(u16, &'static str)>>);

impl Events {
    fn of(&self, port: u16) -> Vec<&'static str> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(p, _)| *p == port)
            .map(|(_, e)| *e)
            .collect()
    }
    fn count(&self, port: u16, event: &str) -> usize {
        self.of(port).iter().filter(|e| **e == event).count()
    }
}

#[derive(Clone)]
struct Probe {
    events: Arc<Events>,
}

impl Probe {
    fn note(&self, port: Option<std::net::SocketAddr>, e: &'static str) {
        let port = port.map_or(0, |p| p.port());
        self.events
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((port, e));
    }
}

impl milter_blocking::Declaration for Probe {}

#[milter_blocking::handlers]
impl Milter for Probe {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec::ALL_STAGES;
    }

    fn connect(&mut self, ctx: &mut Context<'_>, _: &[u8], _: ConnectAddr<'_>) -> HandlerResult {
        self.note(ctx.connection().peer, "connect");
        Ok(Status::Continue)
    }
    fn helo(&mut self, ctx: &mut Context<'_>, _: &[u8]) -> HandlerResult {
        self.note(ctx.connection().peer, "helo");
        Ok(Status::Continue)
    }
    fn mail(&mut self, ctx: &mut Context<'_>, _: &EnvelopeAddr<'_>) -> HandlerResult {
        self.note(ctx.connection().peer, "mail");
        Ok(Status::Continue)
    }
    fn header(&mut self, ctx: &mut Context<'_>, h: &Header<'_>) -> HandlerResult {
        self.note(ctx.connection().peer, "header");
        if h.name == b"X-Accept" {
            return Ok(Status::Accept);
        }
        Ok(Status::Continue)
    }
    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        self.note(ctx.connection().peer, "eom");
        Ok(Status::Continue)
    }
    fn abort(&mut self, ctx: &mut Context<'_>) -> HandlerResult<()> {
        self.note(ctx.connection().peer, "abort");
        Ok(())
    }
    fn close(&mut self, ctx: &mut Context<'_>) -> HandlerResult<()> {
        self.note(ctx.connection().peer, "close");
        Ok(())
    }
}

/// A milter that requires actions and options most offers lack.
#[derive(Default)]
struct Demanding;

impl milter_blocking::Declaration for Demanding {
    const ACTIONS: milter_blocking::Actions =
        Actions::CHANGE_FROM.union(Actions::ADD_RCPT_WITH_ARGS);
}
impl milter_blocking::action::ChangeFrom for Demanding {}
impl milter_blocking::action::AddRcptWithArgs for Demanding {}

#[milter_blocking::handlers]
impl Milter for Demanding {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec {
            actions: Actions::CHANGE_FROM.union(Actions::ADD_RCPT_WITH_ARGS),
            ..Spec::ALL_STAGES
        };
    }
}

#[derive(Default)]
struct NeedsSkip;

impl milter_blocking::Declaration for NeedsSkip {}

#[milter_blocking::handlers]
impl Milter for NeedsSkip {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec {
            options: ProtocolOpts::SKIP,
            ..Spec::ALL_STAGES
        };
    }
}

// ---------------------------------------------------------------------------
// A healthy MTA running next to the hostile one
// ---------------------------------------------------------------------------

struct Healthy {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Healthy {
    fn start(spec: &SocketSpec) -> Healthy {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let spec = spec.clone();
        let thread = {
            let (stop, done) = (stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut mta = Mta::connect(&spec);
                mta.connect_stage("healthy.example", "192.0.2.9", 2525);
                while !stop.load(Ordering::SeqCst) || done.load(Ordering::SeqCst) < 3 {
                    mta.message_body_only();
                    assert_eq!(mta.eom().decision, Decision::Continue);
                    done.fetch_add(1, Ordering::SeqCst);
                }
                mta.send_only(Command::Quit);
            })
        };
        Healthy {
            stop,
            done,
            thread: Some(thread),
        }
    }

    /// Stops the healthy MTA; panics if it failed; returns its message count.
    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        if let Err(p) = self.thread.take().unwrap().join() {
            std::panic::resume_unwind(p);
        }
        self.done.load(Ordering::SeqCst)
    }
}

impl Drop for Healthy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A server with the probe milter and a healthy MTA on it.
struct Fixture {
    server: TestServer,
    events: Arc<Events>,
    healthy: Option<Healthy>,
}

impl Fixture {
    fn new() -> Fixture {
        Self::with(|b| b)
    }

    fn with(
        configure: impl FnOnce(milter_blocking::ServerBuilder) -> milter_blocking::ServerBuilder,
    ) -> Fixture {
        logs();
        let events = Arc::new(Events::default());
        let server = {
            let events = events.clone();
            TestServer::with(configure, move || Probe {
                events: events.clone(),
            })
        };
        let healthy = Some(Healthy::start(&server.spec));
        Fixture {
            server,
            events,
            healthy,
        }
    }

    /// Stops the healthy MTA (asserting it kept working) and checks that the
    /// server still takes a new connection.
    fn finish(mut self) {
        let n = self.healthy.take().unwrap().finish();
        assert!(n >= 3, "healthy MTA completed only {n} messages");
        let mut late = Mta::connect(&self.server.spec);
        late.message_until_eom();
        assert_eq!(late.eom().decision, Decision::Continue);
        assert!(self.server.handle.stats().open >= 1);
    }
}

// ---------------------------------------------------------------------------
// Raw wire helpers
// ---------------------------------------------------------------------------

fn frame(code: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(code);
    v.extend_from_slice(payload);
    v
}

fn enc(cmd: Command<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    cmd.encode(&mut v);
    v
}

fn offer(version: u32, actions: u32, protocol: u32) -> Vec<u8> {
    let mut p = version.to_be_bytes().to_vec();
    p.extend_from_slice(&actions.to_be_bytes());
    p.extend_from_slice(&protocol.to_be_bytes());
    frame(b'O', &p)
}

fn opt() -> Vec<u8> {
    enc(Command::OptNeg(OptNeg::POSTFIX_3))
}

fn conn() -> Vec<u8> {
    enc(Command::Connect(Connect {
        hostname: b"client.example.net",
        family: Family::Inet,
        port: 4567,
        address: b"192.0.2.7",
    }))
}

fn mail() -> Vec<u8> {
    enc(Command::Mail(EnvelopeAddr::new(b"<a@example.org>")))
}

fn rcpt() -> Vec<u8> {
    enc(Command::Rcpt(EnvelopeAddr::new(b"<b@example.org>")))
}

fn hdr(name: &[u8], value: &[u8]) -> Vec<u8> {
    enc(Command::Header(Header { name, value }))
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// What a hostile exchange produced.
#[derive(Debug)]
struct Outcome {
    port: u16,
    /// Reply codes received, in order.
    replies: Vec<u8>,
    /// Whether the milter closed the connection.
    closed: bool,
}

/// Connects, writes `bytes`, optionally half-closes, and reads every reply until
/// the milter closes the connection (or 5 s pass).
fn exchange(spec: &SocketSpec, bytes: &[u8], half_close: bool) -> Outcome {
    let SocketSpec::Inet(addr) = spec else {
        unreachable!()
    };
    let mut s = TcpStream::connect(addr).unwrap();
    let port = s.local_addr().unwrap().port();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The milter may close before all of it is written (that is the point).
    let _ = s.write_all(bytes);
    if half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    let mut d = FrameDecoder::new();
    d.push(&got);
    let mut replies = Vec::new();
    while let Some(f) = d.next_frame().expect("milter sent a malformed frame") {
        replies.push(f.code);
    }
    assert_eq!(d.buffered(), 0, "milter sent a partial frame: {got:?}");
    Outcome {
        port,
        replies,
        closed,
    }
}

/// Sends `bytes`, expects the connection closed, the replies given, and a log line
/// containing `needle`; returns the milter's handler calls on that connection.
fn refused(
    fx: &Fixture,
    what: &str,
    bytes: &[u8],
    replies: &[u8],
    needle: &str,
) -> Vec<&'static str> {
    let out = exchange(&fx.server.spec, bytes, false);
    assert!(out.closed, "{what}: connection left open");
    assert_eq!(
        out.replies,
        replies,
        "{what}: replies {:?}",
        String::from_utf8_lossy(&out.replies)
    );
    expect_log(out.port, needle);
    let ev = fx.events.of(out.port);
    assert_eq!(
        ev.iter().filter(|e| **e == "close").count(),
        1,
        "{what}: close handler exactly once: {ev:?}"
    );
    assert_eq!(ev.last(), Some(&"close"), "{what}: {ev:?}");
    ev
}

// ---------------------------------------------------------------------------
// Length fields
// ---------------------------------------------------------------------------

#[test]
fn length_field_zero_is_a_protocol_error() {
    watchdog(Duration::from_secs(30), || {
        let fx = Fixture::new();
        // Before negotiation, and inside a message (the next byte must never be
        // taken as a code).
        refused(
            &fx,
            "len 0 first",
            &[0, 0, 0, 0, b'O'],
            b"",
            "packet with length 0",
        );
        let ev = refused(
            &fx,
            "len 0 in a message",
            &cat(&[&opt(), &conn(), &mail(), &[0, 0, 0, 0], &frame(b'N', b"")]),
            b"Occ",
            "packet with length 0",
        );
        assert_eq!(ev, ["connect", "mail", "abort", "close"]);
        fx.finish();
    });
}

#[test]
fn length_field_one_for_commands_that_need_a_payload() {
    watchdog(Duration::from_secs(30), || {
        let fx = Fixture::new();
        refused(&fx, "O", &frame(b'O', b""), b"", "'O' packet too short");
        let pre: &[(u8, &[u8], &[u8], &str)] = &[
            (b'D', b"", b"O", "'D' packet too short"),
            (b'C', b"", b"O", "'C' packet too short"),
            (b'U', b"", b"O", "'U' packet too short"),
            (b'H', &conn(), b"Oc", "'H' packet too short"),
            (b'M', &conn(), b"Oc", "'M' packet too short"),
            (
                b'R',
                &cat(&[&conn(), &mail()]),
                b"Occ",
                "'R' packet too short",
            ),
            (
                b'L',
                &cat(&[&conn(), &mail(), &rcpt(), &frame(b'T', b"")]),
                b"Occcc",
                "'L' packet too short",
            ),
            (
                b'B',
                &cat(&[&conn(), &mail(), &rcpt(), &frame(b'N', b"")]),
                b"Occcc",
                "'B' packet too short",
            ),
        ];
        for (code, before, replies, needle) in pre {
            let bytes = cat(&[&opt(), before, &frame(*code, b"")]);
            let ev = refused(
                &fx,
                &format!("empty {}", *code as char),
                &bytes,
                replies,
                needle,
            );
            let in_message = before.windows(5).any(|w| w == &mail()[..5]);
            assert_eq!(
                ev.contains(&"abort"),
                in_message,
                "{}: {ev:?}",
                *code as char
            );
        }
        // Length 1 is normal for A E K N Q T.
        let mut mta = Mta::connect(&fx.server.spec);
        mta.message_until_eom();
        assert_eq!(mta.eom().decision, Decision::Continue);
        mta.send_only(Command::Abort);
        mta.send_only(Command::QuitNewConnection);
        mta.connect_stage("h", "192.0.2.1", 25);
        mta.send_only(Command::Quit);
        assert!(mta.closed_by_milter(Duration::from_secs(5)));
        fx.finish();
    });
}

#[test]
fn length_fields_at_and_just_over_the_maximum() {
    watchdog(Duration::from_secs(60), || {
        let fx = Fixture::new();
        let max = milter_blocking::milter_core::limits::DEFAULT_MAX_PAYLOAD;
        // A header whose payload is exactly the maximum is accepted.
        let value = vec![b'v'; max - b"Big\0".len() - 1];
        let at = cat(&[&opt(), &conn(), &mail(), &rcpt(), &hdr(b"Big", &value)]);
        let out = exchange(&fx.server.spec, &at, true);
        assert_eq!(out.replies, b"Occcc", "payload of exactly {max} bytes");
        // One byte more is refused from the length field alone: send only the
        // prefix and the code, nothing of the payload.
        let over = ((max + 2) as u32).to_be_bytes();
        let bytes = cat(&[&opt(), &conn(), &over, b"L"]);
        let ev = refused(
            &fx,
            "max + 1",
            &bytes,
            b"Oc",
            &format!(
                "packet announces a {}-byte payload, above the limit of {max} bytes",
                max + 1
            ),
        );
        assert_eq!(ev, ["connect", "close"]);
        fx.finish();

        // A configured limit (libmilter's 65535) is honoured the same way.
        let fx = Fixture::with(|b| b.max_payload(65535));
        let ok = cat(&[
            &opt(),
            &conn(),
            &mail(),
            &rcpt(),
            &hdr(b"H", &vec![b'x'; 65535 - 3]),
        ]);
        assert_eq!(exchange(&fx.server.spec, &ok, true).replies, b"Occcc");
        let big = cat(&[
            &opt(),
            &conn(),
            &mail(),
            &rcpt(),
            &hdr(b"H", &vec![b'x'; 65535 - 2]),
        ]);
        let ev = refused(
            &fx,
            "65536",
            &big,
            b"Occc",
            "packet announces a 65536-byte payload, above the limit of 65535 bytes",
        );
        assert_eq!(ev, ["connect", "mail", "abort", "close"]);
        fx.finish();
    });
}

#[test]
fn length_field_4_gib_minus_1() {
    watchdog(Duration::from_secs(30), || {
        let fx = Fixture::new();
        for prefix in [opt(), cat(&[&opt(), &conn(), &mail()])] {
            let bytes = cat(&[&prefix, &[0xff, 0xff, 0xff, 0xff], b"B", &[b'x'; 100]]);
            let out = exchange(&fx.server.spec, &bytes, false);
            assert!(out.closed);
            expect_log(
                out.port,
                "packet announces a 4294967294-byte payload, above the limit",
            );
            assert_eq!(fx.events.count(out.port, "close"), 1);
        }
        fx.finish();
    });
}

#[test]
fn a_length_that_promises_more_bytes_than_ever_arrive() {
    watchdog(Duration::from_secs(30), || {
        let fx = Fixture::with(|b| b.read_timeout(Duration::from_millis(400)));
        // 1 MiB - 1 announced, 10 bytes sent, then end of input: the milter
        // reports the half packet; abort and close run.
        let short = cat(&[
            &opt(),
            &conn(),
            &mail(),
            &rcpt(),
            &frame(b'T', b""),
            &0x0010_0000u32.to_be_bytes(),
            b"L0123456789",
        ]);
        let out = exchange(&fx.server.spec, &short, true);
        assert!(out.closed);
        assert_eq!(out.replies, b"Occcc");
        expect_log(
            out.port,
            "MTA closed the connection in the middle of a packet (15 bytes buffered)",
        );
        assert_eq!(
            fx.events.of(out.port),
            ["connect", "mail", "abort", "close"]
        );

        // The same, but the MTA stays silent: the read timeout ends it.
        let started = Instant::now();
        let out = exchange(&fx.server.spec, &short, false);
        assert!(out.closed);
        assert!(started.elapsed() >= Duration::from_millis(350));
        expect_log(
            out.port,
            "no command from the MTA for 400ms*at data*closing",
        );
        assert_eq!(
            fx.events.of(out.port),
            ["connect", "mail", "abort", "close"]
        );
        fx.finish();
    });
}

// ---------------------------------------------------------------------------
// Truncation at every byte offset of a real session
// ---------------------------------------------------------------------------

#[test]
fn truncated_at_every_byte_offset_of_a_real_session() {
    watchdog(Duration::from_secs(120), || {
        let fx = Fixture::new();
        // (packet, reply code owed, whether a message is open after it)
        let mut macros_c = Vec::new();
        milter_blocking::milter_core::MacroDef::encode_pairs(
            &mut macros_c,
            b'C',
            [
                (&b"j"[..], &b"mx.example.org"[..]),
                (b"{daemon_name}", b"smtpd"),
            ],
        );
        let mut macros_m = Vec::new();
        milter_blocking::milter_core::MacroDef::encode_pairs(
            &mut macros_m,
            b'M',
            [(&b"{i}"[..], &b"4QXYZ1"[..])],
        );
        let helo = enc(Command::Helo(b"client.example.net"));
        let body = enc(Command::Body(b"Hello,\r\nthis is the body.\r\n"));
        let packets: Vec<(Vec<u8>, Option<u8>, bool)> = vec![
            (opt(), Some(b'O'), false),
            (macros_c, None, false),
            (conn(), Some(b'c'), false),
            (helo, Some(b'c'), false),
            (macros_m, None, false),
            (
                enc(Command::Mail(EnvelopeAddr {
                    address: b"<a@example.org>",
                    args_raw: b"SIZE=100\0BODY=8BITMIME\0",
                })),
                Some(b'c'),
                true,
            ),
            (rcpt(), Some(b'c'), true),
            (frame(b'T', b""), Some(b'c'), true),
            (hdr(b"From", b"a@example.org"), Some(b'c'), true),
            (hdr(b"Subject", b"truncation"), Some(b'c'), true),
            (frame(b'N', b""), Some(b'c'), true),
            (body, Some(b'c'), true),
            (frame(b'E', b""), Some(b'c'), false),
            (frame(b'A', b""), None, false),
            (frame(b'Q', b""), None, false),
        ];
        let wire: Vec<u8> = packets.iter().flat_map(|p| p.0.clone()).collect();
        for cut in 0..wire.len() {
            // Which packets are complete, and where the cut falls.
            let mut at = 0;
            let mut replies = Vec::new();
            let mut in_message = false;
            let mut partial = 0;
            for (bytes, reply, open) in &packets {
                if at + bytes.len() <= cut {
                    replies.extend(*reply);
                    in_message = *open;
                    at += bytes.len();
                } else {
                    partial = cut - at;
                    break;
                }
            }
            let out = exchange(&fx.server.spec, &wire[..cut], true);
            assert!(out.closed, "cut at {cut}");
            assert_eq!(
                out.replies,
                replies,
                "cut at {cut}: {:?}",
                String::from_utf8_lossy(&out.replies)
            );
            if partial > 0 {
                expect_log(
                    out.port,
                    &format!("in the middle of a packet ({partial} bytes buffered)"),
                );
            }
            let ev = fx.events.of(out.port);
            assert_eq!(ev.last(), Some(&"close"), "cut at {cut}: {ev:?}");
            assert_eq!(
                fx.events.count(out.port, "close"),
                1,
                "cut at {cut}: {ev:?}"
            );
            assert_eq!(
                fx.events.count(out.port, "abort"),
                usize::from(in_message),
                "cut at {cut}: {ev:?}"
            );
        }
        // The whole session, for reference: no warning at all.
        let out = exchange(&fx.server.spec, &wire, false);
        assert!(out.closed);
        assert_eq!(out.replies, b"Occcccccccc");
        fx.finish();
    });
}

// ---------------------------------------------------------------------------
// Unknown and out-of-order commands
// ---------------------------------------------------------------------------

#[test]
fn unknown_command_codes() {
    watchdog(Duration::from_secs(30), || {
        let fx = Fixture::new();
        for code in [b'Z', b'z', b'h', b'c', 0x00, 0x01, 0x7f, 0x80, 0xff] {
            let shown = if code.is_ascii_graphic() {
                format!("'{}'", code as char)
            } else {
                format!("0x{code:02x}")
            };
            refused(
                &fx,
                "before negotiation",
                &frame(code, b"xyz"),
                b"",
                &format!("command {shown} not allowed before negotiation"),
            );
            refused(
                &fx,
                "in a session",
                &cat(&[&opt(), &conn(), &frame(code, b"")]),
                b"Oc",
                &format!("unknown command code {shown}"),
            );
            let ev = refused(
                &fx,
                "in a message",
                &cat(&[&opt(), &conn(), &mail(), &frame(code, b"\0\0\0")]),
                b"Occ",
                &format!("unknown command code {shown}"),
            );
            assert_eq!(ev, ["connect", "mail", "abort", "close"]);
        }
        fx.finish();
    });
}

#[test]
fn every_command_out_of_order() {
    watchdog(Duration::from_secs(60), || {
        let fx = Fixture::new();
        let t = frame(b'T', b"");
        let n = frame(b'N', b"");
        let e = frame(b'E', b"");
        let b = enc(Command::Body(b"x"));
        let h = enc(Command::Helo(b"h"));
        let k = frame(b'K', b"");
        let unk = enc(Command::Unknown(b"XFOO"));
        let session = cat(&[&opt(), &conn()]);
        let msg = cat(&[&session, &mail(), &rcpt(), &t]);
        // (what, bytes, replies before the bad command, log text, message open)
        type Case<'a> = (&'a str, Vec<u8>, &'a [u8], &'a str, bool);
        let cases: Vec<Case<'_>> = vec![
            (
                "connect before O",
                conn(),
                b"",
                "command 'C' not allowed before negotiation",
                false,
            ),
            (
                "helo before O",
                h.clone(),
                b"",
                "command 'H' not allowed before negotiation",
                false,
            ),
            (
                "second O",
                cat(&[&session, &opt()]),
                b"Oc",
                "command 'O' not allowed after negotiation",
                false,
            ),
            (
                "second O in a message",
                cat(&[&msg, &opt()]),
                b"Occcc",
                "command 'O' not allowed after negotiation",
                true,
            ),
            (
                "second C",
                cat(&[&session, &conn()]),
                b"Oc",
                "command 'C' not allowed outside a message",
                false,
            ),
            (
                "C in a message",
                cat(&[&msg, &conn()]),
                b"Occcc",
                "command 'C' not allowed after DATA",
                true,
            ),
            (
                "helo before connect",
                cat(&[&opt(), &h]),
                b"O",
                "command 'H' not allowed before connect",
                false,
            ),
            (
                "mail before connect",
                cat(&[&opt(), &mail()]),
                b"O",
                "command 'M' not allowed before connect",
                false,
            ),
            (
                "rcpt before mail",
                cat(&[&session, &rcpt()]),
                b"Oc",
                "command 'R' not allowed outside a message",
                false,
            ),
            (
                "data before mail",
                cat(&[&session, &t]),
                b"Oc",
                "command 'T' not allowed outside a message",
                false,
            ),
            (
                "header before mail",
                cat(&[&session, &hdr(b"a", b"b")]),
                b"Oc",
                "command 'L' not allowed outside a message",
                false,
            ),
            (
                "eoh before mail",
                cat(&[&session, &n]),
                b"Oc",
                "command 'N' not allowed outside a message",
                false,
            ),
            (
                "body before mail",
                cat(&[&session, &b]),
                b"Oc",
                "command 'B' not allowed outside a message",
                false,
            ),
            (
                "eom with no mail",
                cat(&[&session, &e]),
                b"Oc",
                "command 'E' not allowed outside a message",
                false,
            ),
            (
                "rcpt after data",
                cat(&[&msg, &rcpt()]),
                b"Occcc",
                "command 'R' not allowed after DATA",
                true,
            ),
            (
                "header after eoh",
                cat(&[&msg, &n, &hdr(b"a", b"b")]),
                b"Occccc",
                "command 'L' not allowed after end of headers",
                true,
            ),
            (
                "data after a header",
                cat(&[&msg, &hdr(b"a", b"b"), &t]),
                b"Occccc",
                "command 'T' not allowed after a header",
                true,
            ),
            (
                "header after body",
                cat(&[&msg, &n, &b, &hdr(b"a", b"b")]),
                b"Occcccc",
                "command 'L' not allowed after a body chunk",
                true,
            ),
            (
                "eoh after body",
                cat(&[&msg, &n, &b, &n]),
                b"Occcccc",
                "command 'N' not allowed after a body chunk",
                true,
            ),
            (
                "body after eom",
                cat(&[&msg, &n, &b, &e, &b]),
                b"Occccccc",
                "command 'B' not allowed outside a message",
                false,
            ),
            (
                "eom twice",
                cat(&[&msg, &e, &e]),
                b"Occccc",
                "command 'E' not allowed outside a message",
                false,
            ),
            (
                "header after the milter accepted the message",
                cat(&[&msg, &hdr(b"X-Accept", b"1"), &hdr(b"a", b"b")]),
                b"Occcca",
                "command 'L' not allowed after the milter's final decision",
                false,
            ),
            (
                "data after unknown outside a message",
                cat(&[&session, &unk, &t]),
                b"Occ",
                "command 'T' not allowed outside a message",
                false,
            ),
        ];
        for (what, bytes, replies, needle, open) in cases {
            let ev = refused(&fx, what, &bytes, replies, needle);
            assert_eq!(ev.contains(&"abort"), open, "{what}: {ev:?}");
        }
        // After K the next session must start with C. (How often the close
        // handler runs here is milter-core's business: see milter-core/tests/pair.rs
        // eof_after_quit_new_connection_does_not_close_twice.)
        let out = exchange(&fx.server.spec, &cat(&[&session, &k, &mail()]), false);
        assert!(out.closed);
        assert_eq!(out.replies, b"Oc");
        expect_log(out.port, "command 'M' not allowed before connect");
        fx.finish();
    });
}

// ---------------------------------------------------------------------------
// Malformed payloads
// ---------------------------------------------------------------------------

#[test]
fn missing_nul_terminators() {
    watchdog(Duration::from_secs(30), || {
        let fx = Fixture::new();
        let session = cat(&[&opt(), &conn()]);
        let msg = cat(&[&session, &mail(), &rcpt(), &frame(b'T', b"")]);
        let cases: Vec<(&str, Vec<u8>, &[u8], &str)> = vec![
            (
                "helo",
                cat(&[&session, &frame(b'H', b"client")]),
                b"Oc",
                "'H' packet: HELO name is not NUL-terminated",
            ),
            (
                "mail",
                cat(&[&session, &frame(b'M', b"<a@b>")]),
                b"Oc",
                "'M' packet: address is not NUL-terminated",
            ),
            (
                "rcpt",
                cat(&[&session, &mail(), &frame(b'R', b"<a@b>")]),
                b"Occ",
                "'R' packet: address is not NUL-terminated",
            ),
            (
                "header without NUL",
                cat(&[&msg, &frame(b'L', b"Subject")]),
                b"Occcc",
                "'L' packet: header name is not NUL-terminated",
            ),
            (
                "header with one string",
                cat(&[&msg, &frame(b'L', b"Subject\0")]),
                b"Occcc",
                "'L' packet too short: header value missing",
            ),
            (
                "header value without NUL",
                cat(&[&msg, &frame(b'L', b"Subject\0hi")]),
                b"Occcc",
                "'L' packet: header value is not NUL-terminated",
            ),
            (
                "unknown",
                cat(&[&session, &frame(b'U', b"XFOO")]),
                b"Oc",
                "'U' packet: SMTP command is not NUL-terminated",
            ),
            (
                "connect host name",
                cat(&[&opt(), &frame(b'C', b"client.example.net")]),
                b"O",
                "'C' packet: host name is not NUL-terminated",
            ),
            (
                "connect address",
                cat(&[&opt(), &frame(b'C', b"h\x004\x00\x19192.0.2.1")]),
                b"O",
                "'C' packet: address is not NUL-terminated",
            ),
        ];
        for (what, bytes, replies, needle) in cases {
            refused(&fx, what, &bytes, replies, needle);
        }
        fx.finish();
    });
}

#[test]
fn malformed_connect_packets() {
    watchdog(Duration::from_secs(30), || {
        let fx = Fixture::new();
        let c = |payload: &[u8]| cat(&[&opt(), &frame(b'C', payload)]);
        let long_path = [b"h\0L\0\0".as_slice(), &[b'p'; 109], b"\0"].concat();
        let long_v4 = [b"h\x004\x00\x19".as_slice(), &[b'1'; 300], b"\0"].concat();
        let long_v6 = [b"h\x006\x00\x19IPv6:".as_slice(), &[b'a'; 4000], b"\0"].concat();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "family X",
                c(b"h\0X\x00\x19192.0.2.1\0"),
                "connect packet with unknown address family 'X'",
            ),
            (
                "family 0x00",
                c(b"h\0\0\x00\x19192.0.2.1\0"),
                "connect packet with unknown address family 0x00",
            ),
            (
                "family 5",
                c(b"h\x005\x00\x19192.0.2.1\0"),
                "unknown address family '5'",
            ),
            (
                "no family",
                c(b"h\0"),
                "'C' packet too short: family missing",
            ),
            (
                "one port byte",
                c(b"h\x004\x00"),
                "'C' packet too short: port missing",
            ),
            (
                "no address",
                c(b"h\x004\x00\x19"),
                "'C' packet too short: address missing",
            ),
            (
                "empty IPv4 address",
                c(b"h\x004\x00\x19\0"),
                "address does not parse for family '4'",
            ),
            (
                "empty IPv6 address",
                c(b"h\x006\x00\x19\0"),
                "address does not parse for family '6'",
            ),
            (
                "bad IPv4 text",
                c(b"h\x004\x00\x19999.0.2.1\0"),
                "address does not parse for family '4'",
            ),
            (
                "IPv4 with a port in it",
                c(b"h\x004\x00\x19192.0.2.1:25\0"),
                "address does not parse for family '4'",
            ),
            (
                "overlong IPv4",
                c(&long_v4),
                "address does not parse for family '4'",
            ),
            (
                "overlong IPv6",
                c(&long_v6),
                "address does not parse for family '6'",
            ),
            (
                "overlong unix path",
                c(&long_path),
                "address does not parse for family 'L'",
            ),
            (
                "non-UTF-8 address",
                c(b"h\x004\x00\x19\xff\xfe\0"),
                "address does not parse for family '4'",
            ),
        ];
        for (what, bytes, needle) in cases {
            let ev = refused(&fx, what, &bytes, b"O", needle);
            assert_eq!(ev, ["close"], "{what}");
        }
        // Accepted: family U with nothing after it, an empty unix path, port 0,
        // port 65535, a 108-byte path.
        let path108 = [b"h\0L\0\0".as_slice(), &[b'p'; 108], b"\0"].concat();
        for ok in [
            c(b"h\0U"),
            c(b"h\0L\0\0\0"),
            c(b"h\x004\x00\x00192.0.2.1\0"),
            c(b"h\x004\xff\xff192.0.2.1\0"),
            c(b"h\x006\x00\x19IPv6:2001:db8::1\0"),
            c(&path108),
        ] {
            let out = exchange(&fx.server.spec, &ok, true);
            assert_eq!(out.replies, b"Oc");
            assert_eq!(fx.events.of(out.port), ["connect", "close"]);
        }
        fx.finish();
    });
}

// ---------------------------------------------------------------------------
// Negotiation
// ---------------------------------------------------------------------------

/// Reads the O reply of an offer: (version, actions, protocol).
fn negotiate_raw(spec: &SocketSpec, bytes: &[u8]) -> Option<(u32, u32, u32, u16)> {
    let SocketSpec::Inet(addr) = spec else {
        unreachable!()
    };
    let mut s = TcpStream::connect(addr).unwrap();
    let port = s.local_addr().unwrap().port();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut d = FrameDecoder::new();
    loop {
        if let Some(f) = d.next_frame().unwrap() {
            assert_eq!(f.code, b'O');
            let p = f.payload;
            let u = |i: usize| u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
            return Some((u(0), u(4), u(8), port));
        }
        let n = match s.read(d.spare()) {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        d.commit(n);
    }
}

#[test]
fn negotiation_versions() {
    watchdog(Duration::from_secs(30), || {
        let fx = Fixture::new();
        for v in [0u32, 1] {
            let out = exchange(&fx.server.spec, &offer(v, 0x1ff, 0x1f_ffff), false);
            assert!(out.closed && out.replies.is_empty(), "version {v}: {out:?}");
            expect_log(
                out.port,
                &format!(
                    "negotiation failed: MTA offers protocol version {v}; at least 2 is needed"
                ),
            );
        }
        for (v, answer) in [
            (2u32, 2u32),
            (3, 3),
            (4, 4),
            (5, 5),
            (6, 6),
            (7, 6),
            (0xffff_ffff, 6),
        ] {
            let (got, actions, protocol, _) =
                negotiate_raw(&fx.server.spec, &offer(v, 0x1ff, 0x1f_ffff))
                    .unwrap_or_else(|| panic!("version {v} refused"));
            assert_eq!(got, answer, "offer {v}");
            assert_eq!(actions & !0x1ff, 0);
            assert_eq!(protocol & !0x1f_ffff, 0);
        }
        // A full conversation at the highest odd version.
        let mut mta = Mta::connect_offer(
            &fx.server.spec,
            OptNeg {
                version: 0xffff_ffff,
                ..OptNeg::POSTFIX_3
            },
        )
        .unwrap();
        mta.message_until_eom();
        assert_eq!(mta.eom().decision, Decision::Continue);
        // Payload shorter than 12 bytes, and longer (extra ignored).
        refused(
            &fx,
            "short O",
            &frame(b'O', &[0, 0, 0, 6]),
            b"",
            "'O' packet too short",
        );
        let long = cat(&[&offer(6, 0x1ff, 0x1f_ffff)[5..], &[0xAA; 20]]);
        assert!(negotiate_raw(&fx.server.spec, &frame(b'O', &long)).is_some());
        fx.finish();
    });
}

#[test]
fn unknown_action_and_protocol_bits_are_never_echoed() {
    watchdog(Duration::from_secs(30), || {
        let fx = Fixture::new();
        for (a, p) in [
            (0xffff_ffffu32, 0xffff_ffffu32),
            (0xffff_fe00, 0xffe0_0000),
            (0, 0),
        ] {
            let (v, actions, protocol, _) =
                negotiate_raw(&fx.server.spec, &offer(6, a, p)).unwrap();
            assert_eq!(v, 6);
            assert_eq!(
                actions & !a.max(0x0f),
                0,
                "actions 0x{actions:x} for offer 0x{a:x}"
            );
            assert_eq!(
                actions & !0x1ff,
                0,
                "unknown action bits echoed: 0x{actions:x}"
            );
            assert_eq!(
                protocol & !0x1f_ffff,
                0,
                "internal/unknown bits echoed: 0x{protocol:x}"
            );
        }
        // The conversation works with an offer full of unknown bits.
        let mut mta = Mta::connect_offer(
            &fx.server.spec,
            OptNeg {
                version: 6,
                actions: Actions::from_bits_retain(0xffff_ffff),
                protocol: ProtocolOpts::from_bits_retain(0xffe0_0000 | 0x1f_ffff),
            },
        )
        .unwrap();
        mta.message_until_eom();
        assert_eq!(mta.eom().decision, Decision::Continue);
        fx.finish();
    });
}

#[test]
fn an_mta_offering_less_than_the_milter_requires() {
    watchdog(Duration::from_secs(30), || {
        logs();
        let server = TestServer::start(Demanding::default);
        let healthy = Healthy::start(&server.spec);
        // Actions 0x3F (Sendmail 8.13 era) lack CHGFROM and ADDRCPT_PAR.
        for (a, needle) in [
            (0x3fu32, "milter requires actions the MTA does not offer"),
            (0, "milter requires actions the MTA does not offer"),
            (0x17f, "ADD_RCPT_WITH_ARGS"),
        ] {
            let out = exchange(&server.spec, &offer(6, a, 0x1f_ffff), false);
            assert!(out.closed && out.replies.is_empty(), "{out:?}");
            expect_log(out.port, needle);
        }
        // The full offer works.
        let mut ok = Mta::connect(&server.spec);
        ok.message_until_eom();
        assert_eq!(ok.eom().decision, Decision::Continue);
        assert!(healthy.finish() >= 3);

        let server = TestServer::start(NeedsSkip::default);
        let out = exchange(&server.spec, &offer(6, 0x1ff, 0x3ff), false);
        assert!(out.closed && out.replies.is_empty(), "{out:?}");
        expect_log(
            out.port,
            "milter requires protocol options the MTA does not offer",
        );
        let mut ok = Mta::connect(&server.spec);
        ok.message_until_eom();
        assert_eq!(ok.eom().decision, Decision::Continue);
    });
}

/// A peer that is not an MTA (an HTTP health check, an SMTP client, a TLS
/// handshake pointed at the milter port): the log says what it looks like.
#[test]
fn a_peer_that_is_not_an_mta_is_named_in_the_log() {
    watchdog(Duration::from_secs(30), || {
        let fx = Fixture::new();
        for (bytes, looks_like) in [
            (
                &b"POST /milter HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                "an HTTP request",
            ),
            (b"EHLO client.example\r\n", "SMTP"),
            (
                &[0x16, 3, 1, 0, 0xa5, 1, 0, 0, 0xa1, 3, 3][..],
                "a TLS handshake",
            ),
            (b"hello milter, are you there?\n", "text"),
        ] {
            let out = exchange(&fx.server.spec, bytes, false);
            assert!(out.closed);
            assert!(out.replies.is_empty());
            expect_log(
                out.port,
                &format!(
                    "packet announces a *-byte payload*look like {looks_like}: the peer does \
                     not speak the milter protocol"
                ),
            );
        }
        fx.finish();
    });
}
