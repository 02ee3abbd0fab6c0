//! The `header-stamper` example, run as its own process and driven by the
//! MTA-side client: the headers it adds, its per-connection and per-message
//! state, what it negotiates, and shadow mode.

// A failed unwrap in a test helper is a failed test.
#![allow(clippy::unwrap_used)]

#[path = "support/milter_process.rs"]
mod milter_process;

use milter_blocking::client::{Client, Decision, Envelope, Message, Profile, Response, Timeouts};
use milter_blocking::{Actions, Stage, Stages};
use milter_process::{free_port, spawn_milter, MilterGuard};
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// The longest a test may take before it counts as hung.
const WATCHDOG: Duration = Duration::from_secs(60);

fn start(args: &[&str]) -> MilterGuard {
    let spec = format!("inet:{}@127.0.0.1", free_port());
    spawn_milter(Path::new(env!("CARGO_BIN_EXE_header-stamper")), args, &spec)
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

fn message() -> Message {
    Message::parse(b"From: a@example.org\r\nSubject: hi\r\n\r\nHello.\r\n")
}

fn client_at(name: &str, addr: &str) -> Envelope {
    Envelope::new("a@example.org").client(name, addr.parse().unwrap())
}

#[test]
fn stamps_client_recipients_and_a_per_connection_counter() {
    let milter = start(&[]);
    watchdog(&milter, |spec| {
        let mut c = open(&spec, Profile::Postfix);
        let first = client_at("mail.example.net", "192.0.2.7:4711")
            .rcpt("b@example.com")
            .rcpt("c@example.com");
        let t = c.send_message(&first, &message()).unwrap();
        let eom = t.eom.as_ref().unwrap();
        assert_eq!(eom.decision, Decision::Continue);
        assert!(eom.has_added_header(
            "X-Stamped-By",
            "header-stamper (client mail.example.net [192.0.2.7]; 2 recipients)"
        ));
        assert!(eom.has_added_header("X-Connection-Message", "1"));
        assert_eq!(eom.modifications.len(), 2);

        // The message as Postfix would queue it: the stamps come last.
        let applied = eom.apply(&message(), &first);
        let headers: Vec<String> = applied
            .message
            .headers
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            headers,
            [
                "From: a@example.org",
                "Subject: hi",
                "X-Stamped-By: header-stamper (client mail.example.net [192.0.2.7]; 2 recipients)",
                "X-Connection-Message: 1",
            ]
        );

        // Same connection, second message: the counter goes on, the recipient
        // count (per message) starts again.
        let second = client_at("mail.example.net", "192.0.2.7:4711").rcpt("d@example.com");
        let eom = c.send_message(&second, &message()).unwrap().eom.unwrap();
        assert!(eom.has_added_header(
            "X-Stamped-By",
            "header-stamper (client mail.example.net [192.0.2.7]; 1 recipient)"
        ));
        assert!(eom.has_added_header("X-Connection-Message", "2"));
        c.quit().unwrap();

        // A new connection starts counting again.
        let mut c = open(&spec, Profile::Postfix);
        let eom = c.send_message(&second, &message()).unwrap().eom.unwrap();
        assert!(eom.has_added_header("X-Connection-Message", "1"));
        c.quit().unwrap();
    });
}

#[test]
fn an_aborted_message_leaves_no_per_message_state_behind() {
    let milter = start(&[]);
    watchdog(&milter, |spec| {
        let mut c = open(&spec, Profile::Sendmail);
        let env = client_at("mail.example.net", "192.0.2.7").rcpt("b@example.com");
        c.connect(&env.client_name, &env.client_addr).unwrap();
        c.mail("<a@example.org>").unwrap();
        for r in ["<x@example.com>", "<y@example.com>", "<z@example.com>"] {
            assert_eq!(c.rcpt(r).unwrap(), Response::NoReply);
        }
        c.abort().unwrap();
        let eom = c.send_message(&env, &message()).unwrap().eom.unwrap();
        assert!(eom.has_added_header(
            "X-Stamped-By",
            "header-stamper (client mail.example.net [192.0.2.7]; 1 recipient)"
        ));
        // The aborted message was never stamped, so it is not counted.
        assert!(eom.has_added_header("X-Connection-Message", "1"));
        c.quit().unwrap();
    });
}

