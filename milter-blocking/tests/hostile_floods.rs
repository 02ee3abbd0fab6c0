//! Floods: 100,000 macro packets, 100,000 headers in one message, a 100 MB body
//! in 64 KiB chunks, a 1 MB header value, and lengths that claim far more than
//! is sent. Memory must stay bounded: nothing is allocated for a claimed length
//! before the bytes arrive, and nothing grows with the number of packets.
//!
//! Resident memory is read from `/proc/self/status` (`VmRSS`, and `VmHWM` after
//! resetting it through `/proc/self/clear_refs`); the MTA side of each test runs
//! in the same process, so it streams from small buffers and keeps nothing.
//! The tests of this file run one at a time (a lock), so that the figures belong
//! to one test. Run with `--nocapture` to see them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{watchdog, Capture, Mta, TestServer};
use milter_blocking::milter_core::client::Decision;
use milter_blocking::milter_core::frame::FrameDecoder;
use milter_blocking::milter_core::{
    Command, Connect, EnvelopeAddr, Family, Header, MacroDef, OptNeg,
};
use milter_blocking::{
    ConnectAddr, Context, EomContext, HandlerResult, Milter, SocketSpec, Spec, Status,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Support: one test at a time, memory figures, logs
// ---------------------------------------------------------------------------

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A field of /proc/self/status in KiB.
fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Memory figures around one flood.
struct Mem {
    what: &'static str,
    rss0: u64,
}

impl Mem {
    fn start(what: &'static str) -> Mem {
        // Reset the peak to the current resident size (Linux >= 4.0).
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        Mem {
            what,
            rss0: status_kib("VmRSS"),
        }
    }

    /// Prints and returns (RSS growth, peak growth) in KiB.
    fn end(&self) -> (i64, i64) {
        let rss = status_kib("VmRSS");
        let hwm = status_kib("VmHWM");
        let grow = rss as i64 - self.rss0 as i64;
        let peak = hwm as i64 - self.rss0 as i64;
        eprintln!(
            "[memory] {}: VmRSS {} -> {} KiB ({:+} KiB), VmHWM {} KiB (peak {:+} KiB)",
            self.what, self.rss0, rss, grow, hwm, peak
        );
        (grow, peak)
    }
}

const MIB: i64 = 1024;

fn logs() -> &'static Capture {
    common::capture_logs(log::LevelFilter::Info, false)
}

fn expect_log(port: u16, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    let tag = format!("127.0.0.1:{port}:");
    loop {
        let found = logs()
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|l| l.contains(&tag) && l.contains(needle))
            .cloned();
        if let Some(l) = found {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needle:?} for port {port}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------
// The milter: counts what it sees
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Seen {
    headers: AtomicUsize,
    longest_header: AtomicUsize,
    body_bytes: AtomicU64,
    eoms: AtomicUsize,
    last_j: Mutex<Vec<u8>>,
}

struct Counter(Arc<Seen>);

impl milter_blocking::Declaration for Counter {}

#[milter_blocking::handlers]
impl Milter for Counter {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec::ALL_STAGES;
    }

    fn connect(&mut self, ctx: &mut Context<'_>, _: &[u8], _: ConnectAddr<'_>) -> HandlerResult {
        *self.0.last_j.lock().unwrap() = ctx.macro_value("j").unwrap_or_default().to_vec();
        Ok(Status::Continue)
    }
    fn header(&mut self, _: &mut Context<'_>, h: &Header<'_>) -> HandlerResult {
        self.0.headers.fetch_add(1, Ordering::Relaxed);
        self.0
            .longest_header
            .fetch_max(h.value.len(), Ordering::Relaxed);
        Ok(Status::Continue)
    }
    fn body(&mut self, _: &mut Context<'_>, chunk: &[u8]) -> HandlerResult {
        self.0
            .body_bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Ok(Status::Continue)
    }
    fn eom(&mut self, _: &mut EomContext<'_, Self>) -> HandlerResult {
        self.0.eoms.fetch_add(1, Ordering::Relaxed);
        Ok(Status::Continue)
    }
}

