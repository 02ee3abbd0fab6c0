//! The `size-limit` example, run as its own process and driven by the MTA-side
//! client: the size limit and its reply, attachment detection in every header
//! form and across every chunk boundary, `Status::Skip`, what it negotiates, and
//! shadow mode.

// A failed unwrap in a test helper is a failed test.
#![allow(clippy::unwrap_used)]

#[path = "support/milter_process.rs"]
mod milter_process;

use milter_blocking::client::{
    Client, Decision, Envelope, Message, Profile, Response, Timeouts, Verdict,
};
use milter_blocking::{Actions, ProtocolOpts, Stage, Stages};
use milter_process::{free_port, run_with_timeout, spawn_milter, MilterGuard};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The longest a test may take before it counts as hung.
const WATCHDOG: Duration = Duration::from_secs(120);

const BIN: &str = env!("CARGO_BIN_EXE_size-limit");

/// The limit the tests run the milter with.
const MAX: usize = 100_000;

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

fn envelope() -> Envelope {
    Envelope::new("a@example.org").rcpt("b@example.com")
}

fn too_big() -> Vec<u8> {
    format!("552 5.3.4 Message body exceeds the limit of {MAX} bytes").into_bytes()
}

fn forbidden(extension: &str) -> Vec<u8> {
    format!("550 5.7.1 Attachments of type .{extension} are not accepted").into_bytes()
}

/// A multipart/mixed message: a text part, then one part per `(part headers,
/// content)`, separated by `--outer`.
fn multipart(parts: &[(&str, &str)]) -> Message {
    let mut text = String::from(
        "From: a@example.org\r\nSubject: files\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed;\r\n\tboundary=\"outer\"\r\n\r\n\
         This is a multi-part message in MIME format.\r\n\
         --outer\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Please find the files attached.\r\n-- \r\nA signature\r\n",
    );
    for (headers, content) in parts {
        text.push_str("--outer\r\n");
        text.push_str(headers);
        text.push_str("\r\n\r\n");
        text.push_str(content);
        text.push_str("\r\n");
    }
    text.push_str("--outer--\r\nepilogue\r\n");
    Message::parse(text.as_bytes())
}

