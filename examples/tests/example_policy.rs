//! The `policy` example, run as its own process with rules files written by the
//! tests and driven by the MTA-side client: verdicts and exact reply texts at
//! MAIL and RCPT, what it negotiates, start-up errors, reload on SIGHUP, and
//! shadow mode.

// A failed unwrap in a test helper is a failed test.
#![allow(clippy::unwrap_used)]

#[path = "support/milter_process.rs"]
mod milter_process;

use milter_blocking::client::{
    Client, Decision, Envelope, Message, Profile, Response, Timeouts, Verdict,
};
use milter_blocking::{Actions, Stage, Stages};
use milter_process::{free_port, run_with_timeout, spawn_milter, MilterGuard, TempDir};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The longest a test may take before it counts as hung.
const WATCHDOG: Duration = Duration::from_secs(60);

const BIN: &str = env!("CARGO_BIN_EXE_policy");

const RULES: &str = "\
# test rules
reject-sender        spammer@example.com     550 5.7.1 Sender blocked by policy
reject-sender-domain bulk-mailer.example     550 5.7.1 Bulk mail from this domain is not accepted
reject-sender        <>                      550 5.7.1 No bounces here
discard-sender       noreply@newsletter.example
reject-sender        percent@example.com     550 5.7.1 100% blocked
tempfail-rcpt-domain slow.example            451 4.7.1 Try later
reject-rcpt          gone@example.com
tempfail-rcpt        busy@example.com
discard-rcpt         trap@example.com
";

/// A rules file in a temporary directory (removed when dropped).
struct RulesFile {
    dir: TempDir,
}

impl RulesFile {
    fn new(text: &str) -> RulesFile {
        let dir = TempDir::new("policy-rules").unwrap();
        let f = RulesFile { dir };
        f.write(text);
        f
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("policy.rules")
    }

    fn path_str(&self) -> String {
        self.path().to_str().unwrap().to_string()
    }

