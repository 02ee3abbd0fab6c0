//! Connection limits, the queue beyond them, and read timeouts.
#![allow(clippy::unwrap_used)]

mod common;

use common::{watchdog, Mta, TestServer};
use milter_blocking::milter_core::client::Decision;
use milter_blocking::{Milter, Spec};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Plain;

impl milter_blocking::Declaration for Plain {}

#[milter_blocking::handlers]
impl Milter for Plain {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec::ALL_STAGES;
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn over_the_limit_connections_queue_then_are_refused() {
    watchdog(Duration::from_secs(60), || {
        let server = TestServer::with(|b| b.max_connections(2).queue(1), Plain::default);
        let mut a = Mta::connect(&server.spec);
        let mut b = Mta::connect(&server.spec);
        // Third: accepted into the queue; its negotiation waits for a free thread.
        let mut queued = Mta::open(&server.spec, milter_blocking::OptNeg::POSTFIX_3);
        assert!(
            queued.quiet(Duration::from_millis(300)),
            "queued connection must wait"
        );
        // Fourth: beyond the queue, closed at once.
        let mut refused = Mta::open(&server.spec, milter_blocking::OptNeg::POSTFIX_3);
        assert!(refused.closed_by_milter(Duration::from_secs(5)));
        // The connections inside the limit keep working.
        for m in [&mut a, &mut b] {
            m.message_until_eom();
            assert_eq!(m.eom().decision, Decision::Continue);
        }
        // When one leaves, the queued one is served.
        drop(a);
        queued.negotiate().unwrap();
        queued.message_until_eom();
        assert_eq!(queued.eom().decision, Decision::Continue);
        let stats = server.handle.stats();
        assert_eq!(stats.open, 2, "{stats:?}");
        assert!(stats.threads <= 2, "{stats:?}");
        drop(b);
    });
}

#[test]
fn read_timeout_frees_the_thread() {
    watchdog(Duration::from_secs(60), || {
        let server = TestServer::with(
            |b| {
                b.max_connections(1)
                    .queue(0)
                    .read_timeout(Duration::from_millis(300))
            },
            Plain::default,
        );
        let mut silent = Mta::connect(&server.spec);
        silent.connect_stage("h", "192.0.2.1", 25);
        let started = Instant::now();
        assert!(silent.closed_by_milter(Duration::from_secs(5)));
        assert!(started.elapsed() >= Duration::from_millis(250));
        wait_until("the registry to empty", || server.handle.stats().open == 0);
        // With one thread and no queue a connection is served only once that thread
        // is back waiting for work (until then it would be refused, as documented).
        wait_until("the thread to wait for work", || {
            server.handle.stats().idle_threads == 1
        });
        std::thread::sleep(Duration::from_millis(50));
        // The single thread serves the next connection.
        let mut next = Mta::connect(&server.spec);
        next.message_until_eom();
        assert_eq!(next.eom().decision, Decision::Continue);
    });
}

#[test]
fn stats_show_connections_by_stage() {
    watchdog(Duration::from_secs(30), || {
        let server = TestServer::start(Plain::default);
        let mut a = Mta::connect(&server.spec);
        a.connect_stage("h", "192.0.2.1", 25);
        a.mail("<a@b>", &[]);
        a.rcpt("<c@d>", &[]);
        let _b = Mta::connect(&server.spec);
        wait_until("two connections", || server.handle.stats().open == 2);
        let stats = server.handle.stats();
        assert_eq!(stats.idle, 1, "{stats:?}");
        assert_eq!(
            stats.in_stage,
            [(milter_blocking::Stage::Rcpt, 1)],
            "{stats:?}"
        );
    });
}

/// A zero timeout would cut every connection at once: the builder refuses it.
#[test]
fn zero_timeouts_are_refused_at_build() {
    use milter_blocking::{Server, ServerError};
    for (setting, builder) in [
        (
            "read_timeout",
            Server::builder().read_timeout(Duration::ZERO),
        ),
        (
            "write_timeout",
            Server::builder().write_timeout(Duration::ZERO),
        ),
    ] {
        let err = builder
            .listen("inet:0@127.0.0.1")
            .unwrap()
            .build(Plain::default)
            .unwrap_err();
        assert!(
            matches!(err, ServerError::ZeroTimeout { setting: s } if s == setting),
            "{err}"
        );
        assert!(
            err.to_string().starts_with(&format!("{setting} is zero")),
            "{err}"
        );
    }
    // None still means no timeout.
    assert!(Server::builder()
        .read_timeout(None)
        .write_timeout(None)
        .listen("inet:0@127.0.0.1")
        .unwrap()
        .build(Plain::default)
        .is_ok());
}

/// `when_full`: beyond the limit and the queue, a connection is negotiated and
/// answered tempfail (or accept) at connect for its session, then closed;
/// the served connections are not disturbed.
#[test]
fn when_full_answers_the_session_instead_of_closing() {
    use common::Answer;
    use milter_blocking::WhenFull;
    watchdog(Duration::from_secs(60), || {
        for (when_full, decision) in [
            (WhenFull::Tempfail, Decision::Tempfail),
            (WhenFull::Accept, Decision::Accept),
        ] {
            let server = TestServer::with(
                |b| b.max_connections(1).queue(0).when_full(when_full),
                Plain::default,
            );
            let mut served = Mta::connect(&server.spec);
            let mut over = Mta::connect(&server.spec);
            assert_eq!(
                over.connect_stage("client.example", "192.0.2.9", 25),
                Answer::Decision(decision.clone()),
                "{when_full:?}"
            );
            assert!(over.closed_by_milter(Duration::from_secs(5)));
            served.message_until_eom();
            assert_eq!(served.eom().decision, Decision::Continue);
            assert_eq!(server.handle.stats().open, 1);
        }
    });
}