fn attachment(headers: &str) -> Message {
    multipart(&[(
        headers,
        "TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    )])
}

/// Sends `message` whole; returns the verdict and how many body chunks went out.
fn send(c: &mut Client, message: &Message) -> (Verdict, usize) {
    let t = c.send_message(&envelope(), message).unwrap();
    let chunks = t.steps.iter().filter(|s| s.stage == Stage::Body).count();
    (t.verdict, chunks)
}

fn rejected(reply: Vec<u8>) -> Verdict {
    Verdict::Reject {
        stage: Stage::Eom,
        reply: Some(reply),
    }
}

#[test]
fn refuses_a_body_over_the_limit_and_skips_the_rest_of_it() {
    let milter = start(&["--max-bytes", &MAX.to_string()]);
    watchdog(&milter, |spec| {
        let mut c = open(&spec);
        // Exactly at the limit: accepted.
        let at_limit = Message::new()
            .with_header("Subject", "big")
            .with_body(vec![b'x'; MAX]);
        assert_eq!(send(&mut c, &at_limit), (Verdict::Accept, 2));

        // Over it: the second chunk crosses the limit and is answered with skip,
        // so the client (as an MTA) sends no more body; the verdict comes at
        // end of message.
        let mut body = b"0123456789abcdef\r\n".repeat(300_000 / 18);
        body.truncate(300_000);
        let big = Message::new().with_header("Subject", "big").with_body(body);
        assert_eq!(big.body_chunks().count(), 5);
        let t = c.send_message(&envelope(), &big).unwrap();
        let body_steps: Vec<&Response> = t
            .steps
            .iter()
            .filter(|s| s.stage == Stage::Body)
            .map(|s| &s.response)
            .collect();
        assert_eq!(
            body_steps,
            [
                &Response::Replied(Decision::Continue),
                &Response::Replied(Decision::Skip)
            ]
        );
        assert_eq!(t.verdict, rejected(too_big()));

        // Per-message state: the next message starts counting from zero.
        let small = Message::new()
            .with_header("Subject", "small")
            .with_body("hi\r\n");
        assert_eq!(send(&mut c, &small), (Verdict::Accept, 1));
        c.quit().unwrap();
    });
}

#[test]
fn finds_forbidden_attachments_in_every_header_form() {
    let milter = start(&["--max-bytes", &MAX.to_string()]);
    watchdog(&milter, |spec| {
        let mut c = open(&spec);
        let refused = [
            ("exe", "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"invoice.exe\""),
            ("exe", "Content-Disposition: attachment; filename=invoice.exe"),
            // Folded, odd case, a trailing dot and space (Windows drops them).
            ("exe", "content-disposition: ATTACHMENT;\r\n\tfilename=\r\n \"Invoice.EXE. \""),
            // The name only in Content-Type.
            ("scr", "Content-Type: application/octet-stream; name=\"screensaver.scr\""),
            // RFC 2231, whole and in continuations.
            ("js", "Content-Disposition: attachment; filename*=UTF-8''rechnung%20M%C3%A4rz%2Ejs"),
            ("vbs", "Content-Disposition: attachment;\r\n filename*0=\"pay\";\r\n filename*1*=%72oll%2E;\r\n filename*2=\"vbs\""),
            // RFC 2047 encoded words, B and Q.
            ("exe", "Content-Type: application/x-msdownload; name=\"=?UTF-8?B?aW52b2ljZS5leGU=?=\""),
            ("bat", "Content-Disposition: attachment; filename=\"=?iso-8859-1?Q?r=E9sum=E9?= =?iso-8859-1?Q?=2Ebat?=\""),
        ];
        for (extension, headers) in refused {
            assert_eq!(
                send(&mut c, &attachment(headers)).0,
                rejected(forbidden(extension)),
                "{headers}"
            );
        }
        let accepted = [
            "Content-Disposition: attachment; filename=\"report.exe.pdf\"",
            "Content-Type: application/pdf; name=\"exe\"",
            "Content-Disposition: inline",
            // A parameter value that merely contains a semicolon and the word.
            "Content-Disposition: attachment; filename=\"a;b.exe.txt\"",
        ];
        for headers in accepted {
            assert_eq!(
                send(&mut c, &attachment(headers)).0,
                Verdict::Accept,
                "{headers}"
            );
        }
        c.quit().unwrap();
    });
}

#[test]
fn looks_into_nested_multiparts_and_attached_messages_only_at_part_headers() {
    let milter = start(&["--max-bytes", &MAX.to_string()]);
    watchdog(&milter, |spec| {
        let mut c = open(&spec);
        let nested = multipart(&[(
            "Content-Type: multipart/alternative; boundary=inner",
            "--inner\r\nContent-Type: text/plain\r\n\r\nplain\r\n\
             --inner\r\nContent-Type: application/javascript; name=\"x.js\"\r\n\r\nalert(1)\r\n\
             --inner--",
        )]);
        assert_eq!(send(&mut c, &nested).0, rejected(forbidden("js")));

        let forwarded = multipart(&[(
            "Content-Type: message/rfc822",
            "From: someone@example.net\r\nSubject: fwd\r\n\
             Content-Type: multipart/mixed; boundary=\"fwd\"\r\n\r\n\
             --fwd\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
             --fwd\r\nContent-Disposition: attachment; filename=\"tool.hta\"\r\n\r\nxx\r\n\
             --fwd--",
        )]);
        assert_eq!(send(&mut c, &forwarded).0, rejected(forbidden("hta")));

        // Header-like text that is not in a part header block is not looked at:
        // in the text part, after an unknown "--" line, in the epilogue.
        let text = multipart(&[(
            "Content-Type: text/plain",
            "Content-Disposition: attachment; filename=\"not-a-header.exe\"\r\n\
             --not-a-boundary\r\n\
             Content-Type: application/octet-stream; name=\"neither.exe\"",
        )]);
        assert_eq!(send(&mut c, &text).0, Verdict::Accept);

        // Without a multipart Content-Type, a body is just text.
        let plain = Message::parse(
            b"Subject: x\r\n\r\n--outer\r\nContent-Disposition: attachment; filename=a.exe\r\n\r\n",
        );
        assert_eq!(send(&mut c, &plain).0, Verdict::Accept);
        c.quit().unwrap();
    });
}

#[test]
fn a_single_part_attachment_is_decided_at_the_headers_and_its_body_skipped() {
    let milter = start(&["--max-bytes", &MAX.to_string()]);
    watchdog(&milter, |spec| {
        let mut c = open(&spec);
        let m = Message::parse(
            b"Subject: x\r\nContent-Type: application/octet-stream; name=\"run.cmd\"\r\n\
              Content-Transfer-Encoding: base64\r\n\r\nQGVjaG8gb2ZmDQo=\r\n",
        );
        let t = c.send_message(&envelope(), &m).unwrap();
        assert_eq!(
            t.response(Stage::Body),
            Some(&Response::Replied(Decision::Skip))
        );
        assert_eq!(t.verdict, rejected(forbidden("cmd")));
        c.quit().unwrap();
    });
}

#[test]
fn finds_the_attachment_wherever_the_chunk_boundary_falls() {
    let milter = start(&["--max-bytes", &MAX.to_string()]);
    watchdog(&milter, |spec| {
        let m = attachment(
            "Content-Type: application/octet-stream;\r\n\tname=\"setup.msi\"\r\n\
             Content-Disposition: attachment;\r\n\tfilename=\"setup.msi\"",
        );
        let body = m.body.clone();
        let mut c = open(&spec);
        c.connect("client.example.net", &Default::default())
            .unwrap();
        // Every split of the body into two chunks, one message each.
        for split in 1..body.len() {
            c.mail("<a@example.org>").unwrap();
            c.rcpt("<b@example.com>").unwrap();
            c.data().unwrap();
            for h in &m.headers {
                c.header(&h.name, h.value()).unwrap();
            }
            c.eoh().unwrap();
            let first = c.body(&body[..split]).unwrap();
            if first != Response::Replied(Decision::Skip) {
                assert_eq!(
                    first,
                    Response::Replied(Decision::Continue),
                    "split {split}"
                );
                let second = c.body(&body[split..]).unwrap();
                assert_eq!(second, Response::Replied(Decision::Skip), "split {split}");
            }
            let eom = c.eom().unwrap();
            assert_eq!(
                eom.decision,
                Decision::Reply(forbidden("msi")),
                "split at {split}: {:?}",
                String::from_utf8_lossy(&body[split.saturating_sub(10)..split])
            );
            c.abort().unwrap();
        }
        // And one byte per chunk.
        c.mail("<a@example.org>").unwrap();
        c.rcpt("<b@example.com>").unwrap();
        c.data().unwrap();
        for h in &m.headers {
            c.header(&h.name, h.value()).unwrap();
        }
        c.eoh().unwrap();
        for b in body.chunks(1) {
            if c.body(b).unwrap() == Response::Replied(Decision::Skip) {
                break;
            }
        }
        assert_eq!(c.eom().unwrap().decision, Decision::Reply(forbidden("msi")));
        c.quit().unwrap();
    });
}

#[test]
fn forbid_replaces_the_list() {
    let milter = start(&["--forbid", ".PDF, docm"]);
    watchdog(&milter, |spec| {
        let mut c = open(&spec);
        let pdf = attachment("Content-Disposition: attachment; filename=\"a.pdf\"");
        assert_eq!(send(&mut c, &pdf).0, rejected(forbidden("pdf")));
        let exe = attachment("Content-Disposition: attachment; filename=\"a.exe\"");
        assert_eq!(send(&mut c, &exe).0, Verdict::Accept);
        c.quit().unwrap();
    });
}

#[test]
fn asks_for_headers_body_and_end_of_message_only_and_for_skip() {
    let milter = start(&[]);
    watchdog(&milter, |spec| {
        let c = open(&spec);
        let n = c.negotiated();
        let away = Stages::CONNECT
            | Stages::HELO
            | Stages::MAIL
            | Stages::RCPT
            | Stages::DATA
            | Stages::EOH
            | Stages::UNKNOWN;
        assert!(n.skipped.contains(away), "skipped: {:?}", n.skipped);
        assert!(!n.skipped.intersects(Stages::HEADER | Stages::BODY));
        assert!(n.no_reply.contains(Stages::HEADER), "{:?}", n.no_reply);
        assert!(!n.no_reply.contains(Stages::BODY));
        assert!(n.protocol.contains(ProtocolOpts::SKIP), "{:?}", n.protocol);
        assert_eq!(n.actions, Actions::empty());
        c.quit().unwrap();
    });
}

#[test]
fn shadow_mode_still_skips_but_refuses_nothing() {
    let milter = start(&["--shadow", "--max-bytes", &MAX.to_string()]);
    watchdog(&milter, |spec| {
        let mut c = open(&spec);
        let big = Message::new()
            .with_header("Subject", "big")
            .with_body(vec![b'y'; 3 * MAX]);
        let t = c.send_message(&envelope(), &big).unwrap();
        assert_eq!(t.verdict, Verdict::Accept);
        // Skip is no refusal: shadow mode passes it on, and the MTA saves work.
        let body = t.steps.iter().filter(|s| s.stage == Stage::Body).count();
        assert_eq!(body, 2);
        c.quit().unwrap();
    });
    let log = wait_for_log(&milter, "would have sent");
    assert!(
        log.contains(&format!(
            "would have sent: {} at eom",
            String::from_utf8_lossy(&too_big()).replace("552 ", "reply 552 ")
        )),
        "{log}"
    );
}

#[test]
fn a_bad_size_is_a_usage_error() {
    let spec = format!("inet:{}@127.0.0.1", free_port());
    for bad in ["ten", "10X", "99999999999G"] {
        let out = run_with_timeout(
            Command::new(BIN).args(["--max-bytes", bad, &spec]),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--max-bytes"), "{stderr}");
    }
}
