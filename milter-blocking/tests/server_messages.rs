//! Several messages per connection, abort mid-message, implicit aborts, and
//! quit-new-connection.
#![allow(clippy::unwrap_used)]

mod common;

use common::{continue_, watchdog, Mta, TestServer};
use milter_blocking::milter_core::client::Decision;
use milter_blocking::milter_core::Command;
use milter_blocking::{
    Actions, Context, EnvelopeAddr, EomContext, HandlerResult, Milter, Spec, Stages, Status,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Log = Arc<Mutex<Vec<String>>>;

/// Counts recipients per message and stamps the count at end of message.
struct Counter {
    log: Log,
    rcpts: usize,
}

impl milter_blocking::Declaration for Counter {
    const ACTIONS: milter_blocking::Actions = Actions::ADD_HEADER;
    fn reset_message(&mut self) {
        self.rcpts = 0;
    }
}
impl milter_blocking::action::AddHeader for Counter {}

#[milter_blocking::handlers]
impl Milter for Counter {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec {
            handled: Stages::CONNECT.union(Stages::MAIL).union(Stages::RCPT),
            actions: Actions::ADD_HEADER,
            ..Spec::NONE
        };
    }

    fn mail(&mut self, _: &mut Context<'_>, a: &EnvelopeAddr<'_>) -> HandlerResult {
        self.log
            .lock()
            .unwrap()
            .push(format!("mail {}", String::from_utf8_lossy(a.address)));
        Ok(Status::Continue)
    }
    fn rcpt(&mut self, _: &mut Context<'_>, _: &EnvelopeAddr<'_>) -> HandlerResult {
        self.rcpts += 1;
        Ok(Status::Continue)
    }
    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        ctx.add_header("X-Rcpts", self.rcpts.to_string())?;
        Ok(Status::Continue)
    }
    fn abort(&mut self, _: &mut Context<'_>) -> HandlerResult<()> {
        self.log.lock().unwrap().push("abort".into());
        Ok(())
    }
    fn close(&mut self, _: &mut Context<'_>) -> HandlerResult<()> {
        self.log.lock().unwrap().push("close".into());
        Ok(())
    }
}

fn rcpt_header(eom: &common::EomAnswer) -> String {
    match &eom.modifications[..] {
        [milter_blocking::milter_core::Modification::AddHeader { value, .. }] => {
            String::from_utf8_lossy(value).into_owned()
        }
        other => panic!("{other:?}"),
    }
}

fn start() -> (TestServer, Log) {
    let log: Log = Arc::default();
    let l = log.clone();
    let server = TestServer::start(move || Counter {
        log: l.clone(),
        rcpts: 0,
    });
    (server, log)
}

fn wait_close(log: &Log, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while log.lock().unwrap().iter().filter(|e| *e == "close").count() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn state_resets_between_messages_on_one_connection() {
    watchdog(Duration::from_secs(30), || {
        let (server, log) = start();
        let mut mta = Mta::connect(&server.spec);
        // Only connect, mail and rcpt are asked for.
        assert_eq!(mta.helo("h"), common::Answer::Skipped);
        assert_eq!(mta.connect_stage("h", "192.0.2.1", 25), continue_());
        for n in 1..=3 {
            assert_eq!(mta.mail("<a@b>", &[]), continue_());
            for _ in 0..n {
                assert_eq!(mta.rcpt("<c@d>", &[]), continue_());
            }
            assert_eq!(mta.send(Command::Data), common::Answer::Skipped);
            assert_eq!(rcpt_header(&mta.eom()), n.to_string());
            // Postfix sends an abort after every transaction: no abort handler call.
            mta.send_only(Command::Abort);
            mta.send_only(Command::Abort);
        }
        mta.send_only(Command::Quit);
        wait_close(&log, 1);
        assert_eq!(
            *log.lock().unwrap(),
            ["mail <a@b>", "mail <a@b>", "mail <a@b>", "close"]
        );
    });
}

#[test]
fn abort_mid_message_drops_its_state() {
    watchdog(Duration::from_secs(30), || {
        let (server, log) = start();
        let mut mta = Mta::connect(&server.spec);
        mta.connect_stage("h", "192.0.2.1", 25);
        mta.mail("<a@b>", &[]);
        mta.rcpt("<c@d>", &[]);
        mta.rcpt("<c@d>", &[]);
        mta.send_only(Command::Abort);
        mta.mail("<e@f>", &[]);
        mta.rcpt("<c@d>", &[]);
        assert_eq!(rcpt_header(&mta.eom()), "1");
        // A new MAIL inside a message is an implicit abort.
        mta.mail("<g@h>", &[]);
        mta.rcpt("<c@d>", &[]);
        mta.rcpt("<c@d>", &[]);
        mta.mail("<i@j>", &[]);
        assert_eq!(rcpt_header(&mta.eom()), "0");
        mta.send_only(Command::Quit);
        wait_close(&log, 1);
        assert_eq!(
            *log.lock().unwrap(),
            [
                "mail <a@b>",
                "abort",
                "mail <e@f>",
                "mail <g@h>",
                "abort",
                "mail <i@j>",
                "close"
            ]
        );
    });
}

#[test]
fn quit_mid_message_aborts_then_closes() {
    watchdog(Duration::from_secs(30), || {
        let (server, log) = start();
        let mut mta = Mta::connect(&server.spec);
        mta.connect_stage("h", "192.0.2.1", 25);
        mta.mail("<a@b>", &[]);
        mta.send_only(Command::Quit);
        wait_close(&log, 1);
        assert_eq!(*log.lock().unwrap(), ["mail <a@b>", "abort", "close"]);
        // And end of input mid-message does the same.
        let mut mta = Mta::connect(&server.spec);
        mta.connect_stage("h", "192.0.2.1", 25);
        mta.mail("<z@b>", &[]);
        drop(mta);
        wait_close(&log, 2);
        assert_eq!(log.lock().unwrap()[3..], ["mail <z@b>", "abort", "close"]);
    });
}

#[test]
fn quit_new_connection_starts_a_new_session_without_negotiation() {
    watchdog(Duration::from_secs(30), || {
        let (server, log) = start();
        let mut mta = Mta::connect(&server.spec);
        mta.connect_stage("h", "192.0.2.1", 25);
        mta.mail("<a@b>", &[]);
        mta.rcpt("<c@d>", &[]);
        assert_eq!(rcpt_header(&mta.eom()), "1");
        mta.send_only(Command::QuitNewConnection);
        wait_close(&log, 1);
        // Same socket, new session, same negotiated options.
        assert_eq!(mta.connect_stage("h2", "192.0.2.2", 26), continue_());
        mta.mail("<k@l>", &[]);
        mta.rcpt("<c@d>", &[]);
        mta.rcpt("<c@d>", &[]);
        let eom = mta.eom();
        assert_eq!(eom.decision, Decision::Continue);
        assert_eq!(rcpt_header(&eom), "2");
        mta.send_only(Command::Quit);
        wait_close(&log, 2);
    });
}

#[test]
fn close_runs_once_when_only_negotiation_happened() {
    watchdog(Duration::from_secs(30), || {
        let (server, log) = start();
        let mta = Mta::connect(&server.spec);
        drop(mta);
        wait_close(&log, 1);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(*log.lock().unwrap(), ["close"]);
    });
}
