//! The `rewriter` example, run as its own process and driven by the MTA-side
//! client: the recipient, sender and Subject modifications and the quarantine,
//! the message as the MTAs would queue it, what it negotiates, start-up errors,
//! and shadow mode.

// A failed unwrap in a test helper is a failed test.
#![allow(clippy::unwrap_used)]

#[path = "support/milter_process.rs"]
mod milter_process;

use milter_blocking::client::{
    ApplyRules, Client, Decision, Envelope, Message, Modification, Profile, Response, Timeouts,
    Verdict,
};
use milter_blocking::{Actions, Stages};
use milter_process::{free_port, run_with_timeout, spawn_milter, MilterGuard, TempDir};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The longest a test may take before it counts as hung.
const WATCHDOG: Duration = Duration::from_secs(60);

const BIN: &str = env!("CARGO_BIN_EXE_rewriter");

const CONFIG: &str = "\
# test configuration
rcpt          sales@example.com          team-sales@example.com
rcpt          <Info@Example.com>         helpdesk@example.com
rcpt          orders@example.com         team-sales@example.com
sender-domain legacy.example.com         bounces@example.com
marker        viagra
marker        lottery
";

/// The configuration in a temporary directory, and the milter running with it.
struct Running {
    milter: MilterGuard,
    _dir: TempDir,
}

fn start(extra: &[&str]) -> Running {
    let dir = TempDir::new("rewriter-config").unwrap();
    let path = dir.path().join("rewriter.conf");
    std::fs::write(&path, CONFIG).unwrap();
    let mut args = vec!["--config", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let spec = format!("inet:{}@127.0.0.1", free_port());
    let milter = spawn_milter(Path::new(BIN), &args, &spec);
    Running { milter, _dir: dir }
}

fn open(spec: &str, profile: Profile) -> Client {
    Client::builder()
        .profile(profile)
        .timeouts(Timeouts::uniform(Duration::from_secs(10)))
        .open(spec)
        .unwrap()
}

/// Runs `test` on its own thread with the milter's socket spec; fails when it
/// panics or takes longer than [`WATCHDOG`], printing the milter's log. The guard
/// stays on this thread, so a hang still ends with the milter stopped.
fn watchdog(milter: &MilterGuard, test: impl FnOnce(String) + Send + 'static) {
    let spec = milter.socket().to_libmilter();
    let (done, finished) = mpsc::channel();
    let worker = thread::spawn(move || {
        test(spec);
        let _ = done.send(());
    });
    match finished.recv_timeout(WATCHDOG) {
        Ok(()) => worker.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            eprintln!("--- milter log ---\n{}", milter.log());
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!(
                "test still running after {WATCHDOG:?}\n--- milter log ---\n{}",
                milter.log()
            )
        }
    }
}

