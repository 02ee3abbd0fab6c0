//! A handler panics, or returns an error, at each stage in turn: that connection
//! answers the configured failure status (where a reply is due) and closes, a
//! clear line is logged, and every other connection carries on. Also: code of the
//! user's that runs outside the stage handlers (the factory, `reset_message`,
//! hooks) must not cost the server a thread or a descriptor when it panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{watchdog, Capture, Mta, TestServer};
use milter_blocking::milter_core::client::Decision;
use milter_blocking::milter_core::frame::FrameDecoder;
use milter_blocking::milter_core::{Command, Connect, EnvelopeAddr, Family, Header, OptNeg};
use milter_blocking::{
    Actions, ConnectAddr, ConnectionInfo, Context, EomContext, HandlerError, HandlerResult, Hooks,
    Milter, ProtocolOpts, SocketSpec, Spec, Stages, Status,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Log capture
// ---------------------------------------------------------------------------

fn logs() -> &'static Capture {
    common::capture_logs(log::LevelFilter::Info, true)
}

/// Whether a log line is about the connection from local port `port`.
fn mentions_port(line: &str, port: u16) -> bool {
    let needle = format!("127.0.0.1:{port}");
    line.match_indices(&needle).any(|(i, _)| {
        !line[i + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// Waits for a WARN or ERROR line about `port` containing `needle`.
fn expect_log(port: u16, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (found, mine) = {
            let lines = logs().0.lock().unwrap_or_else(|p| p.into_inner());
            let mine: Vec<String> = lines
                .iter()
                .filter(|l| mentions_port(l, port))
                .cloned()
                .collect();
            (mine.iter().find(|l| l.contains(needle)).cloned(), mine)
        };
        if let Some(l) = found {
            assert!(l.starts_with("WARN") || l.starts_with("ERROR"), "{l}");
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needle:?} for port {port}: {mine:#?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------
// The faulty milter: the connect host name says where and how it fails
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Panic,
    Error,
}

/// Offer bits (unknown to the protocol, kept by the decoder) that make the
/// negotiate hook fail.
const NEGOTIATE_PANIC: u32 = 0x0100_0000;
const NEGOTIATE_ERROR: u32 = 0x0200_0000;

#[derive(Default)]
struct Faulty {
    plan: Option<(String, How)>,
}

impl Faulty {
    fn at(&self, stage: &str) -> HandlerResult {
        match &self.plan {
            Some((s, How::Panic)) if s == stage => panic!("boom at {stage}"),
            Some((s, How::Error)) if s == stage => {
                Err(HandlerError::msg(format!("failure at {stage}")))
            }
            _ => Ok(Status::Continue),
        }
    }
}

impl milter_blocking::Declaration for Faulty {
    const ACTIONS: Actions = Actions::ADD_HEADER;
}
impl milter_blocking::action::AddHeader for Faulty {}

#[milter_blocking::handlers]
impl Milter for Faulty {
    fn negotiate(&mut self, offer: &OptNeg, spec: &mut Spec) -> HandlerResult<()> {
        // Every stage, with no reply expected from none.
        spec.handled = Stages::all();
        spec.no_reply = Stages::empty();
        let bits = offer.protocol.bits();
        if bits & NEGOTIATE_PANIC != 0 {
            panic!("boom at negotiate");
        }
        if bits & NEGOTIATE_ERROR != 0 {
            return Err(HandlerError::msg("failure at negotiate"));
        }
        Ok(())
    }
    fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> HandlerResult {
        // "fail.STAGE.panic" or "fail.STAGE.error"
        let host = String::from_utf8_lossy(host);
        let parts: Vec<&str> = host.split('.').collect();
        if let ["fail", stage, how] = parts[..] {
            let how = if how == "panic" {
                How::Panic
            } else {
                How::Error
            };
            self.plan = Some((stage.to_string(), how));
        }
        self.at("connect")
    }
    fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> HandlerResult {
        self.at("helo")
    }
    fn mail(&mut self, _: &mut Context<'_>, _: &EnvelopeAddr<'_>) -> HandlerResult {
        self.at("mail")
    }
    fn rcpt(&mut self, _: &mut Context<'_>, _: &EnvelopeAddr<'_>) -> HandlerResult {
        self.at("rcpt")
    }
    fn data(&mut self, _: &mut Context<'_>) -> HandlerResult {
        self.at("data")
    }
    fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> HandlerResult {
        self.at("header")
    }
    fn eoh(&mut self, _: &mut Context<'_>) -> HandlerResult {
        self.at("eoh")
    }
    fn body(&mut self, _: &mut Context<'_>, chunk: &[u8]) -> HandlerResult {
        if chunk == b"last chunk in E" {
            return self.at("body-in-eom");
        }
        self.at("body")
    }
    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        if matches!(&self.plan, Some((s, _)) if s == "eom-after-mods") {
            ctx.add_header("X-Before-Failure", "1")?;
        }
        self.at("eom-after-mods")?;
        self.at("eom")
    }
    fn unknown(&mut self, _: &mut Context<'_>, _: &[u8]) -> HandlerResult {
        self.at("unknown")
    }
    fn abort(&mut self, _: &mut Context<'_>) -> HandlerResult<()> {
        self.at("abort").map(|_| ())
    }
    fn close(&mut self, _: &mut Context<'_>) -> HandlerResult<()> {
        self.at("close").map(|_| ())
    }
}

#[derive(Default)]
struct FailureHooks {
    failed: AtomicUsize,
    panicked: AtomicUsize,
}

impl Hooks for FailureHooks {
    fn handler_failed(
        &self,
        _: &ConnectionInfo,
        _: Option<milter_blocking::Stage>,
        panicked: bool,
    ) {
        if panicked {
            self.panicked.fetch_add(1, Ordering::SeqCst);
        } else {
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

// ---------------------------------------------------------------------------
// Wire helpers
// ---------------------------------------------------------------------------

fn enc(cmd: Command<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    cmd.encode(&mut v);
    v
}

fn offer_bytes(extra_protocol: u32) -> Vec<u8> {
    enc(Command::OptNeg(OptNeg {
        protocol: ProtocolOpts::from_bits_retain(ProtocolOpts::V6.bits() | extra_protocol),
        ..OptNeg::POSTFIX_3
    }))
}

/// The packets of a session whose connect host name is `host`, by stage name.
fn script(host: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "connect",
            enc(Command::Connect(Connect {
                hostname: host.as_bytes(),
                family: Family::Inet,
                port: 4000,
                address: b"192.0.2.4",
            })),
        ),
        ("helo", enc(Command::Helo(b"client.example"))),
        ("unknown", enc(Command::Unknown(b"XFOO bar"))),
        (
            "mail",
            enc(Command::Mail(EnvelopeAddr::new(b"<a@example.org>"))),
        ),
        (
            "rcpt",
            enc(Command::Rcpt(EnvelopeAddr::new(b"<b@example.org>"))),
        ),
        ("data", enc(Command::Data)),
        (
            "header",
            enc(Command::Header(Header {
                name: b"Subject",
                value: b"x",
            })),
        ),
        ("eoh", enc(Command::Eoh)),
        ("body", enc(Command::Body(b"body\r\n"))),
        ("eom", enc(Command::Eom(b""))),
    ]
}

/// Sends bytes, reads every reply until the milter closes (or 5 s pass).
fn exchange(spec: &SocketSpec, bytes: &[u8]) -> (u16, Vec<u8>, bool) {
    let SocketSpec::Inet(a) = spec else {
        unreachable!()
    };
    let mut s = TcpStream::connect(a).unwrap();
    let port = s.local_addr().unwrap().port();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
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
    let mut codes = Vec::new();
    while let Some(f) = d.next_frame().unwrap() {
        codes.push(f.code);
    }
    assert_eq!(d.buffered(), 0, "partial frame from the milter");
    (port, codes, closed)
}

// ---------------------------------------------------------------------------
// A healthy MTA next to the failing ones
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
            })
        };
        Healthy {
            stop,
            done,
            thread: Some(thread),
        }
    }

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

// ---------------------------------------------------------------------------
// Each stage in turn
// ---------------------------------------------------------------------------

fn each_stage_in_turn(failure: Status, code: u8) {
    let hooks = Arc::new(FailureHooks::default());
    let server = {
        let hooks = hooks.clone();
        TestServer::with(
            move |b| b.failure_status(failure).hooks(hooks),
            Faulty::default,
        )
    };
    let healthy = Healthy::start(&server.spec);
    let name = if code == b't' { "tempfail" } else { "reject" };
    let mut expected_failures = 0;
    for how in ["panic", "error"] {
        let verb = if how == "panic" {
            "panicked: boom at"
        } else {
            "failed: failure at"
        };
        // Stages that owe a reply: the failure status, then the close.
        let stages = [
            "connect", "helo", "unknown", "mail", "rcpt", "data", "header", "eoh", "body", "eom",
        ];
        for (i, stage) in stages.iter().enumerate() {
            let host = format!("fail.{stage}.{how}");
            let mut bytes = offer_bytes(0);
            for (_, p) in script(&host).iter().take(i + 1) {
                bytes.extend_from_slice(p);
            }
            let (port, replies, closed) = exchange(&server.spec, &bytes);
            assert!(closed, "{stage} {how}: connection left open");
            let mut want = vec![b'O'];
            want.extend(std::iter::repeat_n(b'c', i));
            want.push(code);
            assert_eq!(
                replies,
                want,
                "{stage} {how}: {:?}",
                String::from_utf8_lossy(&replies)
            );
            let line = expect_log(port, &format!("{stage} handler {verb} {stage}"));
            assert!(
                line.contains(&format!("answering {name} and closing")),
                "{line}"
            );
            expected_failures += 1;
        }
        // A last body chunk inside E, and an end of message that made a
        // modification before failing (the modification was already due; the
        // final answer is the failure status).
        for (stage, extra) in [("body-in-eom", b'c'), ("eom-after-mods", b'h')] {
            let host = format!("fail.{stage}.{how}");
            let mut bytes = offer_bytes(0);
            for (_, p) in script(&host).iter().take(9) {
                bytes.extend_from_slice(p);
            }
            bytes.extend(enc(Command::Eom(if stage == "body-in-eom" {
                b"last chunk in E"
            } else {
                b""
            })));
            let (port, replies, closed) = exchange(&server.spec, &bytes);
            assert!(closed, "{stage} {how}");
            let mut want = vec![b'O'];
            want.extend(std::iter::repeat_n(b'c', 9));
            if extra == b'h' {
                want.push(b'h');
            }
            want.push(code);
            assert_eq!(
                replies,
                want,
                "{stage} {how}: {:?}",
                String::from_utf8_lossy(&replies)
            );
            expect_log(port, &format!("handler {verb} {stage}"));
            expected_failures += 1;
        }
        // Handlers that owe no reply: the connection just closes.
        for (stage, tail) in [
            ("abort", enc(Command::Abort)),
            ("close", enc(Command::QuitNewConnection)),
            ("close", enc(Command::Quit)),
        ] {
            let host = format!("fail.{stage}.{how}");
            let mut bytes = offer_bytes(0);
            for (_, p) in script(&host).iter().take(5) {
                bytes.extend_from_slice(p);
            }
            bytes.extend(tail);
            let (port, replies, closed) = exchange(&server.spec, &bytes);
            assert!(closed, "{stage} {how}");
            assert_eq!(replies, b"Occccc", "{stage} {how}");
            expect_log(port, &format!("{stage} handler {verb} {stage}; closing"));
            expected_failures += 1;
        }
        // The negotiate hook: no reply at all.
        let extra = if how == "panic" {
            NEGOTIATE_PANIC
        } else {
            NEGOTIATE_ERROR
        };
        let (port, replies, closed) = exchange(&server.spec, &offer_bytes(extra));
        assert!(closed && replies.is_empty(), "negotiate {how}: {replies:?}");
        expect_log(port, &format!("negotiate handler {verb} negotiate"));
    }
    assert!(healthy.finish() >= 3);
    // Hooks saw every stage, abort and close failure (negotiate is not reported).
    let seen = hooks.failed.load(Ordering::SeqCst) + hooks.panicked.load(Ordering::SeqCst);
    assert_eq!(seen, expected_failures, "handler_failed hook calls");
    assert_eq!(hooks.panicked.load(Ordering::SeqCst), expected_failures / 2);
    // The server serves on, and holds nothing of the failed connections.
    let mut late = Mta::connect(&server.spec);
    late.message_until_eom();
    assert_eq!(late.eom().decision, Decision::Continue);
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.handle.stats().open != 1 {
        assert!(Instant::now() < deadline, "{:?}", server.handle.stats());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_failing_handler_at_each_stage_answers_tempfail_and_closes_only_its_connection() {
    logs();
    watchdog(Duration::from_secs(60), || {
        each_stage_in_turn(Status::Tempfail, b't')
    });
}

#[test]
fn the_configured_failure_status_is_used_at_each_stage() {
    logs();
    watchdog(Duration::from_secs(60), || {
        each_stage_in_turn(Status::Reject, b'r')
    });
}

/// A handler of a stage negotiated no-reply fails: nothing can be sent, the
/// connection closes.
#[derive(Default)]
struct NoReplyHeaders;

impl milter_blocking::Declaration for NoReplyHeaders {}

#[milter_blocking::handlers]
impl Milter for NoReplyHeaders {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec {
            no_reply: Stages::HEADER,
            ..Spec::ALL_STAGES
        };
    }

    fn header(&mut self, _: &mut Context<'_>, h: &Header<'_>) -> HandlerResult {
        if h.name == b"X-Panic" {
            panic!("boom in a no-reply header handler");
        }
        Ok(Status::Continue)
    }
}

#[test]
fn a_failing_no_reply_handler_closes_without_a_reply() {
    logs();
    watchdog(Duration::from_secs(30), || {
        let server = TestServer::start(NoReplyHeaders::default);
        let healthy = Healthy::start(&server.spec);
        let mut bytes = offer_bytes(0);
        for (_, p) in script("h").iter().take(6) {
            bytes.extend_from_slice(p);
        }
        bytes.extend(enc(Command::Header(Header {
            name: b"X-Panic",
            value: b"1",
        })));
        let (port, replies, closed) = exchange(&server.spec, &bytes);
        assert!(closed);
        assert_eq!(replies, b"Occcccc", "no reply after the header");
        expect_log(
            port,
            "header handler panicked: boom in a no-reply header handler",
        );
        assert!(healthy.finish() >= 3);
    });
}

// ---------------------------------------------------------------------------
// User code outside the stage handlers
// ---------------------------------------------------------------------------

/// Panics in `reset_message` (which `#[derive(Milter)]` builds from the
/// `Default` of `per_message` fields) once its message was answered.
#[derive(Default)]
struct ResetBomb {
    armed: bool,
}

impl milter_blocking::Declaration for ResetBomb {
    fn reset_message(&mut self) {
        if self.armed {
            self.armed = false;
            panic!("boom in reset_message");
        }
    }
}

#[milter_blocking::handlers]
impl Milter for ResetBomb {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec::ALL_STAGES;
    }

    fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
        self.armed = from.address == b"<bomb@example.org>";
        Ok(Status::Continue)
    }
}

