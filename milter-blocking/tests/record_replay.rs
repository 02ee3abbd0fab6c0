//! Recording and replay end to end: the recording proxy between the library's own
//! client and a test milter (bytes unchanged, recording complete), replay against
//! the same milter (no difference) and against changed ones (the difference
//! named), and the `record`/`replay` subcommands of `milter-check` (with the `cli`
//! feature).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers outside #[test] fns.

mod common;
#[path = "data/tagger.rs"]
mod tagger;

use common::{watchdog, TestServer};
use milter_blocking::client::{
    replay, replay_with_timeout, Client, DifferenceKind, Direction, Envelope, ErrorKind, Message,
    Recording, RecordingEntry, RecordingProxy, ReplayError, Verdict, RECORDING_EXTENSION,
};
use milter_blocking::SocketSpec;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};
use tagger::Tagger;

const LIMIT: Duration = Duration::from_secs(60);

fn tagger(tag: &'static str) -> TestServer {
    TestServer::start(move || Tagger { tag })
}

fn proxy_to(milter: &SocketSpec, dir: &Path, max_payload: usize) -> SocketSpec {
    let listen: SocketSpec = "inet:0@127.0.0.1".parse().unwrap();
    let proxy = RecordingProxy::bind(&listen, milter.clone(), dir)
        .unwrap()
        .max_payload(max_payload);
    let spec = proxy.local_spec();
    // Runs until the test process ends.
    std::thread::spawn(move || proxy.run());
    spec
}

