//! `stop_on_signals`: SIGTERM starts a graceful shutdown, a second signal
//! (SIGINT here) ends it at once. (Cargo feature `signals`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{watchdog, AllStages, Mta, TestServer};
use milter_blocking::milter_core::client::Decision;
use milter_blocking::SocketSpec;
use std::time::{Duration, Instant};

/// Sends `signal` to this process.
fn raise(signal: &str) {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{signal} {}", std::process::id()))
        .status()
        .unwrap();
    assert!(status.success());
}

fn mid_message(spec: &SocketSpec) -> Mta {
    let mut m = Mta::connect(spec);
    m.message_until_eom();
    m
}

fn signal_server() -> TestServer {
    TestServer::with(
        |b| b.stop_on_signals(Duration::from_secs(60)),
        AllStages::default,
    )
}

/// Waits until connections to `spec` are refused (the listener closed).
fn wait_refused(spec: &SocketSpec) {
    let SocketSpec::Inet(a) = spec else {
        unreachable!()
    };
    let until = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(a).is_ok() {
        assert!(Instant::now() < until, "still accepting after the signal");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// One test in this binary: signals go to the whole process.
#[test]
fn sigterm_stops_gracefully_and_a_second_signal_at_once() {
    watchdog(Duration::from_secs(120), || {
        // SIGTERM: no new connections, the message in flight finishes, then
        // run returns.
        let server = signal_server();
        let mut m = mid_message(&server.spec);
        raise("TERM");
        wait_refused(&server.spec);
        assert!(server.handle.is_stopping());
        assert_eq!(m.eom().decision, Decision::Continue);
        assert!(m.closed_by_milter(Duration::from_secs(10)));
        server.stop(Duration::from_secs(60)).unwrap();

        // SIGTERM, then SIGINT: the drain ends at once although the message
        // never finishes and the deadline is a minute away.
        let server = signal_server();
        let mut m = mid_message(&server.spec);
        raise("TERM");
        wait_refused(&server.spec);
        raise("INT");
        assert!(
            m.closed_by_milter(Duration::from_secs(20)),
            "the second signal did not cut the connection"
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(server.stop(Duration::from_secs(60)));
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("run did not return")
            .unwrap();
    });
}