#[test]
fn names_unverified_and_ipv6_clients_the_way_received_headers_do() {
    let milter = start(&[]);
    watchdog(&milter, |spec| {
        let cases = [
            (Profile::Postfix, "[192.0.2.9]", "192.0.2.9", "[192.0.2.9]"),
            (
                Profile::Sendmail,
                "mx6.example.net",
                "[2001:db8::25]:25",
                "mx6.example.net [IPv6:2001:db8::25]",
            ),
            (
                Profile::Sendmail,
                "[IPv6:2001:db8::25]",
                "[2001:db8::25]:25",
                "[IPv6:2001:db8::25]",
            ),
        ];
        for (profile, name, addr, shown) in cases {
            let mut c = open(&spec, profile);
            let env = client_at(name, addr).rcpt("b@example.com");
            let eom = c.send_message(&env, &message()).unwrap().eom.unwrap();
            let want = format!("header-stamper (client {shown}; 1 recipient)");
            assert!(
                eom.has_added_header("X-Stamped-By", &want),
                "{profile}: {:?}",
                eom.added_header("X-Stamped-By")
                    .map(String::from_utf8_lossy)
            );
            c.quit().unwrap();
        }
    });
}

#[test]
fn negotiates_away_every_stage_it_does_not_handle() {
    let milter = start(&[]);
    watchdog(&milter, |spec| {
        let mut c = open(&spec, Profile::Postfix);
        let n = c.negotiated().clone();
        let away = Stages::HELO
            | Stages::MAIL
            | Stages::DATA
            | Stages::HEADER
            | Stages::EOH
            | Stages::BODY
            | Stages::UNKNOWN;
        assert!(n.skipped.contains(away), "skipped: {:?}", n.skipped);
        assert!(!n.skipped.intersects(Stages::CONNECT | Stages::RCPT));
        assert!(
            n.no_reply.contains(Stages::RCPT),
            "no reply: {:?}",
            n.no_reply
        );
        assert_eq!(n.actions, Actions::ADD_HEADER);

        let env = Envelope::new("a@example.org").rcpt("b@example.com");
        let t = c.send_message(&env, &message()).unwrap();
        for stage in [
            Stage::Helo,
            Stage::Mail,
            Stage::Data,
            Stage::Header,
            Stage::Eoh,
        ] {
            assert_eq!(t.response(stage), Some(&Response::Skipped), "{stage}");
        }
        assert_eq!(t.response(Stage::Rcpt), Some(&Response::NoReply));
        assert_eq!(
            t.response(Stage::Connect),
            Some(&Response::Replied(Decision::Continue))
        );
        c.quit().unwrap();
    });
}

#[test]
fn shadow_mode_sends_no_header_and_logs_what_it_would_have_added() {
    let milter = start(&["--shadow"]);
    watchdog(&milter, |spec| {
        let mut c = open(&spec, Profile::Postfix);
        let env = client_at("mail.example.net", "192.0.2.7").rcpt("b@example.com");
        let eom = c.send_message(&env, &message()).unwrap().eom.unwrap();
        assert_eq!(eom.decision, Decision::Continue);
        assert!(eom.modifications.is_empty(), "{:?}", eom.modifications);
        c.quit().unwrap();
    });
    let log = wait_for_log(&milter, "would have sent");
    assert!(
        log.contains("add_header X-Stamped-By: header-stamper (client mail.example.net [192.0.2.7]; 1 recipient)"),
        "{log}"
    );
    assert!(log.contains("add_header X-Connection-Message: 1"), "{log}");
}

/// The milter's log once it contains `needle` (it is written by another
/// process, so it may lag a little), or after a few seconds whatever it holds.
fn wait_for_log(milter: &MilterGuard, needle: &str) -> String {
    for _ in 0..100 {
        let log = milter.log();
        if log.contains(needle) {
            return log;
        }
        thread::sleep(Duration::from_millis(50));
    }
    milter.log()
}
