//! Shutdown while connections are in the middle of messages: messages in flight
//! complete within the deadline, what is still open at the deadline is cut (its
//! abort and close handlers run), nothing hangs afterwards and `run` returns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{watchdog, Mta, TestServer};
use milter_blocking::milter_core::client::Decision;
use milter_blocking::milter_core::Command;
use milter_blocking::{
    Context, EnvelopeAddr, EomContext, HandlerResult, Milter, OptNeg, SocketSpec, Spec, Status,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

/// The tests here count threads and descriptors of the whole process: one at a
/// time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Threads of the running test: its own (and those it started, which inherit
/// its name) and the server's workers. The harness's threads for the other
/// tests, started meanwhile and waiting for `serial`, are not counted.
fn threads() -> usize {
    let comm =
        |task: &std::path::Path| std::fs::read_to_string(task.join("comm")).unwrap_or_default();
    let own = comm(std::path::Path::new("/proc/thread-self"));
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| t.ok())
        .map(|t| comm(&t.path()))
        .filter(|c| *c == own || c.trim_end() == "milter-worker")
        .count()
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[derive(Default)]
struct Counts {
    eoms: AtomicUsize,
    aborts: AtomicUsize,
    closes: AtomicUsize,
}

/// End of message takes a while (`slow_eom`), like a milter asking a scanner;
/// with a `mail_gate`, MAIL waits until the test lets it go.
struct Slow {
    counts: Arc<Counts>,
    slow_eom: Duration,
    mail_gate: Option<MailGate>,
}

/// Tells the test that MAIL's handler runs, and holds it until released.
struct MailGate {
    entered: mpsc::Sender<()>,
    release: Arc<Mutex<mpsc::Receiver<()>>>,
}

impl milter_blocking::Declaration for Slow {}

#[milter_blocking::handlers]
impl Milter for Slow {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec::ALL_STAGES;
    }

    fn mail(&mut self, _: &mut Context<'_>, _: &EnvelopeAddr<'_>) -> HandlerResult {
        if let Some(gate) = &self.mail_gate {
            let _ = gate.entered.send(());
            let _ = gate.release.lock().unwrap().recv();
        }
        Ok(Status::Continue)
    }

    fn eom(&mut self, _: &mut EomContext<'_, Self>) -> HandlerResult {
        std::thread::sleep(self.slow_eom);
        self.counts.eoms.fetch_add(1, Ordering::SeqCst);
        Ok(Status::Continue)
    }
    fn abort(&mut self, _: &mut Context<'_>) -> HandlerResult<()> {
        self.counts.aborts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn close(&mut self, _: &mut Context<'_>) -> HandlerResult<()> {
        self.counts.closes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn slow_server(
    slow_eom: Duration,
    configure: impl FnOnce(milter_blocking::ServerBuilder) -> milter_blocking::ServerBuilder,
) -> (TestServer, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    let server = {
        let counts = counts.clone();
        TestServer::with(configure, move || Slow {
            counts: counts.clone(),
            slow_eom,
            mail_gate: None,
        })
    };
    (server, counts)
}

/// Opens a connection and goes into a message, as far as `depth` (0..6) says.
fn mid_message(spec: &SocketSpec, depth: usize) -> Mta {
    let mut m = Mta::connect(spec);
    m.connect_stage("h", "192.0.2.1", 25);
    m.mail("<a@b>", &[]);
    let steps: [&dyn Fn(&mut Mta); 5] = [
        &|m| drop(m.rcpt("<c@d>", &[])),
        &|m| drop(m.send(Command::Data)),
        &|m| drop(m.header("Subject", "in flight")),
        &|m| drop(m.send(Command::Eoh)),
        &|m| drop(m.body(b"body\r\n")),
    ];
    for step in steps.iter().take(depth) {
        step(&mut m);
    }
    m
}

/// Runs `stop` on another thread; whether it returned within `limit`.
fn stop_within(
    server: TestServer,
    deadline: Duration,
    limit: Duration,
) -> (bool, Duration, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    std::thread::spawn(move || {
        server.stop(deadline).unwrap();
        let _ = tx.send(());
    });
    let returned = rx.recv_timeout(limit).is_ok();
    (returned, started.elapsed(), rx)
}

#[test]
fn shutdown_with_100_connections_mid_message() {
    let _serial = serial();
    watchdog(Duration::from_secs(90), || {
        const N: usize = 100;
        let (threads0, fds0) = (threads(), fds());
        let (server, counts) = slow_server(Duration::from_millis(20), |b| b);
        let spec = server.spec.clone();
        let ready = Arc::new(Barrier::new(N + 1));
        let go = Arc::new(Barrier::new(N + 1));
        let clients: Vec<_> = (0..N)
            .map(|i| {
                let (spec, ready, go) = (spec.clone(), ready.clone(), go.clone());
                std::thread::spawn(move || {
                    let mut m = mid_message(&spec, i % 6);
                    ready.wait();
                    go.wait();
                    // Finish the message after the shutdown began.
                    for step in (i % 6)..5 {
                        match step {
                            0 => drop(m.rcpt("<c@d>", &[])),
                            1 => drop(m.send(Command::Data)),
                            2 => drop(m.header("Subject", "in flight")),
                            3 => drop(m.send(Command::Eoh)),
                            _ => drop(m.body(b"body\r\n")),
                        }
                    }
                    assert_eq!(m.eom().decision, Decision::Continue);
                    // Between messages now: the server closes it.
                    assert!(m.closed_by_milter(Duration::from_secs(10)));
                })
            })
            .collect();
        ready.wait();
        let stats = server.handle.stats();
        assert_eq!(stats.open, N, "{stats:?}");
        let started = Instant::now();
        server.handle.shutdown(Duration::from_secs(20));
        go.wait();
        // A connection attempt after the shutdown began is not served, and does
        // not hang once `run` has returned.
        let mut late = Mta::open(&spec, OptNeg::POSTFIX_3);
        for c in clients {
            c.join().unwrap();
        }
        let finished = started.elapsed();
        let (returned, took, _) =
            stop_within(server, Duration::from_secs(20), Duration::from_secs(10));
        assert!(returned, "run did not return");
        eprintln!(
            "[shutdown] {N} messages in flight finished {finished:?} after the shutdown; run returned after {took:?}"
        );
        assert!(
            took < Duration::from_secs(5),
            "run returned only after {took:?}"
        );
        assert!(
            late.closed_by_milter(Duration::from_secs(5)),
            "the late connection hangs"
        );
        assert_eq!(counts.eoms.load(Ordering::SeqCst), N);
        assert_eq!(counts.aborts.load(Ordering::SeqCst), 0);
        // (The late connection may have been accepted before the accept loop saw
        // the shutdown; then it was negotiated and closed at once.)
        let closes = counts.closes.load(Ordering::SeqCst);
        assert!(closes == N || closes == N + 1, "{closes} close calls");
        // After run returned, new connections are refused by the kernel.
        let SocketSpec::Inet(a) = &spec else {
            unreachable!()
        };
        assert!(std::net::TcpStream::connect(a).is_err());
        drop(late);
        let deadline = Instant::now() + Duration::from_secs(10);
        // Other tests of this binary run in parallel: only growth is a leak.
        while threads() > threads0 || fds() > fds0 {
            assert!(
                Instant::now() < deadline,
                "threads {} (before {threads0}), fds {} (before {fds0})",
                threads(),
                fds()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    });
}

#[test]
fn the_deadline_cuts_the_connections_still_in_a_message() {
    let _serial = serial();
    watchdog(Duration::from_secs(60), || {
        const N: usize = 100;
        let (server, counts) = slow_server(Duration::ZERO, |b| b);
        let mut conns: Vec<Mta> = (0..N).map(|i| mid_message(&server.spec, i % 6)).collect();
        server.handle.shutdown(Duration::from_secs(1));
        // Half finish their message in time; the other half never continue.
        for m in conns.iter_mut().step_by(2) {
            assert_eq!(m.eom().decision, Decision::Continue);
        }
        let (returned, took, _) =
            stop_within(server, Duration::from_secs(1), Duration::from_secs(10));
        assert!(returned, "run did not return");
        eprintln!("[shutdown] run returned {took:?} after the stop (deadline 1 s)");
        assert!(
            took < Duration::from_secs(3),
            "run returned only after {took:?}"
        );
        for m in &mut conns {
            assert!(m.closed_by_milter(Duration::from_secs(5)));
        }
        assert_eq!(counts.eoms.load(Ordering::SeqCst), N / 2);
        assert_eq!(
            counts.aborts.load(Ordering::SeqCst),
            N / 2,
            "abort for each cut message"
        );
        assert_eq!(counts.closes.load(Ordering::SeqCst), N);
    });
}

#[test]
fn a_handler_still_running_at_the_deadline_delays_run_only_until_it_returns() {
    let _serial = serial();
    watchdog(Duration::from_secs(60), || {
        // Handlers cannot be interrupted: run waits for this one (1.5 s) and then
        // returns; the connection is cut at the deadline.
        let (server, counts) = slow_server(Duration::from_millis(1500), |b| b);
        let mut m = mid_message(&server.spec, 5);
        // Send end of message without waiting for its answer.
        m.session.send(&Command::Eom(b"")).unwrap();
        let out = m.session.output().to_vec();
        m.session.clear_output();
        m.raw(&out);
        std::thread::sleep(Duration::from_millis(100));
        let (returned, took, _) =
            stop_within(server, Duration::from_millis(200), Duration::from_secs(10));
        assert!(returned);
        eprintln!("[shutdown] run returned {took:?} after the stop, the handler took 1.5 s");
        assert!(took < Duration::from_secs(4), "{took:?}");
        assert_eq!(counts.eoms.load(Ordering::SeqCst), 1);
        assert!(m.closed_by_milter(Duration::from_secs(5)));
    });
}

/// Connections accepted into the queue (all threads busy) that never send a
/// byte: at shutdown they must not keep `run` from returning.
#[test]
fn queued_silent_connections_do_not_hang_shutdown() {
    let _serial = serial();
    watchdog(Duration::from_secs(60), || {
        let (server, _) = slow_server(Duration::ZERO, |b| b.max_connections(1).queue(4));
        let busy = mid_message(&server.spec, 2);
        let SocketSpec::Inet(a) = &server.spec else {
            unreachable!()
        };
        let silent: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(a).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(300)); // accepted and queued
        let (returned, took, rx) =
            stop_within(server, Duration::from_millis(500), Duration::from_secs(5));
        // Let a hung server go before asserting, so that the test ends.
        drop(silent);
        drop(busy);
        let _ = rx.recv_timeout(Duration::from_secs(10));
        assert!(
            returned,
            "run had not returned {took:?} after a stop with a 500 ms deadline: a queued \
             connection was served after the deadline and blocks in its first read"
        );
    });
}

/// A shutdown that starts while the handler of a message's first command
/// (MAIL) runs lets that message finish: the connection is busy from the first
/// byte of the command, not only once the message's stage was recorded.
#[test]
fn a_shutdown_during_the_first_command_of_a_message_lets_it_finish() {
    let _serial = serial();
    watchdog(Duration::from_secs(60), || {
        let counts = Arc::new(Counts::default());
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let server = {
            let counts = counts.clone();
            TestServer::start(move || Slow {
                counts: counts.clone(),
                slow_eom: Duration::ZERO,
                mail_gate: Some(MailGate {
                    entered: entered_tx.clone(),
                    release: release_rx.clone(),
                }),
            })
        };
        let spec = server.spec.clone();
        let client = std::thread::spawn(move || {
            let mut m = Mta::connect(&spec);
            m.connect_stage("h", "192.0.2.1", 25);
            m.helo("h");
            m.mail("<a@b>", &[]);
            m.rcpt("<c@d>", &[]);
            m.send(Command::Data);
            m.header("Subject", "first command in a slow handler");
            m.send(Command::Eoh);
            m.body(b"body\r\n");
            let decision = m.try_eom().map(|a| a.decision);
            let closed = m.closed_by_milter(Duration::from_secs(10));
            (decision, closed)
        });
        entered_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the MAIL handler never ran");
        server.handle.shutdown(Duration::from_secs(30));
        release_tx.send(()).unwrap();
        let (decision, closed) = client.join().unwrap();
        assert_eq!(decision, Ok(Decision::Continue), "the message was cut");
        assert!(closed, "not closed after the message");
        assert_eq!(counts.eoms.load(Ordering::SeqCst), 1);
        assert_eq!(counts.aborts.load(Ordering::SeqCst), 0);
        let (returned, _, _) =
            stop_within(server, Duration::from_secs(30), Duration::from_secs(20));
        assert!(returned, "run did not return");
    });
}

/// From the start of a shutdown, new connections are refused by the kernel
/// (the listener is closed; a Unix socket file is removed), although `run`
/// still waits for a message in flight.
#[test]
fn the_listener_closes_when_the_shutdown_starts() {
    let _serial = serial();
    watchdog(Duration::from_secs(60), || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sock");
        let (server, _) = slow_server(Duration::ZERO, |b| {
            b.listen(&format!("unix:{}", path.display())).unwrap()
        });
        let SocketSpec::Inet(tcp) = server.spec.clone() else {
            unreachable!()
        };
        let mut in_flight = mid_message(&server.spec, 5);
        server.handle.shutdown(Duration::from_secs(60));
        let until = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(tcp).is_ok() || path.exists() {
            assert!(
                Instant::now() < until,
                "still listening 20 s after the shutdown began"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            server.handle.stats().open,
            1,
            "the message in flight was cut"
        );
        assert_eq!(in_flight.eom().decision, Decision::Continue);
        let (returned, _, _) =
            stop_within(server, Duration::from_secs(60), Duration::from_secs(20));
        assert!(returned);
    });
}

/// A second stop request ends the drain at once: the connections still in a
/// message are cut (abort and close run) and `run` returns, long before the
/// first request's deadline.
#[test]
fn a_second_stop_request_cuts_at_once() {
    let _serial = serial();
    watchdog(Duration::from_secs(60), || {
        let (server, counts) = slow_server(Duration::ZERO, |b| b);
        let mut conns: Vec<Mta> = (0..3).map(|i| mid_message(&server.spec, i)).collect();
        server.handle.shutdown(Duration::from_secs(3600));
        let (returned, took, _) =
            stop_within(server, Duration::from_secs(3600), Duration::from_secs(20));
        assert!(returned, "run did not return after a second stop request");
        eprintln!("[shutdown] run returned {took:?} after the second stop request");
        for m in &mut conns {
            assert!(m.closed_by_milter(Duration::from_secs(5)));
        }
        assert_eq!(counts.aborts.load(Ordering::SeqCst), 3);
        assert_eq!(counts.closes.load(Ordering::SeqCst), 3);
    });
}
