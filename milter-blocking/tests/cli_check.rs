//! `milter-check` end to end: a sample message through a scripted milter (expected
//! output and exit codes), a refused connection, a broken and a silent milter, and
//! usage errors. Needs `--features cli` (or `--all-features`).
#![cfg(feature = "cli")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers outside #[test] fns.

#[path = "data/harness.rs"]
mod harness;

use harness::{optneg, packet, watchdog};
use milter_blocking::milter_core::filter::{Event, FilterSession};
use milter_blocking::{Actions, Spec, Status};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);
const RUN_LIMIT: Duration = Duration::from_secs(20);

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs milter-check with `args` (and `stdin`), killing it after [`RUN_LIMIT`].
fn check(args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_milter-check"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting milter-check");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            panic!("milter-check did not finish within {RUN_LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// The scripted milter the CLI talks to.
fn script(s: &mut FilterSession, ev: &Event<'_>) -> Status {
    match ev {
        Event::Mail(m) if m.bare().starts_with(b"spam@") => {
            Status::reply(550, Some("5.7.1"), "no spam here").unwrap()
        }
        Event::Rcpt(r) if r.bare().starts_with(b"later@") => Status::Tempfail,
        Event::Header(h) if h.is("X-Discard") => Status::Discard,
        Event::Eom(_) => {
            s.add_header(b"X-Checked", b"yes").unwrap();
            s.change_header(b"Subject", 1, b"[checked] Quarterly report")
                .unwrap();
            s.change_header(b"X-Old", 1, b"").unwrap();
            s.add_rcpt(b"<archive@example.net>").unwrap();
            let quarantine = s
                .macros()
                .get("{rcpt_addr}")
                .is_some_and(|r| r.starts_with(b"hold@"));
            if quarantine {
                s.quarantine(b"held by test").unwrap();
            }
            Status::Continue
        }
        _ => Status::Continue,
    }
}

/// Starts the scripted milter on a loopback port; returns its socket spec.
fn start_milter() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { return };
            thread::spawn(move || {
                let spec = Spec {
                    actions: Actions::all() - Actions::SET_SYMBOL_LIST,
                    ..Spec::ALL_STAGES
                }
                .with_macros(milter_blocking::MacroStage::Rcpt, "{rcpt_addr}");
                let spec = Spec {
                    optional_actions: Actions::SET_SYMBOL_LIST,
                    ..spec
                };
                harness::serve(s, spec, script, Default::default())
            });
        }
    });
    format!("inet:{port}@127.0.0.1")
}

const EXPECTED: &str = "\
negotiated: version 6, actions 0x1ff, protocol 0x00000000
  actions:  add-header change-body add-rcpt delete-rcpt change-header quarantine change-from add-rcpt-with-args set-symbol-list
  skipped:  none
  no reply: none
  macros at rcpt: {rcpt_addr}
connect  client.example.net 192.0.2.1:41234                 continue
helo     client.example.net                                 continue
mail     <alice@example.org>                                continue
rcpt     <bob@example.com> NOTIFY=NEVER                     continue
data                                                        continue
header   From: Alice <alice@example.org>                    continue
header   To: Bob <bob@example.com>                          continue
header   Subject: Quarterly report                          continue
header   Message-ID: <report-1@example.org>                 continue
header   Date: Mon, 1 Dec 2025 10:00:00 +0000               continue
header   X-Old: remove me                                   continue
header   X-Folded: first part,\\n\tsecond part                continue
header   MIME-Version: 1.0                                  continue
header   Content-Type: text/plain; charset=utf-8            continue
eoh                                                         continue
body     chunk 1 of 1, 47 bytes                             continue
eom                                                         continue
modifications:
  add header      X-Checked: yes
  change header   Subject[1]: [checked] Quarterly report
  delete header   X-Old[1]
  add rcpt        <archive@example.net>
abort sent after the transaction
verdict: accept
";

