//! A handler that panics or returns an error: its connection answers the failure
//! status and closes; every other connection carries on.
#![allow(clippy::unwrap_used)]

mod common;

use common::{continue_, watchdog, Answer, Mta, TestServer};
use milter_blocking::milter_core::client::Decision;
use milter_blocking::{Context, EnvelopeAddr, HandlerError, HandlerResult, Milter, Spec, Status};
use std::time::Duration;

#[derive(Default)]
struct Fragile;

impl milter_blocking::Declaration for Fragile {}

#[milter_blocking::handlers]
impl Milter for Fragile {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec::ALL_STAGES;
    }

    fn rcpt(&mut self, _: &mut Context<'_>, a: &EnvelopeAddr<'_>) -> HandlerResult {
        match a.address {
            b"<panic@x>" => panic!("handler bug"),
            b"<error@x>" => Err(HandlerError::msg("database unavailable")),
            _ => Ok(Status::Continue),
        }
    }
}

fn rcpt_then_closed(spec: &milter_blocking::SocketSpec, rcpt: &str) -> Answer {
    let mut m = Mta::connect(spec);
    m.connect_stage("h", "192.0.2.1", 25);
    m.mail("<a@b>", &[]);
    let a = m.rcpt(rcpt, &[]);
    assert!(
        m.closed_by_milter(Duration::from_secs(5)),
        "connection must close"
    );
    a
}

#[test]
fn panics_and_errors_answer_tempfail_and_close_only_their_connection() {
    watchdog(Duration::from_secs(60), || {
        let server = TestServer::start(Fragile::default);
        let mut healthy = Mta::connect(&server.spec);
        healthy.connect_stage("h", "192.0.2.1", 25);
        for bad in ["<panic@x>", "<error@x>", "<panic@x>"] {
            assert_eq!(
                rcpt_then_closed(&server.spec, bad),
                Answer::Decision(Decision::Tempfail)
            );
            healthy.mail("<a@b>", &[]);
            assert_eq!(healthy.rcpt("<ok@x>", &[]), continue_());
            assert_eq!(healthy.eom().decision, Decision::Continue);
        }
    });
}

#[test]
fn the_failure_status_is_configurable() {
    watchdog(Duration::from_secs(30), || {
        let server = TestServer::with(|b| b.failure_status(Status::Reject), Fragile::default);
        assert_eq!(
            rcpt_then_closed(&server.spec, "<panic@x>"),
            Answer::Decision(Decision::Reject)
        );
    });
}