/// The milter's log once it contains `needle` (it is written by another
/// process, so it may lag a little), or after a few seconds whatever it holds.
fn wait_for_log(milter: &MilterGuard, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = milter.log();
        if log.contains(needle) || Instant::now() > deadline {
            return log;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn suspect() -> Message {
    Message::parse(
        b"From: alice@hr.legacy.example.com\r\nTo: sales@example.com\r\n\
          Subject: Cheap VIAGRA here\r\n\r\nBuy now.\r\n",
    )
}

fn suspect_envelope() -> Envelope {
    Envelope::new("<Alice@HR.Legacy.Example.com>")
        .rcpt("<Sales@Example.COM>")
        .rcpt("<bob@example.com>")
}

fn rcpts(env: &Envelope) -> Vec<String> {
    env.recipients.iter().map(ToString::to_string).collect()
}

#[test]
fn rewrites_recipients_and_sender_and_tags_and_quarantines_a_suspect_message() {
    let running = start(&[]);
    watchdog(&running.milter, |spec| {
        for profile in [Profile::Postfix, Profile::Sendmail] {
            let mut c = open(&spec, profile);
            let env = suspect_envelope();
            let t = c.send_message(&env, &suspect()).unwrap();
            assert_eq!(
                t.verdict,
                Verdict::Quarantine(b"rewriter: marker word \"viagra\"".to_vec())
            );
            let eom = t.eom.as_ref().unwrap();
            assert_eq!(eom.decision, Decision::Continue);
            // The original recipient exactly as received, then the new one.
            assert_eq!(eom.deleted_rcpts(), [b"<Sales@Example.COM>".as_slice()]);
            assert_eq!(eom.added_rcpts(), [b"<team-sales@example.com>".as_slice()]);
            assert_eq!(eom.new_sender(), Some(b"<bounces@example.com>".as_slice()));
            assert_eq!(
                eom.header_changes("Subject"),
                [(1, b"[SUSPECT] Cheap VIAGRA here".as_slice())]
            );
            assert_eq!(
                eom.quarantine(),
                Some(b"rewriter: marker word \"viagra\"".as_slice())
            );
            assert!(matches!(
                eom.modifications.last(),
                Some(Modification::Quarantine(_))
            ));

            // What each MTA would queue: Sendmail deletes only an exact match,
            // so the address must be the one received.
            for rules in [ApplyRules::Postfix, ApplyRules::Sendmail] {
                let queued = t.delivered(rules, &suspect(), &env).unwrap();
                assert_eq!(
                    rcpts(&queued.envelope),
                    ["<bob@example.com>", "<team-sales@example.com>"],
                    "{rules:?}"
                );
                assert_eq!(queued.envelope.sender.address, "<bounces@example.com>");
                assert_eq!(
                    queued.message.header("Subject"),
                    Some(b"[SUSPECT] Cheap VIAGRA here".as_slice())
                );
                assert_eq!(queued.message.header_all("Subject").len(), 1);
            }
            c.quit().unwrap();
        }
    });
}

#[test]
fn adds_a_subject_when_there_is_none_and_finds_a_marker_cut_by_a_chunk_boundary() {
    let running = start(&[]);
    watchdog(&running.milter, |spec| {
        let mut c = open(&spec, Profile::Postfix);
        c.connect("client.example.net", &Default::default())
            .unwrap();
        let body = b"You won the LOTTERY, claim it.\r\n";
        // Every split of the body into two chunks, one message each.
        for split in 1..body.len() {
            c.mail("<a@example.org>").unwrap();
            c.rcpt("<b@example.com>").unwrap();
            c.header("From", "a@example.org").unwrap();
            c.eoh().unwrap();
            c.body(&body[..split]).unwrap();
            c.body(&body[split..]).unwrap();
            let eom = c.eom().unwrap();
            assert!(
                eom.has_added_header("Subject", "[SUSPECT]"),
                "split {split}"
            );
            assert_eq!(
                eom.quarantine(),
                Some(b"rewriter: marker word \"lottery\"".as_slice()),
                "split {split}"
            );
            c.abort().unwrap();
        }
        c.quit().unwrap();

        // Whole words only; an already tagged Subject is left alone.
        let mut c = open(&spec, Profile::Postfix);
        let env = Envelope::new("a@example.org").rcpt("b@example.com");
        let clean = Message::parse(
            b"Subject: lotterywinners and viagra2\r\n\r\nnotviagra lottery_ticket\r\n",
        );
        let t = c.send_message(&env, &clean).unwrap();
        assert_eq!(t.verdict, Verdict::Accept);
        assert!(t.eom.unwrap().modifications.is_empty());
        let tagged = Message::parse(b"Subject: [SUSPECT] Lottery\r\n\r\nx\r\n");
        let eom = c.send_message(&env, &tagged).unwrap().eom.unwrap();
        assert!(eom.header_changes("Subject").is_empty());
        assert!(eom.quarantine().is_some());
        c.quit().unwrap();
    });
}

#[test]
fn leaves_other_mail_and_bounces_alone_and_adds_each_new_recipient_once() {
    let running = start(&[]);
    watchdog(&running.milter, |spec| {
        let mut c = open(&spec, Profile::Postfix);
        let plain = Message::parse(b"Subject: hello\r\n\r\nHi.\r\n");

        // Nothing configured applies: no modification at all.
        let env = Envelope::new("someone@example.org")
            .rcpt("bob@example.com")
            .rcpt("sales@example.net");
        let eom = c.send_message(&env, &plain).unwrap().eom.unwrap();
        assert!(eom.modifications.is_empty(), "{:?}", eom.modifications);

        // A bounce (null sender) keeps its sender; sales@ and orders@ both map to
        // team-sales@, which is added once; info@ maps case-insensitively.
        let env = Envelope::new("<>")
            .rcpt("<sales@example.com>")
            .rcpt("<ORDERS@example.com>")
            .rcpt("<info@example.com>");
        let eom = c.send_message(&env, &plain).unwrap().eom.unwrap();
        assert_eq!(eom.new_sender(), None);
        assert_eq!(
            eom.deleted_rcpts(),
            [
                b"<sales@example.com>".as_slice(),
                b"<ORDERS@example.com>",
                b"<info@example.com>"
            ]
        );
        assert_eq!(
            eom.added_rcpts(),
            [
                b"<team-sales@example.com>".as_slice(),
                b"<helpdesk@example.com>"
            ]
        );

        // The new recipient is already a recipient: only the delete.
        let env = Envelope::new("a@legacy.example.com.evil.example")
            .rcpt("<sales@example.com>")
            .rcpt("<team-sales@example.com>");
        let eom = c.send_message(&env, &plain).unwrap().eom.unwrap();
        assert_eq!(eom.deleted_rcpts(), [b"<sales@example.com>".as_slice()]);
        assert!(eom.added_rcpts().is_empty());
        // Not a subdomain of legacy.example.com.
        assert_eq!(eom.new_sender(), None);
        c.quit().unwrap();
    });
}

#[test]
fn collects_without_replies_and_declares_exactly_its_actions() {
    let running = start(&[]);
    watchdog(&running.milter, |spec| {
        let mut c = open(&spec, Profile::Postfix);
        let n = c.negotiated().clone();
        assert_eq!(
            n.actions,
            Actions::ADD_HEADER
                | Actions::CHANGE_HEADER
                | Actions::ADD_RCPT
                | Actions::DELETE_RCPT
                | Actions::CHANGE_FROM
                | Actions::QUARANTINE
        );
        let away = Stages::CONNECT | Stages::HELO | Stages::DATA | Stages::EOH | Stages::UNKNOWN;
        assert!(n.skipped.contains(away), "skipped: {:?}", n.skipped);
        let collect = Stages::MAIL | Stages::RCPT | Stages::HEADER | Stages::BODY;
        assert!(!n.skipped.intersects(collect));
        assert!(n.no_reply.contains(collect), "no reply: {:?}", n.no_reply);

        let t = c.send_message(&suspect_envelope(), &suspect()).unwrap();
        for step in &t.steps {
            if collect.has(step.stage) {
                assert_eq!(step.response, Response::NoReply, "{}", step.stage);
            }
        }
        c.quit().unwrap();
    });
}

#[test]
fn shadow_mode_sends_no_modification_and_logs_them_all() {
    let running = start(&["--shadow"]);
    watchdog(&running.milter, |spec| {
        let mut c = open(&spec, Profile::Postfix);
        let t = c.send_message(&suspect_envelope(), &suspect()).unwrap();
        assert_eq!(t.verdict, Verdict::Accept);
        let eom = t.eom.unwrap();
        assert_eq!(eom.decision, Decision::Continue);
        assert!(eom.modifications.is_empty(), "{:?}", eom.modifications);
        c.quit().unwrap();
    });
    let log = wait_for_log(&running.milter, "would have sent");
    for want in [
        "delete_rcpt <Sales@Example.COM>",
        "add_rcpt <team-sales@example.com>",
        "change_from <bounces@example.com>",
        "change_header Subject[1]: [SUSPECT] Cheap VIAGRA here",
        "quarantine rewriter: marker word \"viagra\"",
    ] {
        assert!(log.contains(want), "{want}\n{log}");
    }
}

#[test]
fn reports_every_bad_line_and_does_not_start() {
    let dir = TempDir::new("rewriter-bad").unwrap();
    let path = dir.path().join("bad.conf");
    std::fs::write(
        &path,
        "rcpt a@example.com b@example.com\n\
         rcpt a@example.com c@example.com\n\
         rcpt nobody b@example.com\n\
         sender-domain user@example.com x@example.com\n\
         marker two words\n\
         marker not-a-word\n\
         rewrite everything\n",
    )
    .unwrap();
    let spec = format!("inet:{}@127.0.0.1", free_port());
    let out = run_with_timeout(
        Command::new(BIN)
            .env("MILTER_REWRITER_CONFIG", &path)
            .arg(&spec),
        Duration::from_secs(30),
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let file = path.display().to_string();
    for line in 2..=7 {
        assert!(
            stderr.contains(&format!("{file}:{line}: ")),
            "line {line}:\n{stderr}"
        );
    }
    assert!(!stderr.contains(&format!("{file}:1:")), "{stderr}");
    assert!(stderr.contains("6 errors"), "{stderr}");
}
