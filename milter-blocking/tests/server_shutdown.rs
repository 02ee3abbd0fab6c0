//! Graceful shutdown with connections in flight.
#![allow(clippy::unwrap_used)]

mod common;

use common::{continue_, watchdog, Mta, TestServer};
use milter_blocking::milter_core::client::Decision;
use milter_blocking::milter_core::Command;
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

#[test]
fn messages_in_flight_finish_and_idle_connections_close() {
    watchdog(Duration::from_secs(60), || {
        let server = TestServer::start(Plain::default);
        let mut busy = Mta::connect(&server.spec);
        busy.connect_stage("h", "192.0.2.1", 25);
        busy.mail("<a@b>", &[]);
        busy.rcpt("<c@d>", &[]);
        let mut idle = Mta::connect(&server.spec);
        idle.connect_stage("h", "192.0.2.1", 25);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while server.handle.stats().open < 2 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        let started = Instant::now();
        server.handle.shutdown(Duration::from_secs(20));
        // The idle one is closed at once.
        assert!(idle.closed_by_milter(Duration::from_secs(5)));
        // The busy one finishes its message ...
        assert_eq!(busy.send(Command::Data), continue_());
        assert_eq!(busy.send(Command::Eoh), continue_());
        assert_eq!(busy.eom().decision, Decision::Continue);
        // ... then it is closed, and run returns well before the deadline.
        assert!(busy.closed_by_milter(Duration::from_secs(5)));
        server.stop(Duration::from_secs(20)).unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
    });
}

#[test]
fn the_deadline_cuts_stuck_messages() {
    watchdog(Duration::from_secs(60), || {
        let server = TestServer::start(Plain::default);
        let mut stuck = Mta::connect(&server.spec);
        stuck.connect_stage("h", "192.0.2.1", 25);
        stuck.mail("<a@b>", &[]);
        let started = Instant::now();
        server.stop(Duration::from_millis(500)).unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(stuck.closed_by_milter(Duration::from_secs(5)));
    });
}

#[test]
fn shutdown_many_connections_mid_message() {
    watchdog(Duration::from_secs(120), || {
        let server = TestServer::start(Plain::default);
        let mut conns: Vec<Mta> = (0..100)
            .map(|_| {
                let mut m = Mta::connect(&server.spec);
                m.connect_stage("h", "192.0.2.1", 25);
                m.mail("<a@b>", &[]);
                m.rcpt("<c@d>", &[]);
                m
            })
            .collect();
        server.handle.shutdown(Duration::from_secs(30));
        for m in &mut conns {
            assert_eq!(m.send(Command::Data), continue_());
            assert_eq!(m.eom().decision, Decision::Continue);
        }
        server.stop(Duration::from_secs(30)).unwrap();
        for m in &mut conns {
            assert!(m.closed_by_milter(Duration::from_secs(5)));
        }
    });
}