#[test]
fn sample_message_prints_every_stage_and_writes_the_result() {
    watchdog(LIMIT, || {
        let spec = start_milter();
        let dir = tempfile::tempdir().unwrap();
        let out_file = dir.path().join("out.eml");
        let sample = data("sample.eml");
        let r = check(
            &[
                &spec,
                sample.to_str().unwrap(),
                "--from",
                "alice@example.org",
                "--rcpt",
                "bob@example.com NOTIFY=NEVER",
                "--output",
                out_file.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(r.code, 0, "stderr: {}", r.stderr);
        assert_eq!(r.stdout, EXPECTED);
        assert_eq!(r.stderr, "");
        let written = std::fs::read_to_string(&out_file).unwrap();
        let expected = std::fs::read_to_string(data("sample.checked.eml")).unwrap();
        assert_eq!(written, expected.replace('\n', "\r\n"));
    });
}

#[test]
fn exit_codes_tell_the_verdict() {
    watchdog(LIMIT, || {
        let spec = start_milter();
        let sample = data("sample.eml");
        let sample = sample.to_str().unwrap();
        let r = check(&[&spec, sample, "--from", "spam@example.org", "-q"], None);
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert_eq!(
            r.stdout,
            "verdict: reject at mail: 550 5.7.1 no spam here\n"
        );
        let r = check(&[&spec, sample, "--rcpt", "later@example.com", "-q"], None);
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert_eq!(r.stdout, "verdict: tempfail at rcpt\n");
        let msg = b"Subject: x\nX-Discard: 1\n\nbody\n";
        let r = check(&[&spec, "-", "-q"], Some(msg));
        assert_eq!(r.code, 3, "{}", r.stderr);
        assert_eq!(r.stdout, "verdict: discard at header\n");
        let r = check(
            &[&spec, "--rcpt", "hold@example.com", "-q"],
            Some(b"S: 1\n\nb\n"),
        );
        assert_eq!(r.code, 4, "{}", r.stderr);
        assert_eq!(r.stdout, "verdict: quarantine (held by test)\n");
        // Sendmail profile, version 4 offer, a macro: still accepted.
        let r = check(
            &[
                &spec,
                sample,
                "--profile",
                "sendmail",
                "--offer-version",
                "4",
                "--macro",
                "mail:{auth_authen}=alice",
                "--macro",
                "j=mta.test",
                "--client-addr",
                "[2001:db8::1]:25",
            ],
            None,
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(
            r.stdout.starts_with("negotiated: version 4,"),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout
                .contains("connect  client.example.net [2001:db8::1]:25"),
            "{}",
            r.stdout
        );
        assert!(!r.stdout.contains("abort sent"), "{}", r.stdout);
    });
}

/// One line on standard error, no panic, nothing on standard output but what came
/// before the failure.
fn assert_one_line_error(r: &Run, code: i32, start: &str) {
    assert_eq!(r.code, code, "stdout: {} stderr: {}", r.stdout, r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{:?}", r.stderr);
    assert!(r.stderr.starts_with(start), "{:?}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{:?}", r.stderr);
}

#[test]
fn a_refused_connection_is_one_line() {
    watchdog(LIMIT, || {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let spec = format!("inet:{port}@127.0.0.1");
        let r = check(&[&spec, data("sample.eml").to_str().unwrap()], None);
        assert_one_line_error(&r, 69, &format!("milter-check: cannot connect to {spec}: "));
        assert_eq!(r.stdout, "");
    });
}

/// A milter that negotiates and then answers every command with `reply`.
fn start_raw(reply: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let reply = reply.clone();
            thread::spawn(move || {
                let mut frames = milter_blocking::milter_core::frame::FrameDecoder::new();
                let mut buf = [0u8; 4096];
                loop {
                    while let Ok(Some(f)) = frames.next_frame() {
                        let answer = match f.code {
                            b'O' => optneg(0, 0),
                            b'D' => continue,
                            _ => reply.clone(),
                        };
                        if s.write_all(&answer).is_err() {
                            return;
                        }
                    }
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => frames.push(&buf[..n]),
                    }
                }
            });
        }
    });
    format!("inet:{port}@127.0.0.1")
}

#[test]
fn a_broken_milter_is_one_line() {
    watchdog(LIMIT, || {
        let spec = start_raw(packet(b'Z', b"junk"));
        let r = check(&[&spec, data("sample.eml").to_str().unwrap()], None);
        assert_one_line_error(
            &r,
            70,
            "milter-check: milter broke the protocol during the reply to connect: ",
        );
        assert!(r.stderr.contains("5a 6a 75 6e 6b"), "{}", r.stderr);
    });
}

#[test]
fn a_silent_milter_times_out() {
    watchdog(LIMIT, || {
        let spec = start_raw(Vec::new());
        let r = check(
            &[
                &spec,
                data("sample.eml").to_str().unwrap(),
                "--timeout",
                "0.3",
            ],
            None,
        );
        assert_one_line_error(
            &r,
            75,
            "milter-check: milter timed out during the reply to connect",
        );
    });
}