/// The recordings in `dir` once each has its `end` line.
fn complete_recordings(dir: &Path, count: usize) -> Vec<Recording> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut found = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            assert_eq!(
                path.extension().and_then(|x| x.to_str()),
                Some(RECORDING_EXTENSION)
            );
            let text = std::fs::read_to_string(&path).unwrap();
            // A line being written may be incomplete: parse complete files only.
            if text.ends_with('\n') {
                let rec = Recording::parse(&text).unwrap();
                if rec.is_complete() {
                    found.push(rec);
                }
            }
        }
        if found.len() >= count {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no complete recording in {dir:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn send_one(spec: &SocketSpec) -> Verdict {
    let mut c = Client::open(spec).unwrap();
    let msg = Message::parse(b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n");
    let env = Envelope::new("a@example.org").rcpt("b@example.com");
    let t = c.send_message(&env, &msg).unwrap();
    c.quit().unwrap();
    t.verdict
}

#[test]
fn the_proxy_relays_bytes_unchanged_and_records_every_packet() {
    watchdog(LIMIT, || {
        // A peer that keeps what it receives and answers with fixed bytes: among
        // them an oversized packet (relayed, noted by length), and after the
        // packets a zero length (the rest relayed, not recorded).
        let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
        let up_addr = upstream.local_addr().unwrap();
        let mut answer = Vec::new();
        milter_blocking::milter_core::frame::encode_frame(&mut answer, b'c', &[]);
        milter_blocking::milter_core::frame::encode_frame(
            &mut answer,
            b'b',
            &[&vec![b'x'; 70_000]],
        );
        milter_blocking::milter_core::frame::encode_frame(&mut answer, b'h', &[b"X-A\0 b \0"]);
        answer.extend_from_slice(&[0, 0, 0, 0, 0xff, 0xfe]);
        let sent_back = answer.clone();
        let peer = std::thread::spawn(move || {
            let (mut s, _) = upstream.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(&sent_back).unwrap();
            got
        });
        let dir = tempfile::tempdir().unwrap();
        let spec = proxy_to(&SocketSpec::Inet(up_addr), dir.path(), 65_535);
        let SocketSpec::Inet(proxy_addr) = spec else {
            unreachable!()
        };
        let mut request = Vec::new();
        milter_blocking::milter_core::frame::encode_frame(&mut request, b'H', &[b"a\0"]);
        milter_blocking::milter_core::frame::encode_frame(&mut request, b'B', &[&[0u8, 1, 2, 255]]);
        let mut mta = TcpStream::connect(proxy_addr).unwrap();
        // Byte by byte for the first packet: frames cut across reads.
        for b in &request[..8] {
            mta.write_all(&[*b]).unwrap();
        }
        mta.write_all(&request[8..]).unwrap();
        mta.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        mta.read_to_end(&mut back).unwrap();
        assert_eq!(peer.join().unwrap(), request, "MTA to milter changed");
        assert_eq!(back, answer, "milter to MTA changed");

        let rec = complete_recordings(dir.path(), 1).remove(0);
        assert_eq!(rec.milter, spec_text(up_addr));
        let lines: Vec<String> = rec
            .to_string()
            .lines()
            .skip(1)
            .map(|l| {
                // Without the timestamp.
                let mut w = l.splitn(3, ' ');
                let kind = w.next().unwrap();
                let _time = w.next();
                format!("{kind} {}", w.next().unwrap_or(""))
            })
            .collect();
        assert_eq!(
            lines,
            [
                "> H a\\0",
                "> B \\0\\x01\\x02\\xff",
                "< c",
                "<! b 70000",
                "< h X-A\\0 b \\0",
                "<? packet with length 0 (no command code): not milter protocol",
                "end ",
            ]
        );
    });
}

fn spec_text(a: std::net::SocketAddr) -> String {
    SocketSpec::Inet(a).to_string()
}

#[test]
fn a_recorded_session_replays_the_same_against_the_same_milter_and_differs_against_changed_ones() {
    watchdog(LIMIT, || {
        let one = tagger("one");
        let dir = tempfile::tempdir().unwrap();
        let proxy = proxy_to(&one.spec, dir.path(), 1 << 20);
        assert_eq!(send_one(&proxy), Verdict::Accept);
        let rec = complete_recordings(dir.path(), 1).remove(0);

        // The whole session is there: negotiation both ways and its flags, each
        // stage, the answers, and the abort and quit.
        let codes: String = rec
            .packets()
            .filter(|p| p.direction == Direction::ToMilter && p.code != b'D')
            .map(|p| char::from(p.code))
            .collect();
        assert_eq!(codes, "OCMRLLEAAQ");
        let n = rec.negotiated().expect("negotiated line");
        assert_eq!(n.version, 6);
        assert!(n.actions.contains(milter_blocking::Actions::ADD_HEADER));
        let eom_answer: Vec<_> = rec
            .entries
            .iter()
            .filter_map(|e| match e {
                RecordingEntry::Packet(p) if p.direction == Direction::ToMta => Some(p.code),
                _ => None,
            })
            .collect();
        assert_eq!(eom_answer.first(), Some(&b'O'));
        assert!(eom_answer.ends_with(b"hc"), "{eom_answer:?}");

        // The text form reads back to the same recording.
        assert_eq!(Recording::parse(&rec.to_string()).unwrap(), rec);

        let same = replay(&rec, &one.spec).unwrap();
        assert!(same.is_same(), "{same}");
        assert_eq!(same.answers, 7, "{same}");

        let two = tagger("two");
        let report = replay(&rec, &two.spec).unwrap();
        assert!(!report.is_same());
        assert_eq!(report.differences.len(), 1, "{report}");
        let d = &report.differences[0];
        assert_eq!((d.kind, d.command), (DifferenceKind::Modifications, b'E'));
        assert!(
            d.to_string()
                .contains("recorded add header X-Tag: \"one\"; replayed add header X-Tag: \"two\""),
            "{d}"
        );

        // Changed to negotiate every stage before end of message away: they are not
        // sent, their recorded answers show as differences, and nothing waits for
        // an answer.
        let blind = TestServer::start(|| tagger::EomOnlyTagger);
        let report = replay_with_timeout(&rec, &blind.spec, Duration::from_secs(20)).unwrap();
        let kinds: Vec<_> = report
            .differences
            .iter()
            .map(|d| (d.kind, d.command))
            .collect();
        assert_eq!(
            kinds,
            [
                (DifferenceKind::Negotiation, b'O'),
                (DifferenceKind::Verdict, b'C'),
                (DifferenceKind::Verdict, b'M'),
                (DifferenceKind::Verdict, b'R'),
                (DifferenceKind::Verdict, b'L'),
                (DifferenceKind::Verdict, b'L')
            ],
            "{report}"
        );
        assert!(
            report.differences[1]
                .to_string()
                .ends_with("recorded continue; replayed nothing"),
            "{report}"
        );

        let reject = tagger("reject");
        let report = replay(&rec, &reject.spec).unwrap();
        let kinds: Vec<_> = report.differences.iter().map(|d| d.kind).collect();
        assert_eq!(
            kinds,
            [DifferenceKind::Verdict, DifferenceKind::Modifications],
            "{report}"
        );
    });
}

#[cfg(feature = "cli")]
mod cli {
    use super::*;
    use std::process::{Command, Stdio};

    fn milter_check(args: &[&str]) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_milter-check"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    #[test]
    fn record_and_replay_subcommands() {
        watchdog(LIMIT, || {
            let one = tagger("one");
            let two = tagger("two");
            let dir = tempfile::tempdir().unwrap();
            let rec_dir = dir.path().join("rec");
            // A free port for the recorder.
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let listen = format!("inet:{port}@127.0.0.1");
            let mut recorder = Command::new(env!("CARGO_BIN_EXE_milter-check"))
                .args(["record", "--listen", &listen, "--milter"])
                .arg(one.spec.to_string())
                .arg("--dir")
                .arg(&rec_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "recorder did not listen");
                std::thread::sleep(Duration::from_millis(20));
            }
            // The probe connection above makes a recording of its own (no packets).
            let spec: SocketSpec = listen.parse().unwrap();
            assert_eq!(send_one(&spec), Verdict::Accept);
            let recs = complete_recordings(&rec_dir, 2);
            let _ = recorder.kill();
            let _ = recorder.wait();
            let path = std::fs::read_dir(&rec_dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| std::fs::read_to_string(p).unwrap().contains("\n> "))
                .unwrap();
            assert_eq!(recs.len(), 2);
            let path = path.to_str().unwrap();

            let (code, out) = milter_check(&["replay", path, &one.spec.to_string()]);
            assert_eq!(code, 0, "{out}");
            assert!(out.contains("same:"), "{out}");
            let (code, out) = milter_check(&["replay", path, &two.spec.to_string()]);
            assert_eq!(code, 1, "{out}");
            assert!(out.contains("modifications differs"), "{out}");

            std::fs::write(dir.path().join("bad"), "milter-recording 1 mta=a\n").unwrap();
            let bad = dir.path().join("bad");
            let (code, out) = milter_check(&["replay", bad.to_str().unwrap(), "inet:1@127.0.0.1"]);
            assert_eq!(code, 65, "{out}");
            assert!(out.contains("line 1"), "{out}");
            let (code, _) = milter_check(&["replay", "/nonexistent/x", "inet:1@127.0.0.1"]);
            assert_eq!(code, 66);
        });
    }
}

#[test]
fn a_milter_that_does_not_answer_or_is_not_there_is_an_error_of_its_kind() {
    watchdog(LIMIT, || {
        let text = "milter-recording 1 mta=a milter=b started=0.000000\n\
                    > 0.000001 O \\0\\0\\0\\x06\\0\\0\\x01\\xff\\0\\x1f\\xff\\xff\n\
                    < 0.000002 O \\0\\0\\0\\x06\\0\\0\\0\\x01\\0\\0\\0\\0\n";
        let rec = Recording::parse(text).unwrap();
        // Takes the connection and the negotiation, and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let held = std::thread::spawn(move || {
            let (mut s, _) = silent.accept().unwrap();
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        });
        let e = replay_with_timeout(&rec, SocketSpec::Inet(addr), Duration::from_millis(200))
            .unwrap_err();
        match &e {
            ReplayError::Milter(c) => assert_eq!(c.kind(), ErrorKind::Timeout, "{e}"),
            other => panic!("{other}"),
        }
        assert!(
            e.to_string()
                .contains("line 2 (negotiation (O)) (after 200ms)"),
            "{e}"
        );
        held.join().unwrap();

        // Nothing listens on a port that was just free.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = replay(&rec, format!("inet:{port}@127.0.0.1")).unwrap_err();
        match &e {
            ReplayError::Milter(c) => assert_eq!(c.kind(), ErrorKind::Connect, "{e}"),
            other => panic!("{other}"),
        }
    });
}