fn server(
    configure: impl FnOnce(milter_blocking::ServerBuilder) -> milter_blocking::ServerBuilder,
) -> (TestServer, Arc<Seen>) {
    logs();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    (
        TestServer::with(configure, move || Counter(s.clone())),
        seen,
    )
}

// ---------------------------------------------------------------------------
// A pipelining MTA: one thread writes, another counts the replies
// ---------------------------------------------------------------------------

fn enc(cmd: Command<'_>, out: &mut Vec<u8>) {
    cmd.encode(out);
}

fn tcp(spec: &SocketSpec) -> TcpStream {
    let SocketSpec::Inet(a) = spec else {
        unreachable!()
    };
    let s = TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

/// Writes everything `produce` yields (on another thread) while this thread
/// counts the replies, until `expected_replies` arrived or `limit` passed (then
/// the connection is shut down, which also stops the milter's work on it).
/// Returns the reply codes with their counts, and whether all arrived in time.
fn pipeline(
    s: &TcpStream,
    produce: impl FnOnce(&mut dyn FnMut(&[u8])) + Send + 'static,
    expected_replies: usize,
    limit: Duration,
) -> (Vec<(u8, usize)>, bool) {
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        produce(&mut |bytes: &[u8]| {
            // Fails only when the test gave up and shut the socket down.
            let _ = w.write_all(bytes);
        })
    });
    let mut reader = s.try_clone().unwrap();
    reader
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut d = FrameDecoder::new();
    let mut counts: Vec<(u8, usize)> = Vec::new();
    let mut total = 0;
    let complete = loop {
        while let Some(f) = d.next_frame().unwrap() {
            total += 1;
            match counts.iter_mut().find(|(c, _)| *c == f.code) {
                Some(e) => e.1 += 1,
                None => counts.push((f.code, 1)),
            }
        }
        if total >= expected_replies {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        match reader.read(d.spare()) {
            Ok(0) => panic!("milter closed after {total} replies"),
            Ok(n) => d.commit(n),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read: {e} after {total} replies"),
        }
    };
    if !complete {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    writer.join().unwrap();
    (counts, complete)
}

fn preamble(out: &mut Vec<u8>) {
    enc(Command::OptNeg(OptNeg::POSTFIX_3), out);
    enc(
        Command::Connect(Connect {
            hostname: b"flood.example",
            family: Family::Inet,
            port: 2525,
            address: b"192.0.2.66",
        }),
        out,
    );
    enc(Command::Mail(EnvelopeAddr::new(b"<a@example.org>")), out);
    enc(Command::Rcpt(EnvelopeAddr::new(b"<b@example.org>")), out);
    enc(Command::Data, out);
}

/// A healthy MTA doing one message, to show the server is fine afterwards.
fn healthy(spec: &SocketSpec) {
    let mut m = Mta::connect(spec);
    m.message_until_eom();
    assert_eq!(m.eom().decision, Decision::Continue);
}

// ---------------------------------------------------------------------------
// The floods
// ---------------------------------------------------------------------------

fn connect_cmd(out: &mut Vec<u8>) {
    enc(
        Command::Connect(Connect {
            hostname: b"flood.example",
            family: Family::Inet,
            port: 2525,
            address: b"192.0.2.66",
        }),
        out,
    );
}

#[test]
fn flood_of_100_000_macro_packets() {
    let _serial = serial();
    watchdog(Duration::from_secs(120), || {
        let (server, seen) = server(|b| b);
        healthy(&server.spec);
        let mem = Mem::start("100,000 macro packets");
        // Every stage code a D packet may name, and codes that name none; each
        // packet replaces the set of its stage.
        for stages in [&b"CHMRTNE"[..], &b"LBUZ\x00\xff"[..]] {
            let s = tcp(&server.spec);
            let (replies, complete) = pipeline(
                &s,
                move |w| {
                    let mut out = Vec::new();
                    enc(Command::OptNeg(OptNeg::POSTFIX_3), &mut out);
                    w(&out);
                    for batch in 0..1000 {
                        out.clear();
                        for i in 0..100 {
                            let n = batch * 100 + i;
                            let j = format!("mx{n}.example.org");
                            let stage = if n == 99_999 {
                                b'C'
                            } else {
                                stages[n % stages.len()]
                            };
                            MacroDef::encode_pairs(
                                &mut out,
                                stage,
                                [
                                    (&b"j"[..], j.as_bytes()),
                                    (b"{daemon_name}", b"smtpd"),
                                    (b"{n}", &[b'x'; 200][..]),
                                ],
                            );
                        }
                        w(&out);
                    }
                    out.clear();
                    connect_cmd(&mut out);
                    w(&out);
                },
                2,
                Duration::from_secs(60),
            );
            assert!(complete);
            assert_eq!(replies, [(b'O', 1), (b'c', 1)]);
            if stages[0] == b'C' {
                // The last definition for the connect stage is the one in force.
                assert_eq!(&*seen.last_j.lock().unwrap(), b"mx99999.example.org");
            }
        }
        let (grow, peak) = mem.end();
        assert!(grow < 16 * MIB, "RSS grew by {grow} KiB");
        assert!(peak < 32 * MIB, "peak grew by {peak} KiB");
        healthy(&server.spec);
    });
}

#[test]
fn flood_of_100_000_headers_in_one_message() {
    let _serial = serial();
    watchdog(Duration::from_secs(120), || {
        let (server, seen) = server(|b| b);
        healthy(&server.spec);
        let mem = Mem::start("100,000 headers (distinct names)");
        let s = tcp(&server.spec);
        let started = Instant::now();
        let n = 100_000;
        // A debug build handles 100,000 headers in a few seconds when the cost
        // per header is constant; 60 s means it grows with the header count.
        let (replies, complete) = pipeline(
            &s,
            move |w| {
                let mut out = Vec::new();
                preamble(&mut out);
                w(&out);
                for batch in 0..n / 1000 {
                    out.clear();
                    for i in 0..1000 {
                        // Distinct names, as a hostile SMTP client can send them.
                        let name = format!("X-Flood-{}", batch * 1000 + i);
                        enc(
                            Command::Header(Header {
                                name: name.as_bytes(),
                                value: b"some value of moderate length",
                            }),
                            &mut out,
                        );
                    }
                    w(&out);
                }
                out.clear();
                enc(Command::Eoh, &mut out);
                enc(Command::Eom(b""), &mut out);
                w(&out);
            },
            1 + 4 + n + 2,
            Duration::from_secs(60),
        );
        let elapsed = started.elapsed();
        let headers = seen.headers.load(Ordering::Relaxed) - 1;
        eprintln!("[time] {headers} of 100,000 distinct headers handled in {elapsed:?}");
        assert!(
            complete,
            "only {headers} of {n} headers handled in {elapsed:?}: the cost per header grows with the number of headers"
        );
        assert_eq!(replies, [(b'O', 1), (b'c', 4 + n + 2)]);
        let (grow, peak) = mem.end();
        assert!(grow < 16 * MIB, "RSS grew by {grow} KiB");
        assert!(peak < 32 * MIB, "peak grew by {peak} KiB");
        drop(s);
        healthy(&server.spec);
    });
}

#[test]
fn body_of_100_mb_in_64_kib_chunks() {
    let _serial = serial();
    watchdog(Duration::from_secs(120), || {
        let (server, seen) = server(|b| b);
        healthy(&server.spec);
        let mem = Mem::start("100 MB body");
        let s = tcp(&server.spec);
        let chunks = 1600;
        let (replies, complete) = pipeline(
            &s,
            move |w| {
                let chunk = vec![b'b'; 65535];
                let mut out = Vec::new();
                preamble(&mut out);
                enc(Command::Eoh, &mut out);
                w(&out);
                for _ in 0..chunks {
                    out.clear();
                    enc(Command::Body(&chunk), &mut out);
                    w(&out);
                }
                out.clear();
                enc(Command::Eom(b""), &mut out);
                w(&out);
            },
            1 + 5 + chunks + 1,
            Duration::from_secs(60),
        );
        assert!(complete);
        assert_eq!(replies, [(b'O', 1), (b'c', 5 + chunks + 1)]);
        assert_eq!(
            seen.body_bytes.load(Ordering::Relaxed),
            chunks as u64 * 65535 + 6, // + the healthy message's body
        );
        let (grow, peak) = mem.end();
        assert!(grow < 16 * MIB, "RSS grew by {grow} KiB");
        assert!(peak < 32 * MIB, "peak grew by {peak} KiB");
        drop(s);
        healthy(&server.spec);
    });
}

#[test]
fn header_value_of_1_mb() {
    let _serial = serial();
    watchdog(Duration::from_secs(60), || {
        let (server, seen) = server(|b| b);
        let mem = Mem::start("1 MB header value");
        let s = tcp(&server.spec);
        let (replies, complete) = pipeline(
            &s,
            |w| {
                let value = vec![b'v'; 1_000_000];
                let mut out = Vec::new();
                preamble(&mut out);
                enc(
                    Command::Header(Header {
                        name: b"X-Huge",
                        value: &value,
                    }),
                    &mut out,
                );
                enc(Command::Eoh, &mut out);
                enc(Command::Eom(b""), &mut out);
                w(&out);
            },
            1 + 4 + 3,
            Duration::from_secs(30),
        );
        assert!(complete);
        assert_eq!(replies, [(b'O', 1), (b'c', 7)]);
        assert_eq!(seen.longest_header.load(Ordering::Relaxed), 1_000_000);
        drop(s);
        let (_, peak) = mem.end();
        assert!(peak < 32 * MIB, "peak grew by {peak} KiB");

        // 1 MiB of value is over the default packet limit: refused by its length
        // alone, named in the log, the rest of the server unaffected.
        let mut s = tcp(&server.spec);
        let port = s.local_addr().unwrap().port();
        let mut out = Vec::new();
        preamble(&mut out);
        let payload = b"X-Huge\0".len() + (1 << 20) + 1;
        out.extend_from_slice(&((payload + 1) as u32).to_be_bytes());
        out.push(b'L');
        out.extend_from_slice(b"X-Huge\0");
        s.write_all(&out).unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        expect_log(
            port,
            &format!("packet announces a {payload}-byte payload, above the limit of 1048575 bytes"),
        );
        healthy(&server.spec);
    });
}

/// Many connections each announce a huge packet and send a few bytes of it:
/// the memory held is what arrived (plus one read step), not what was claimed.
fn claimed_lengths(max_payload: usize, claim: u32, conns: usize) -> i64 {
    let (server, _) = server(|b| b.max_payload(max_payload).max_connections(conns + 8));
    healthy(&server.spec);
    let mem = Mem::start("claimed lengths");
    let mut held = Vec::new();
    for _ in 0..conns {
        let mut s = tcp(&server.spec);
        let mut out = Vec::new();
        preamble(&mut out);
        out.extend_from_slice(&claim.to_be_bytes());
        out.push(b'L');
        out.extend_from_slice(b"X-Partial\0only a little of the value");
        s.write_all(&out).unwrap();
        held.push(s);
    }
    // Wait until every connection has read its bytes (it is then at the header).
    let deadline = Instant::now() + Duration::from_secs(30);
    while server
        .handle
        .stats()
        .in_stage
        .iter()
        .find(|(s, _)| *s == milter_blocking::Stage::Data)
        .map_or(0, |(_, n)| *n)
        < conns
    {
        assert!(Instant::now() < deadline, "{:?}", server.handle.stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let (grow, _) = mem.end();
    eprintln!(
        "[memory] {conns} connections claiming {claim} bytes each: {:+} KiB ({} KiB per connection)",
        grow,
        grow / conns as i64
    );
    healthy(&server.spec);
    drop(held);
    grow
}

#[test]
fn claimed_lengths_are_not_allocated_before_the_bytes_arrive() {
    let _serial = serial();
    watchdog(Duration::from_secs(120), || {
        // 200 x 1 MiB claimed (the default limit) would be 200 MiB if allocated
        // up front.
        let grow = claimed_lengths(
            milter_blocking::milter_core::limits::DEFAULT_MAX_PAYLOAD,
            (1 << 20) - 1,
            200,
        );
        assert!(
            grow < 60 * MIB,
            "RSS grew by {grow} KiB for 200 connections"
        );
        // With the limit lifted, 4 GiB - 1 claimed per connection.
        let grow = claimed_lengths(usize::MAX, u32::MAX, 200);
        assert!(
            grow < 60 * MIB,
            "RSS grew by {grow} KiB for 200 connections"
        );
    });
}

/// Sends packets and waits for a number of replies, on one connection.
struct Raw {
    s: TcpStream,
    d: FrameDecoder,
}

impl Raw {
    fn open(spec: &SocketSpec) -> Raw {
        let mut r = Raw {
            s: tcp(spec),
            d: FrameDecoder::new(),
        };
        let mut out = Vec::new();
        enc(Command::OptNeg(OptNeg::POSTFIX_3), &mut out);
        connect_cmd(&mut out);
        r.send(&out, 2);
        r
    }

    fn send(&mut self, bytes: &[u8], replies: usize) {
        self.s.write_all(bytes).unwrap();
        let mut got = 0;
        while got < replies {
            while let Some(f) = self.d.next_frame().unwrap() {
                assert!(matches!(f.code, b'O' | b'c'), "reply {}", f.code as char);
                got += 1;
            }
            if got < replies {
                let n = self.s.read(self.d.spare()).unwrap();
                assert!(n > 0, "milter closed");
                self.d.commit(n);
            }
        }
    }
}

/// What a connection keeps between messages: the largest macro sets and packet
/// seen stay allocated until the connection closes (bounded by the packet
/// limit), but nothing accumulates from one message to the next.
#[test]
fn nothing_accumulates_across_messages_on_one_connection() {
    let _serial = serial();
    watchdog(Duration::from_secs(120), || {
        // 1.5 MB of macros per message: above the default bound.
        let (server, _) = server(|b| b.max_macro_bytes(4 << 20));
        let mut mta = Raw::open(&server.spec);
        let big = vec![b'm'; 500_000];
        let body = vec![b'x'; 65535];
        let mut message = Vec::new();
        MacroDef::encode_pairs(
            &mut message,
            b'M',
            [(&b"{big}"[..], &big[..]), (b"i", b"Q1")],
        );
        enc(Command::Mail(EnvelopeAddr::new(b"<a@b>")), &mut message);
        MacroDef::encode_pairs(&mut message, b'R', [(&b"{big}"[..], &big[..])]);
        enc(Command::Rcpt(EnvelopeAddr::new(b"<c@d>")), &mut message);
        enc(Command::Data, &mut message);
        enc(
            Command::Header(Header {
                name: b"X-Big",
                value: &big,
            }),
            &mut message,
        );
        enc(Command::Eoh, &mut message);
        enc(Command::Body(&body), &mut message);
        MacroDef::encode_pairs(&mut message, b'E', [(&b"{big}"[..], &big[..])]);
        enc(Command::Eom(b""), &mut message);
        enc(Command::Abort, &mut message);
        let mut rss = Vec::new();
        for round in 0..5 {
            for _ in 0..100 {
                mta.send(&message, 7);
            }
            let now = status_kib("VmRSS");
            eprintln!(
                "[memory] after {} messages with 500 kB macros and headers: VmRSS {now} KiB",
                (round + 1) * 100
            );
            rss.push(now);
        }
        // The first round is warm-up; after it, nothing grows per message.
        let growth = rss[4] as i64 - rss[1] as i64;
        assert!(
            growth < 4 * MIB,
            "RSS grew by {growth} KiB over 300 messages: {rss:?}"
        );
    });
}

/// Macros beyond the connection's bound (256 KiB by default, over all sets)
/// are refused: logged, connection closed; within it they are served.
#[test]
fn macros_beyond_the_bound_close_the_connection() {
    let _serial = serial();
    watchdog(Duration::from_secs(60), || {
        let (server, _) = server(|b| b);
        let big = vec![b'm'; 100_000];
        // Three sets of 100 kB: 300 kB in all.
        let mut out = Vec::new();
        enc(Command::OptNeg(OptNeg::POSTFIX_3), &mut out);
        for code in [b'C', b'H', b'M'] {
            MacroDef::encode_pairs(&mut out, code, [(&b"{big}"[..], &big[..])]);
        }
        let mut s = tcp(&server.spec);
        let port = s.local_addr().unwrap().port();
        let _ = s.write_all(&out);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        let line = expect_log(
            port,
            "macros for 'M' would bring the session's macros to 300021 bytes, above the limit of 262144 bytes",
        );
        assert!(line.starts_with("WARN"), "{line}");
        // Two of them fit, and a message goes through.
        let mut m = Mta::connect(&server.spec);
        m.macros(b'C', &[("{big}", std::str::from_utf8(&big).unwrap())]);
        m.macros(b'H', &[("{big}", std::str::from_utf8(&big).unwrap())]);
        m.message_until_eom();
        assert_eq!(m.eom().decision, Decision::Continue);
    });
}

/// Replaces the body with one 20 MB slice in a single call (the natural way to
/// write a body-rewriting milter).
struct Rewriter(Arc<Vec<u8>>);

impl milter_blocking::Declaration for Rewriter {
    const ACTIONS: milter_blocking::Actions = milter_blocking::Actions::CHANGE_BODY;
}
impl milter_blocking::action::ChangeBody for Rewriter {}

#[milter_blocking::handlers]
impl Milter for Rewriter {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec {
            actions: milter_blocking::Actions::CHANGE_BODY,
            ..Spec::ALL_STAGES
        };
    }

    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        ctx.replace_body(&self.0[..])?;
        Ok(Status::Continue)
    }
}

/// Per connection, the buffers of one large message must not stay allocated
/// for the rest of the connection (an MTA keeps milter connections open for
/// whole SMTP sessions; with 1,000 connections every retained megabyte counts a
/// thousand times).
#[test]
fn a_large_replacement_body_is_not_kept_after_the_message() {
    let _serial = serial();
    watchdog(Duration::from_secs(120), || {
        logs();
        let body = Arc::new(vec![b'r'; 20 << 20]);
        let server = {
            let body = body.clone();
            TestServer::with(|b| b, move || Rewriter(body.clone()))
        };
        let mem = Mem::start("4 connections after a 20 MB replacement body each");
        let mut conns = Vec::new();
        for _ in 0..4 {
            let mut s = tcp(&server.spec);
            let mut out = Vec::new();
            preamble(&mut out);
            enc(Command::Eoh, &mut out);
            enc(Command::Eom(b""), &mut out);
            s.write_all(&out).unwrap();
            // Read (and drop) everything up to the final decision.
            let mut d = FrameDecoder::new();
            let (mut replies, mut body_bytes) = (0, 0);
            'read: loop {
                while let Some(f) = d.next_frame().unwrap() {
                    match f.code {
                        b'b' => body_bytes += f.payload.len(),
                        b'c' if replies == 6 => break 'read,
                        _ => replies += 1,
                    }
                }
                let n = s.read(d.spare()).unwrap();
                assert!(n > 0);
                d.commit(n);
            }
            assert_eq!(body_bytes, 20 << 20);
            conns.push(s); // stays open, between messages
        }
        std::thread::sleep(Duration::from_millis(200));
        let (grow, peak) = mem.end();
        eprintln!("[memory] retained per idle connection: {} KiB", grow / 4);
        assert!(
            grow < 16 * MIB,
            "4 idle connections hold {grow} KiB after one 20 MB replacement body each (peak {peak} KiB)"
        );
        drop(conns);
    });
}
