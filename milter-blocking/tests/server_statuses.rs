//! Every status at every stage produces the right reply.
#![allow(clippy::unwrap_used)]

mod common;

use common::{watchdog, Answer, Mta, TestServer};
use milter_blocking::milter_core::client::Decision;
use milter_blocking::milter_core::Command;
use milter_blocking::{
    ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, ProtocolOpts,
    Spec, Stage, Status,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Plan = Arc<Mutex<(Stage, Status)>>;

struct Fixed(Plan);

impl Fixed {
    fn at(&self, stage: Stage) -> HandlerResult {
        let plan = self.0.lock().unwrap();
        Ok(if plan.0 == stage {
            plan.1.clone()
        } else {
            Status::Continue
        })
    }
}

impl milter_blocking::Declaration for Fixed {}

#[milter_blocking::handlers]
impl Milter for Fixed {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec::ALL_STAGES;
    }

    fn connect(&mut self, _: &mut Context<'_>, _: &[u8], _: ConnectAddr<'_>) -> HandlerResult {
        self.at(Stage::Connect)
    }
    fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> HandlerResult {
        self.at(Stage::Helo)
    }
    fn mail(&mut self, _: &mut Context<'_>, _: &EnvelopeAddr<'_>) -> HandlerResult {
        self.at(Stage::Mail)
    }
    fn rcpt(&mut self, _: &mut Context<'_>, _: &EnvelopeAddr<'_>) -> HandlerResult {
        self.at(Stage::Rcpt)
    }
    fn data(&mut self, _: &mut Context<'_>) -> HandlerResult {
        self.at(Stage::Data)
    }
    fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> HandlerResult {
        self.at(Stage::Header)
    }
    fn eoh(&mut self, _: &mut Context<'_>) -> HandlerResult {
        self.at(Stage::Eoh)
    }
    fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> HandlerResult {
        self.at(Stage::Body)
    }
    fn eom(&mut self, _: &mut EomContext<'_, Self>) -> HandlerResult {
        self.at(Stage::Eom)
    }
    fn unknown(&mut self, _: &mut Context<'_>, _: &[u8]) -> HandlerResult {
        self.at(Stage::Unknown)
    }
}

struct Skipper(Plan);

impl milter_blocking::Declaration for Skipper {}

#[milter_blocking::handlers]
impl Milter for Skipper {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec {
            options: ProtocolOpts::SKIP,
            ..Spec::ALL_STAGES
        };
    }

    fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> HandlerResult {
        Fixed(self.0.clone()).at(Stage::Body)
    }
}

fn statuses() -> Vec<Status> {
    vec![
        Status::Continue,
        Status::Accept,
        Status::Reject,
        Status::Tempfail,
        Status::Discard,
        Status::Skip,
        Status::reply(550, Some("5.7.1"), "no 100%").unwrap(),
        Status::reply(451, Some("4.7.1"), "later").unwrap(),
    ]
}

/// What the MTA should see for a status at a stage (SKIP not negotiated).
fn expected(stage: Stage, status: &Status, skip_negotiated: bool) -> Decision {
    match (stage, status) {
        (_, Status::Continue) => Decision::Continue,
        (Stage::Connect | Stage::Helo | Stage::Unknown, Status::Discard) => Decision::Continue,
        (Stage::Unknown, Status::Accept) => Decision::Continue,
        (Stage::Body, Status::Skip) if skip_negotiated => Decision::Skip,
        (_, Status::Skip) => Decision::Continue,
        (_, Status::Accept) => Decision::Accept,
        (_, Status::Reject) => Decision::Reject,
        (_, Status::Tempfail) => Decision::Tempfail,
        (_, Status::Discard) => Decision::Discard,
        (_, Status::Reply(r)) => Decision::Reply(r.wire_text().to_vec()),
        (_, other) => panic!("unexpected {other:?}"),
    }
}

