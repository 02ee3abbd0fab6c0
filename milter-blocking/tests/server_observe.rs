//! Shadow mode and the observability hooks.
#![allow(clippy::unwrap_used)]

mod common;

use common::{continue_, watchdog, Capture, Mta, TestServer};
use milter_blocking::milter_core::client::Decision;
use milter_blocking::{
    Actions, ConnectionInfo, Context, EnvelopeAddr, EomContext, HandlerResult, Hooks, Milter, Spec,
    Stage, Status,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn logs() -> &'static Capture {
    common::capture_logs(log::LevelFilter::Info, false)
}

#[derive(Default)]
struct Strict;

impl milter_blocking::Declaration for Strict {
    const ACTIONS: milter_blocking::Actions = Actions::ADD_HEADER.union(Actions::CHANGE_BODY);
}
impl milter_blocking::action::AddHeader for Strict {}
impl milter_blocking::action::ChangeBody for Strict {}

#[milter_blocking::handlers]
impl Milter for Strict {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec {
            actions: Actions::ADD_HEADER.union(Actions::CHANGE_BODY),
            ..Spec::ALL_STAGES
        };
    }

    fn rcpt(&mut self, _: &mut Context<'_>, r: &EnvelopeAddr<'_>) -> HandlerResult {
        if r.address == b"<spam@x>" {
            return Ok(Status::reply(550, Some("5.7.1"), "go away")?);
        }
        Ok(Status::Continue)
    }
    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        ctx.add_header("X-Verdict", "spam")?;
        ctx.replace_body("censored\r\n")?;
        // Validation still applies in shadow mode.
        assert!(ctx.add_header("Bad:Name", "x").is_err());
        Ok(Status::Reject)
    }
}

#[test]
fn shadow_mode_sends_nothing_but_logs_what_would_have_happened() {
    let logs = logs();
    watchdog(Duration::from_secs(30), move || {
        let server = TestServer::with(|b| b.shadow(true), Strict::default);
        let mut mta = Mta::connect(&server.spec);
        mta.connect_stage("h", "192.0.2.1", 25);
        mta.mail("<a@b>", &[]);
        assert_eq!(mta.rcpt("<spam@x>", &[]), continue_());
        mta.macros(b'E', &[("i", "SHADOWQ1")]);
        let eom = mta.eom();
        assert_eq!(eom.decision, Decision::Continue);
        assert!(eom.modifications.is_empty(), "{:?}", eom.modifications);
        let lines = logs.0.lock().unwrap().clone();
        let line = lines
            .iter()
            .find(|l| l.contains("shadow:") && l.contains("SHADOWQ1"))
            .unwrap_or_else(|| panic!("no shadow line in {lines:?}"));
        assert!(line.starts_with("INFO"), "{line}");
        assert!(line.contains("reply 550 5.7.1 go away at rcpt"), "{line}");
        assert!(line.contains("add_header X-Verdict: spam"), "{line}");
        assert!(line.contains("replace_body 10 bytes"), "{line}");
        assert!(line.contains("reject at eom"), "{line}");
    });
}

#[derive(Default)]
struct Counts {
    opened: AtomicUsize,
    closed: AtomicUsize,
    stages: AtomicUsize,
    verdicts: Mutex<Vec<(Stage, String)>>,
    modifications: AtomicUsize,
    failures: AtomicUsize,
    protocol_errors: AtomicUsize,
    timeouts: AtomicUsize,
}

impl Hooks for Counts {
    fn connection_opened(&self, _: &ConnectionInfo) {
        self.opened.fetch_add(1, Ordering::SeqCst);
    }
    fn connection_closed(&self, _: &ConnectionInfo, _: Duration) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
    fn stage(&self, _: &ConnectionInfo, _: Stage, _: Duration) {
        self.stages.fetch_add(1, Ordering::SeqCst);
    }
    fn verdict(&self, _: &ConnectionInfo, stage: Stage, status: &Status) {
        self.verdicts
            .lock()
            .unwrap()
            .push((stage, status.name().into_owned()));
    }
    fn modification(&self, _: &ConnectionInfo, _: &'static str) {
        self.modifications.fetch_add(1, Ordering::SeqCst);
    }
    fn handler_failed(&self, _: &ConnectionInfo, _: Option<Stage>, _: bool) {
        self.failures.fetch_add(1, Ordering::SeqCst);
    }
    fn protocol_error(&self, _: &ConnectionInfo, _: &dyn std::error::Error) {
        self.protocol_errors.fetch_add(1, Ordering::SeqCst);
    }
    fn timeout(&self, _: &ConnectionInfo) {
        self.timeouts.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn hooks_see_connections_stages_verdicts_and_errors() {
    watchdog(Duration::from_secs(30), || {
        let counts = Arc::new(Counts::default());
        let server = TestServer::with(|b| b.hooks(counts.clone()), Strict::default);
        let mut mta = Mta::connect(&server.spec);
        mta.message_until_eom();
        assert_eq!(mta.eom().decision, Decision::Reject);
        mta.raw(b"\x00\x00\x00\x02Zz");
        assert!(mta.closed_by_milter(Duration::from_secs(5)));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while counts.closed.load(Ordering::SeqCst) < 1 {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(counts.opened.load(Ordering::SeqCst), 1);
        // connect, helo, mail, rcpt, data, header, eoh, body, eom
        assert_eq!(counts.stages.load(Ordering::SeqCst), 9);
        assert_eq!(
            *counts.verdicts.lock().unwrap(),
            [(Stage::Eom, "reject".to_string())]
        );
        assert_eq!(counts.modifications.load(Ordering::SeqCst), 3);
        assert_eq!(counts.protocol_errors.load(Ordering::SeqCst), 1);
        assert_eq!(counts.failures.load(Ordering::SeqCst), 0);
    });
}

#[test]
fn the_timeout_hook_sees_a_silent_mta_and_no_other() {
    let logs = logs();
    watchdog(Duration::from_secs(30), move || {
        let counts = Arc::new(Counts::default());
        let limit = Duration::from_millis(300);
        let server = TestServer::with(
            |b| b.hooks(counts.clone()).read_timeout(limit),
            Strict::default,
        );
        // One MTA closes at once, one keeps talking for longer than the
        // timeout in all, one falls silent in a message.
        let mut quick = Mta::connect(&server.spec);
        quick.connect_stage("quick", "192.0.2.1", 25);
        let mut talker = Mta::connect(&server.spec);
        talker.connect_stage("talker", "192.0.2.2", 25);
        let mut silent = Mta::connect(&server.spec);
        silent.connect_stage("silent", "192.0.2.3", 25);
        let began = std::time::Instant::now();
        assert_eq!(silent.mail("<a@b>", &[]), continue_());
        drop(quick);
        for _ in 0..8 {
            std::thread::sleep(limit / 4);
            assert_eq!(talker.helo("again"), continue_());
        }
        assert!(silent.closed_by_milter(Duration::from_secs(10)));
        assert!(
            began.elapsed() >= limit,
            "cut after {:?}, before the timeout",
            began.elapsed()
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while counts.closed.load(Ordering::SeqCst) < 2 {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(counts.timeouts.load(Ordering::SeqCst), 1);
        // The one still talking is still served.
        assert_eq!(talker.mail("<c@d>", &[]), continue_());
        let lines = logs.0.lock().unwrap().clone();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("WARN") && l.contains("no command from the MTA for 300ms")),
            "{lines:?}"
        );
    });
}