#[test]
fn usage_errors_exit_64() {
    watchdog(LIMIT, || {
        let sample = data("sample.eml");
        let sample = sample.to_str().unwrap();
        let r = check(&["tcp:25", sample], None);
        assert_one_line_error(&r, 64, "milter-check: client misuse: bad socket spec");
        let r = check(&["inet:1@127.0.0.1", sample, "--macro", "nostage"], None);
        assert_one_line_error(&r, 64, "milter-check: bad macro");
        let r = check(&["inet:1@127.0.0.1", sample, "--macro", "bogus:x=1"], None);
        assert_one_line_error(&r, 64, "milter-check: bad macro");
        let r = check(&["inet:1@127.0.0.1", "/nonexistent/message.eml"], None);
        assert_one_line_error(&r, 66, "milter-check: cannot read /nonexistent/message.eml");
        let r = check(&["inet:1@127.0.0.1", sample, "--profile", "exim"], None);
        assert_eq!(r.code, 64, "{}", r.stderr);
        let r = check(&[], None);
        assert_eq!(r.code, 64, "{}", r.stderr);
        let r = check(&["--help"], None);
        assert_eq!(r.code, 0);
        assert!(r.stdout.contains("Exit status:"), "{}", r.stdout);
        assert!(
            r.stdout.contains("75  the milter timed out"),
            "{}",
            r.stdout
        );
    });
}

#[test]
fn stalwart_runs_one_connection_per_configured_stage() {
    watchdog(LIMIT, || {
        let spec = start_milter();
        let sample = data("sample.eml");
        let args = [
            spec.as_str(),
            sample.to_str().unwrap(),
            "--profile",
            "stalwart",
            "--stages",
            "rcpt,mail,data",
            "--rcpt",
            "bob@example.com",
            "--rcpt",
            "later@example.com",
        ];
        // The second recipient's run is refused: the message with it.
        let r = check(&args, None);
        assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
        assert_eq!(r.stdout.matches("run for the mail stage:").count(), 1);
        assert_eq!(r.stdout.matches("run for the rcpt stage:").count(), 2);
        assert!(
            !r.stdout.contains("run for the data stage:"),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout.ends_with("verdict: tempfail at rcpt\n"),
            "{}",
            r.stdout
        );
        // Without the refused recipient every run goes through; only the DATA run
        // sees the message and adds the header.
        let r = check(&args[..8], None);
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("run for the data stage:"), "{}", r.stdout);
        assert!(
            r.stdout.contains("add header      X-Checked: yes"),
            "{}",
            r.stdout
        );
        // Only for Stalwart.
        let r = check(&[&spec, sample.to_str().unwrap(), "--stages", "mail"], None);
        assert_eq!(r.code, 64, "{}", r.stderr);
    });
}

#[test]
fn a_failing_milter_gets_the_verdict_of_the_imitated_mta() {
    watchdog(LIMIT, || {
        let spec = start_raw(packet(b'Z', b"junk"));
        let sample = data("sample.eml");
        for (profile, verdict) in [
            (
                "postfix",
                "verdict: tempfail at connect: 451 4.7.1 Service unavailable - try again later",
            ),
            ("postfix-3.11", "verdict: shutdown at connect"),
            ("sendmail-8.18", "verdict: accept"),
            (
                "stalwart",
                "verdict: tempfail at connect: 451 4.3.5 Unable to accept message at this time.",
            ),
        ] {
            let r = check(
                &[&spec, sample.to_str().unwrap(), "--profile", profile],
                None,
            );
            assert_eq!(r.code, 70, "{profile}: {}", r.stderr);
            let want = format!("{verdict} (what {profile} does when the milter fails)\n");
            assert!(r.stdout.ends_with(&want), "{profile}: {}", r.stdout);
        }
    });
}

#[test]
fn header_values_with_their_own_leading_space_print_with_one_space() {
    watchdog(LIMIT, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let spec = Spec {
                actions: Actions::ADD_HEADER,
                options: milter_blocking::ProtocolOpts::HEADER_LEADING_SPACE,
                ..Spec::ALL_STAGES
            };
            let eom = |s: &mut FilterSession, ev: &Event<'_>| {
                if matches!(ev, Event::Eom(_)) {
                    s.add_header(b"X-Spaced", b" value").unwrap();
                }
                Status::Continue
            };
            harness::serve(s, spec, eom, Default::default());
        });
        let spec = format!("inet:{port}@127.0.0.1");
        let r = check(&[&spec, "-"], Some(b"Subject:  two spaces\n\nbody\n"));
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(
            r.stdout.contains("add header      X-Spaced: value\n"),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout.contains("header   Subject:  two spaces "),
            "{}",
            r.stdout
        );
    });
}