/// Drives a connection up to `stage` and returns the answer there.
fn answer_at(mta: &mut Mta, stage: Stage) -> Decision {
    type Step = Box<dyn Fn(&mut Mta) -> Answer>;
    let steps: [(Stage, Step); 10] = [
        (
            Stage::Connect,
            Box::new(|m| m.connect_stage("h", "192.0.2.1", 25)),
        ),
        (Stage::Helo, Box::new(|m| m.helo("h"))),
        (
            Stage::Unknown,
            Box::new(|m| m.send(Command::Unknown(b"XFOO"))),
        ),
        (Stage::Mail, Box::new(|m| m.mail("<a@b>", &[]))),
        (Stage::Rcpt, Box::new(|m| m.rcpt("<c@d>", &[]))),
        (Stage::Data, Box::new(|m| m.send(Command::Data))),
        (Stage::Header, Box::new(|m| m.header("Subject", "x"))),
        (Stage::Eoh, Box::new(|m| m.send(Command::Eoh))),
        (Stage::Body, Box::new(|m| m.body(b"body\r\n"))),
        (Stage::Eom, Box::new(|m| Answer::Decision(m.eom().decision))),
    ];
    for (s, step) in steps.iter() {
        let a = step(mta);
        if *s == stage {
            match a {
                Answer::Decision(d) => return d,
                other => panic!("{stage}: {other:?}"),
            }
        }
        assert_eq!(
            a,
            Answer::Decision(Decision::Continue),
            "before {stage} at {s}"
        );
    }
    unreachable!()
}

#[test]
fn every_status_at_every_stage() {
    watchdog(Duration::from_secs(60), || {
        let plan: Plan = Arc::new(Mutex::new((Stage::Connect, Status::Continue)));
        let p = plan.clone();
        let server = TestServer::start(move || Fixed(p.clone()));
        for stage in Stage::ALL {
            for status in statuses() {
                *plan.lock().unwrap() = (stage, status.clone());
                let mut mta = Mta::connect(&server.spec);
                let got = answer_at(&mut mta, stage);
                assert_eq!(
                    got,
                    expected(stage, &status, false),
                    "{status:?} at {stage}"
                );
            }
        }
    });
}

#[test]
fn skip_is_sent_only_when_negotiated() {
    watchdog(Duration::from_secs(30), || {
        let plan: Plan = Arc::new(Mutex::new((Stage::Body, Status::Skip)));
        let p = plan.clone();
        let server = TestServer::start(move || Skipper(p.clone()));
        let mut mta = Mta::connect(&server.spec);
        assert!(mta.negotiated().protocol.contains(ProtocolOpts::SKIP));
        assert_eq!(answer_at(&mut mta, Stage::Body), Decision::Skip);
        assert_eq!(mta.eom().decision, Decision::Continue);

        // Without SKIP: continue, and later chunks are answered without the handler.
        let p = plan.clone();
        let server = TestServer::start(move || Fixed(p.clone()));
        let mut mta = Mta::connect(&server.spec);
        assert_eq!(answer_at(&mut mta, Stage::Body), Decision::Continue);
        // The handler would skip again; it is not called, the session answers.
        *plan.lock().unwrap() = (Stage::Body, Status::Reject);
        assert_eq!(mta.body(b"more\r\n"), Answer::Decision(Decision::Continue));
        assert_eq!(mta.eom().decision, Decision::Continue);
    });
}

#[test]
fn rejected_recipient_does_not_end_the_message() {
    watchdog(Duration::from_secs(30), || {
        let plan: Plan = Arc::new(Mutex::new((Stage::Rcpt, Status::Reject)));
        let p = plan.clone();
        let server = TestServer::start(move || Fixed(p.clone()));
        let mut mta = Mta::connect(&server.spec);
        assert_eq!(answer_at(&mut mta, Stage::Rcpt), Decision::Reject);
        *plan.lock().unwrap() = (Stage::Rcpt, Status::Continue);
        assert_eq!(mta.rcpt("<e@f>", &[]), Answer::Decision(Decision::Continue));
        assert_eq!(
            mta.send(Command::Data),
            Answer::Decision(Decision::Continue)
        );
    });
}