    /// Replaces the file in one rename, so the milter never reads half of it.
    fn write(&self, text: &str) {
        let tmp = self.dir.path().join("policy.rules.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.path()).unwrap();
    }
}

fn start(args: &[&str]) -> MilterGuard {
    let spec = format!("inet:{}@127.0.0.1", free_port());
    spawn_milter(Path::new(BIN), args, &spec)
}

fn open(spec: &str) -> Client {
    Client::builder()
        .profile(Profile::Postfix)
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

/// The answer to MAIL FROM `sender` on a fresh session.
fn mail_reply(spec: &str, sender: &str) -> Response {
    let mut c = open(spec);
    let r = c.mail(sender).unwrap();
    c.quit().unwrap();
    r
}

fn reply(text: &str) -> Response {
    Response::Replied(Decision::Reply(text.as_bytes().to_vec()))
}

fn message() -> Message {
    Message::parse(b"Subject: hi\r\n\r\nHello.\r\n")
}

#[test]
fn refuses_senders_with_the_replies_of_the_rules_file() {
    let rules = RulesFile::new(RULES);
    let milter = start(&["--rules", &rules.path_str()]);
    watchdog(&milter, |spec| {
        let cases = [
            (
                "<spammer@example.com>",
                reply("550 5.7.1 Sender blocked by policy"),
            ),
            // Addresses compare ignoring case and brackets.
            (
                "<Spammer@EXAMPLE.com>",
                reply("550 5.7.1 Sender blocked by policy"),
            ),
            (
                "spammer@example.com",
                reply("550 5.7.1 Sender blocked by policy"),
            ),
            // Domains match themselves and their subdomains, nothing else.
            (
                "<x@bulk-mailer.example>",
                reply("550 5.7.1 Bulk mail from this domain is not accepted"),
            ),
            (
                "<x@eu.Bulk-Mailer.example>",
                reply("550 5.7.1 Bulk mail from this domain is not accepted"),
            ),
            (
                "<x@notbulk-mailer.example>",
                Response::Replied(Decision::Continue),
            ),
            ("<>", reply("550 5.7.1 No bounces here")),
            (
                "<noreply@newsletter.example>",
                Response::Replied(Decision::Discard),
            ),
            // `%` is doubled so that neither MTA reads it as a format directive.
            ("<percent@example.com>", reply("550 5.7.1 100%% blocked")),
            (
                "<friend@example.org>",
                Response::Replied(Decision::Continue),
            ),
        ];
        for (sender, want) in cases {
            assert_eq!(mail_reply(&spec, sender), want, "MAIL FROM {sender}");
        }
    });
}

#[test]
fn refuses_recipients_one_by_one() {
    let rules = RulesFile::new(RULES);
    let milter = start(&["--rules", &rules.path_str()]);
    watchdog(&milter, |spec| {
        let mut c = open(&spec);
        c.mail("<friend@example.org>").unwrap();
        let cases = [
            ("<a@slow.example>", reply("451 4.7.1 Try later")),
            ("<a@mx.SLOW.example>", reply("451 4.7.1 Try later")),
            ("<gone@example.com>", Response::Replied(Decision::Reject)),
            ("<busy@example.com>", Response::Replied(Decision::Tempfail)),
            ("<b@example.com>", Response::Replied(Decision::Continue)),
        ];
        for (rcpt, want) in cases {
            assert_eq!(c.rcpt(rcpt).unwrap(), want, "RCPT TO {rcpt}");
        }
        c.abort().unwrap();
        c.quit().unwrap();

        // A whole message: the refused recipient is left out, the rest goes on.
        let mut c = open(&spec);
        let env = Envelope::new("friend@example.org")
            .rcpt("a@slow.example")
            .rcpt("b@example.com");
        let t = c.send_message(&env, &message()).unwrap();
        assert_eq!(t.verdict, Verdict::Accept);
        assert_eq!(t.accepted_rcpts, [1]);
        // Every recipient refused: the message is refused.
        let env = Envelope::new("friend@example.org").rcpt("a@slow.example");
        let t = c.send_message(&env, &message()).unwrap();
        assert_eq!(
            t.verdict,
            Verdict::Tempfail {
                stage: Stage::Rcpt,
                reply: Some(b"451 4.7.1 Try later".to_vec())
            }
        );
        // Discard at RCPT drops the whole message.
        let env = Envelope::new("friend@example.org")
            .rcpt("b@example.com")
            .rcpt("trap@example.com");
        let t = c.send_message(&env, &message()).unwrap();
        assert_eq!(t.verdict, Verdict::Discard { stage: Stage::Rcpt });
        c.quit().unwrap();
    });
}

#[test]
fn asks_for_mail_and_rcpt_only() {
    let rules = RulesFile::new(RULES);
    let milter = start(&["--rules", &rules.path_str()]);
    watchdog(&milter, |spec| {
        let mut c = open(&spec);
        let n = c.negotiated().clone();
        let away = Stages::CONNECT
            | Stages::HELO
            | Stages::DATA
            | Stages::HEADER
            | Stages::EOH
            | Stages::BODY
            | Stages::UNKNOWN;
        assert!(n.skipped.contains(away), "skipped: {:?}", n.skipped);
        assert!(!n.skipped.intersects(Stages::MAIL | Stages::RCPT));
        // It answers MAIL and RCPT, and modifies nothing.
        assert!(!n.no_reply.intersects(Stages::MAIL | Stages::RCPT));
        assert_eq!(n.actions, Actions::empty());

        let env = Envelope::new("friend@example.org").rcpt("b@example.com");
        let t = c.send_message(&env, &message()).unwrap();
        assert_eq!(t.verdict, Verdict::Accept);
        for stage in [
            Stage::Connect,
            Stage::Helo,
            Stage::Data,
            Stage::Header,
            Stage::Eoh,
            Stage::Body,
        ] {
            assert_eq!(t.response(stage), Some(&Response::Skipped), "{stage}");
        }
        let eom = t.eom.unwrap();
        assert_eq!(eom.decision, Decision::Continue);
        assert!(eom.modifications.is_empty());
        c.quit().unwrap();
    });
}

#[test]
fn uses_the_sample_rules_when_no_file_is_named() {
    let milter = start(&[]);
    watchdog(&milter, |spec| {
        assert_eq!(
            mail_reply(&spec, "<spammer@example.com>"),
            reply("550 5.7.1 Sender blocked by policy")
        );
        let mut c = open(&spec);
        c.mail("<friend@example.org>").unwrap();
        assert_eq!(
            c.rcpt("<someone@slow.example>").unwrap(),
            reply("451 4.7.1 Try later")
        );
        c.quit().unwrap();
    });
}

#[test]
fn reports_every_bad_line_and_does_not_start() {
    let rules = RulesFile::new(
        "# comment\n\
         reject-sender ok@example.com 550 5.7.1 fine\n\
         reject-sender a@example.com 450 4.7.1 wrong class\n\
         bounce-sender a@example.com\n\
         reject-rcpt nobody\n\
         discard-sender a@example.com 550 5.7.1 discard has no reply\n\
         tempfail-rcpt-domain slow.example 451 5.7.1 mismatched enhanced code\n",
    );
    let spec = format!("inet:{}@127.0.0.1", free_port());
    let out = run_with_timeout(
        Command::new(BIN).args(["--rules", &rules.path_str(), &spec]),
        Duration::from_secs(30),
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let file = rules.path_str();
    for line in [3, 4, 5, 6, 7] {
        assert!(
            stderr.contains(&format!("{file}:{line}: ")),
            "line {line}:\n{stderr}"
        );
    }
    assert!(!stderr.contains(&format!("{file}:2:")), "{stderr}");
    assert!(stderr.contains("5 errors"), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");

    // The variable names the file when --rules does not.
    let out = run_with_timeout(
        Command::new(BIN)
            .env("MILTER_POLICY_RULES", rules.path())
            .arg(&spec),
        Duration::from_secs(30),
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{file}:3: ")), "{stderr}");

    // A file that does not exist.
    let missing = rules.dir.path().join("missing.rules");
    let out = run_with_timeout(
        Command::new(BIN).arg("--rules").arg(&missing).arg(&spec),
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the rules file"));

    // A usage error.
    let out = run_with_timeout(
        Command::new(BIN).args(["--rule", "x", &spec]),
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage: policy"));
}

#[test]
fn reloads_the_rules_on_sighup_and_keeps_them_when_the_new_file_is_bad() {
    let rules = RulesFile::new("reject-sender first@example.com 550 5.7.1 first rules\n");
    let milter = start(&["--rules", &rules.path_str()]);
    let pid = milter.pid().unwrap().to_string();
    let hup = move || {
        let status = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(status.success());
    };
    let spec = milter.socket().to_libmilter();
    let first = reply("550 5.7.1 first rules");
    let second = reply("550 5.7.1 second rules");
    let cont = Response::Replied(Decision::Continue);
    assert_eq!(mail_reply(&spec, "<first@example.com>"), first);

    rules.write("reject-sender second@example.com 550 5.7.1 second rules\n");
    hup();
    let log = wait_for_log(&milter, "SIGHUP: loaded 1 rules");
    assert!(log.contains("SIGHUP: loaded 1 rules"), "{log}");
    watchdog(&milter, move |spec| {
        assert_eq!(mail_reply(&spec, "<second@example.com>"), second);
        assert_eq!(mail_reply(&spec, "<first@example.com>"), cont);
    });

    rules.write("reject-sender third@example.com 250 ok\n");
    hup();
    let log = wait_for_log(&milter, "the 1 rules in force stay");
    assert!(
        log.contains("policy.rules:1: reject needs a 5xx reply code"),
        "{log}"
    );
    assert!(log.contains("the 1 rules in force stay"), "{log}");
    watchdog(&milter, |spec| {
        assert_eq!(
            mail_reply(&spec, "<second@example.com>"),
            reply("550 5.7.1 second rules")
        );
    });
}

#[test]
fn shadow_mode_refuses_nothing_and_logs_what_it_would_have_done() {
    let rules = RulesFile::new(RULES);
    let milter = start(&["--shadow", "--rules", &rules.path_str()]);
    watchdog(&milter, |spec| {
        let mut c = open(&spec);
        let env = Envelope::new("spammer@example.com")
            .rcpt("a@slow.example")
            .rcpt("b@example.com");
        let t = c.send_message(&env, &message()).unwrap();
        assert_eq!(t.verdict, Verdict::Accept);
        assert_eq!(t.accepted_rcpts, [0, 1]);
        assert_eq!(
            t.response(Stage::Mail),
            Some(&Response::Replied(Decision::Continue))
        );
        c.quit().unwrap();
    });
    let log = wait_for_log(&milter, "would have sent");
    assert!(
        log.contains("reply 550 5.7.1 Sender blocked by policy at mail"),
        "{log}"
    );
    assert!(log.contains("reply 451 4.7.1 Try later at rcpt"), "{log}");
}