#[derive(Default)]
struct OpenBomb(AtomicUsize);

impl Hooks for OpenBomb {
    fn connection_opened(&self, _: &ConnectionInfo) {
        if self.0.fetch_add(1, Ordering::SeqCst) < 3 {
            panic!("boom in a hook");
        }
    }
}

#[derive(Default)]
struct Plain;

impl milter_blocking::Declaration for Plain {}

#[milter_blocking::handlers]
impl Milter for Plain {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec::ALL_STAGES;
    }
}

/// Three connections hit a panic outside a stage handler; each must be closed,
/// and the server (two threads, no queue) must then still serve a healthy MTA.
fn survives_panics_outside_handlers(server: TestServer, bad: impl Fn(&SocketSpec)) {
    for _ in 0..3 {
        bad(&server.spec);
    }
    // The threads must come back: wait until one waits for work (no queue, so a
    // connection arriving before that would be refused, as documented).
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.handle.stats().idle_threads == 0 {
        assert!(
            Instant::now() < deadline,
            "no worker thread came back after the panics: {:?}",
            server.handle.stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(50));
    let stats = server.handle.stats();
    let ok = Mta::connect_offer(&server.spec, OptNeg::POSTFIX_3).map(|mut m| {
        m.message_until_eom();
        m.eom().decision
    });
    assert_eq!(
        ok,
        Ok(Decision::Continue),
        "after 3 panics outside handlers the server no longer serves (stats before: {stats:?})"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.handle.stats().open > 1 {
        assert!(
            Instant::now() < deadline,
            "connections that panicked are still registered: {:?}",
            server.handle.stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_panic_in_reset_message_closes_the_connection_and_frees_its_thread() {
    logs();
    watchdog(Duration::from_secs(60), || {
        let server = TestServer::with(|b| b.max_connections(2).queue(0), ResetBomb::default);
        survives_panics_outside_handlers(server, |spec| {
            let mut m = Mta::connect(spec);
            m.connect_stage("h", "192.0.2.1", 25);
            m.mail("<bomb@example.org>", &[]);
            m.rcpt("<b@example.org>", &[]);
            if let common::Conn::Tcp(s) = &m.conn {
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            }
            let _ = m.try_eom();
            assert!(
                m.closed_by_milter(Duration::from_secs(2)),
                "the connection whose reset_message panicked was never closed"
            );
        });
    });
}

#[test]
fn a_panic_in_the_factory_closes_the_connection_and_frees_its_thread() {
    logs();
    watchdog(Duration::from_secs(60), || {
        let made = Arc::new(AtomicUsize::new(0));
        let server = TestServer::with(
            |b| b.max_connections(2).queue(0),
            move || {
                if made.fetch_add(1, Ordering::SeqCst) < 3 {
                    panic!("boom in the factory");
                }
                Plain
            },
        );
        survives_panics_outside_handlers(server, |spec| {
            let mut m = Mta::open(spec, OptNeg::POSTFIX_3);
            assert!(
                m.closed_by_milter(Duration::from_secs(2)),
                "the connection whose factory call panicked was never closed"
            );
        });
    });
}

#[test]
fn a_panic_in_a_hook_closes_the_connection_and_frees_its_thread() {
    logs();
    watchdog(Duration::from_secs(60), || {
        let server = TestServer::with(
            |b| {
                b.max_connections(2)
                    .queue(0)
                    .hooks(Arc::new(OpenBomb::default()))
            },
            Plain::default,
        );
        survives_panics_outside_handlers(server, |spec| {
            let mut m = Mta::open(spec, OptNeg::POSTFIX_3);
            assert!(
                m.closed_by_milter(Duration::from_secs(2)),
                "the connection whose hook panicked was never closed"
            );
        });
    });
}
