//! Peers that stop reading or stop sending: the write timeout frees a thread
//! stuck writing a large replacement body (or replies to pipelined commands),
//! and read timeouts free idle connections, after which the server serves new
//! connections at its configured maximum again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{continue_, watchdog, Capture, Mta, TestServer, UNTIL_EOM};
use milter_blocking::milter_core::client::Decision;
use milter_blocking::milter_core::{Command, Connect, EnvelopeAddr, Family, OptNeg};
use milter_blocking::{
    Actions, ConnectAddr, Context, EomContext, HandlerResult, Milter, SocketSpec, Spec, Status,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Log capture
// ---------------------------------------------------------------------------

fn logs() -> &'static Capture {
    common::capture_logs(log::LevelFilter::Info, false)
}

fn mentions_port(line: &str, port: u16) -> bool {
    let needle = format!("127.0.0.1:{port}");
    line.match_indices(&needle).any(|(i, _)| {
        !line[i + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

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

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}

// ---------------------------------------------------------------------------
// A milter that writes a lot
// ---------------------------------------------------------------------------

static CHUNK: [u8; 65536] = [b'x'; 65536];

/// Replaces the body with 64 MiB, streamed in 64 KiB pieces; with the sender
/// `<ignore@x>` it ignores write errors (a careless handler), otherwise it stops
/// at the first one (`?`). RCPT `<long@x>` is rejected with a 980-byte reply.
#[derive(Default)]
struct Writer {
    careless: bool,
}

impl milter_blocking::Declaration for Writer {
    const ACTIONS: milter_blocking::Actions = Actions::CHANGE_BODY;
}
impl milter_blocking::action::ChangeBody for Writer {}

#[milter_blocking::handlers]
impl Milter for Writer {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec {
            actions: Actions::CHANGE_BODY,
            ..Spec::ALL_STAGES
        };
    }

    fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
        self.careless = from.address == b"<ignore@x>";
        Ok(Status::Continue)
    }
    fn rcpt(&mut self, _: &mut Context<'_>, to: &EnvelopeAddr<'_>) -> HandlerResult {
        if to.address == b"<long@x>" {
            return Ok(Status::reply(550, Some("5.7.1"), &"n".repeat(970))?);
        }
        Ok(Status::Continue)
    }
    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        for _ in 0..1024 {
            if self.careless {
                let _ = ctx.replace_body(&CHUNK[..]);
            } else {
                ctx.replace_body(&CHUNK[..])?;
            }
        }
        Ok(Status::Continue)
    }
    fn connect(&mut self, _: &mut Context<'_>, _: &[u8], _: ConnectAddr<'_>) -> HandlerResult {
        Ok(Status::Continue)
    }
}

fn enc(cmd: Command<'_>, out: &mut Vec<u8>) {
    cmd.encode(out);
}

fn session_until_data(out: &mut Vec<u8>, from: &[u8]) {
    enc(Command::OptNeg(OptNeg::POSTFIX_3), out);
    enc(
        Command::Connect(Connect {
            hostname: b"slow.example",
            family: Family::Inet,
            port: 2525,
            address: b"192.0.2.5",
        }),
        out,
    );
    enc(Command::Mail(EnvelopeAddr::new(from)), out);
}

fn tcp(spec: &SocketSpec) -> TcpStream {
    let SocketSpec::Inet(a) = spec else {
        unreachable!()
    };
    TcpStream::connect(a).unwrap()
}

/// A peer that sends a message and never reads the answer.
fn stop_reading_at_eom(spec: &SocketSpec, from: &[u8]) -> (TcpStream, u16) {
    let mut s = tcp(spec);
    let port = s.local_addr().unwrap().port();
    let mut out = Vec::new();
    session_until_data(&mut out, from);
    enc(Command::Rcpt(EnvelopeAddr::new(b"<b@x>")), &mut out);
    enc(Command::Data, &mut out);
    enc(Command::Eoh, &mut out);
    enc(Command::Eom(b""), &mut out);
    s.write_all(&out).unwrap();
    (s, port)
}

fn server() -> TestServer {
    logs();
    TestServer::with(
        |b| {
            b.max_connections(1)
                .queue(0)
                .write_timeout(Duration::from_millis(300))
        },
        Writer::default,
    )
}

fn next_connection_is_served(server: &TestServer) {
    // One thread, no queue: a connection is served once the freed thread is back
    // waiting for work (before that it would be refused, as documented).
    wait_until(
        "the thread to wait for work",
        Duration::from_secs(10),
        || server.handle.stats().idle_threads == 1,
    );
    std::thread::sleep(Duration::from_millis(50));
    let mut m = Mta::connect(&server.spec);
    m.connect_stage("h", "192.0.2.1", 25);
    m.mail("<a@x>", &[]);
    assert_eq!(m.rcpt("<b@x>", &[]), continue_());
}

#[test]
fn write_timeout_frees_the_thread_when_the_peer_stops_reading_a_replacement_body() {
    watchdog(Duration::from_secs(60), || {
        let server = server();
        let (_stuck, port) = stop_reading_at_eom(&server.spec, b"<a@x>");
        wait_until(
            "the connection to reach end of message",
            Duration::from_secs(10),
            || server.handle.stats().open == 1,
        );
        let took = wait_until(
            "the stuck connection to be dropped",
            Duration::from_secs(10),
            || server.handle.stats().open == 0,
        );
        eprintln!("[time] stuck writer freed after {took:?}");
        let line = expect_log(port, "writing modifications to the MTA timed out");
        assert!(line.contains("eom handler failed"), "{line}");
        expect_log(
            port,
            "write to the MTA timed out after 300ms during end of message",
        );
        // max_connections(1): only a freed thread can serve this.
        next_connection_is_served(&server);
    });
}

#[test]
fn a_handler_that_ignores_write_errors_is_cut_short() {
    watchdog(Duration::from_secs(60), || {
        let server = server();
        let (_stuck, _port) = stop_reading_at_eom(&server.spec, b"<ignore@x>");
        wait_until(
            "the connection to reach end of message",
            Duration::from_secs(10),
            || server.handle.stats().open == 1,
        );
        // 1024 modification calls each waiting out the 300 ms write timeout would
        // hold the thread for five minutes: after the first failed write the
        // connection is lost and further calls must fail at once.
        let started = Instant::now();
        let deadline = Duration::from_secs(10);
        while server.handle.stats().open > 0 && started.elapsed() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = started.elapsed();
        eprintln!("[time] careless writer freed after {took:?}");
        assert!(
            took < deadline,
            "the thread is still held {took:?} after the peer stopped reading: every \
             modification call after a failed write waits out the write timeout again"
        );
        next_connection_is_served(&server);
    });
}

#[test]
fn write_timeout_frees_the_thread_when_the_peer_pipelines_and_never_reads() {
    watchdog(Duration::from_secs(60), || {
        let server = server();
        let mut s = tcp(&server.spec);
        let port = s.local_addr().unwrap().port();
        let writer = {
            let mut w = s.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                session_until_data(&mut out, b"<a@x>");
                // 20,000 recipients, each answered with a ~1 kB reply: 20 MB the
                // peer never reads.
                for _ in 0..20_000 {
                    enc(Command::Rcpt(EnvelopeAddr::new(b"<long@x>")), &mut out);
                }
                let _ = w.write_all(&out);
            })
        };
        wait_until("the connection to open", Duration::from_secs(10), || {
            server.handle.stats().open == 1
        });
        let took = wait_until(
            "the connection to be dropped",
            Duration::from_secs(20),
            || server.handle.stats().open == 0,
        );
        eprintln!("[time] pipelining reader-less peer dropped after {took:?}");
        let line = expect_log(port, "write to the MTA timed out after 300ms");
        assert!(!line.contains("os error"), "{line}");
        let _ = s.shutdown(std::net::Shutdown::Both);
        writer.join().unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        next_connection_is_served(&server);
    });
}

// ---------------------------------------------------------------------------
// 1,000 idle connections
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Plain;

impl milter_blocking::Declaration for Plain {}

#[milter_blocking::handlers]
impl Milter for Plain {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec::ALL_STAGES;
    }
}

#[test]
fn a_thousand_idle_connections_are_freed_by_read_timeouts() {
    const N: usize = 1000;
    watchdog(Duration::from_secs(120), || {
        logs();
        let server = TestServer::with(
            |b| {
                b.max_connections(N)
                    .queue(0)
                    .read_timeout(Duration::from_secs(1))
                    .idle_thread_timeout(Duration::from_millis(500))
            },
            Plain::default,
        );
        // Each sends one byte (of a length field) and then nothing for longer
        // than the read timeout: a byte a minute, with minutes made short.
        let started = Instant::now();
        let mut idle: Vec<TcpStream> = (0..N)
            .map(|_| {
                let mut s = tcp(&server.spec);
                s.write_all(&[0]).unwrap();
                s
            })
            .collect();
        let ports: Vec<u16> = idle
            .iter()
            .map(|s| s.local_addr().unwrap().port())
            .collect();
        let peak = server.handle.stats();
        eprintln!(
            "[idle] {N} idle connections open after {:?}: {peak:?}",
            started.elapsed()
        );
        let took = wait_until("the read timeouts", Duration::from_secs(30), || {
            server.handle.stats().open == 0
        });
        eprintln!("[idle] all freed {took:?} later");
        // Each was logged, and each is closed for the peer.
        let lines = logs().0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let timeouts = lines
            .iter()
            .filter(|l| l.starts_with("WARN") && l.contains("no command from the MTA for 1s"))
            .count();
        assert!(
            timeouts >= N,
            "{timeouts} timeout lines for {N} connections"
        );
        assert!(lines
            .iter()
            .any(|l| mentions_port(l, ports[N / 2]) && l.contains("no command from the MTA")));
        for s in &mut idle {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.write_all(&[0]); // the next byte, a "minute" later
            let mut b = [0u8; 1];
            assert!(
                matches!(s.read(&mut b), Ok(0) | Err(_)),
                "an idle connection is still open"
            );
        }
        drop(idle);

        // The server serves the configured maximum again, all at once.
        let mut healthy: Vec<Mta> = (0..N).map(|_| Mta::connect(&server.spec)).collect();
        wait_until(
            "all connections registered",
            Duration::from_secs(10),
            || server.handle.stats().open == N,
        );
        // One more is beyond the maximum (no queue): closed at once.
        let mut extra = Mta::open(&server.spec, OptNeg::POSTFIX_3);
        assert!(extra.closed_by_milter(Duration::from_secs(5)));
        // Stage by stage across all of them, so that no connection waits
        // longer than one round (not a thousand messages) for its next
        // command, well inside the read timeout even on a slow machine.
        for round in UNTIL_EOM {
            let began = Instant::now();
            for m in &mut healthy {
                assert_eq!(round(m), continue_());
            }
            eprintln!("[idle] a round of {N} commands took {:?}", began.elapsed());
        }
        for m in &mut healthy {
            assert_eq!(m.eom().decision, Decision::Continue);
        }
        let stats = server.handle.stats();
        assert_eq!(stats.open, N, "{stats:?}");
        assert!(stats.threads <= N, "{stats:?}");
        drop(healthy);
        wait_until("the connections to close", Duration::from_secs(10), || {
            server.handle.stats().open == 0
        });
    });
}
