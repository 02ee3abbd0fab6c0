//! The client where Postfix, Sendmail and Stalwart differ, each rule against a
//! scripted milter: what is sent (queue id, macros, headers, packets after a
//! refusal) and what is tolerated from the milter (progress, skip, quarantine,
//! reply texts, old versions, peers that are not milters).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers outside #[test] fns.

#[path = "data/harness.rs"]
mod harness;

use harness::{continue_all, optneg, optneg_version, packet, spawn_pair, spawn_scripted, watchdog};
use milter_blocking::client::{
    Client, ClientAddress, ClientError, Decision, Envelope, ErrorKind, Message, Profile, Response,
    Timeouts, Verdict,
};
use milter_blocking::{ProtocolOpts, Spec, Stage};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

fn client(profile: Profile, s: UnixStream) -> Result<Client, ClientError> {
    Client::builder()
        .profile(profile)
        .timeouts(Timeouts::uniform(Duration::from_secs(5)))
        .over_stream(s)
}

fn cont() -> Vec<u8> {
    packet(b'c', b"")
}

fn has_i(pairs: &[(String, String)]) -> bool {
    pairs.iter().any(|(n, v)| n == "i" && !v.is_empty())
}

#[test]
fn postfix_sends_the_queue_id_from_the_second_recipient_on() {
    watchdog(LIMIT, || {
        let (s, log, t) = spawn_pair(Spec::ALL_STAGES, continue_all);
        let mut c = client(Profile::Postfix, s).unwrap();
        let env = Envelope::new("a@x").rcpt("b@x").rcpt("c@x").rcpt("d@x");
        c.send_message(&env, &Message::parse(b"Subject: s\n\nbody\n"))
            .unwrap();
        c.quit().unwrap();
        t.join().unwrap();
        let rcpt = log.macros(b'R');
        let with_i: Vec<bool> = rcpt.iter().map(|p| has_i(p)).collect();
        assert_eq!(with_i, [false, true, true]);
        assert!(has_i(&log.macros(b'T')[0]));
    });
}

#[test]
fn postfix_sends_the_queue_id_before_headers_at_every_version() {
    watchdog(LIMIT, || {
        for version in [2, 4, 6] {
            let (s, log, t) = spawn_pair(Spec::ALL_STAGES, continue_all);
            let mut c = Client::builder()
                .offer_version(version)
                .timeouts(Timeouts::uniform(Duration::from_secs(5)))
                .over_stream(s)
                .unwrap();
            let env = Envelope::new("a@x").rcpt("b@x");
            c.send_message(&env, &Message::parse(b"A: 1\nB: 2\n\nbody\n"))
                .unwrap();
            c.quit().unwrap();
            t.join().unwrap();
            let headers = log.macros(b'L');
            assert_eq!(headers.len(), 2, "v{version}");
            assert!(headers.iter().all(|p| has_i(p)), "v{version}: {headers:?}");
            assert!(has_i(&log.macros(b'N')[0]), "v{version}");
        }
    });
}

#[test]
fn progress_before_end_of_message_is_ignored_by_postfix_only() {
    watchdog(LIMIT, || {
        let answer = |code: u8, _: &[u8]| {
            if code == b'R' {
                [packet(b'p', b""), packet(b'p', b""), cont()].concat()
            } else {
                cont()
            }
        };
        let (s, _log, t) = spawn_scripted(optneg(0, 0), answer);
        let mut c = client(Profile::Postfix, s).unwrap();
        c.mail("<a@x>").unwrap();
        assert_eq!(
            c.rcpt("<b@x>").unwrap(),
            Response::Replied(Decision::Continue)
        );
        assert_eq!(c.data().unwrap(), Response::Replied(Decision::Continue));
        c.quit().unwrap();
        t.join().unwrap();

        // Sendmail puts the milter in its error state.
        let (s, _log, t) = spawn_scripted(optneg(0, 0), answer);
        let mut c = client(Profile::Sendmail, s).unwrap();
        c.mail("<a@x>").unwrap();
        let e = c.rcpt("<b@x>").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
        drop(c);
        t.join().unwrap();
    });
}

#[test]
fn postfix_skip_at_a_header_skips_the_other_headers() {
    watchdog(LIMIT, || {
        let mut headers_seen = 0;
        let answer = move |code: u8, _: &[u8]| {
            if code == b'L' {
                headers_seen += 1;
                if headers_seen == 1 {
                    return packet(b's', b"");
                }
            }
            cont()
        };
        let (s, log, t) = spawn_scripted(optneg(0, ProtocolOpts::SKIP.bits()), answer);
        let mut c = client(Profile::Postfix, s).unwrap();
        let msg = Message::parse(b"A: 1\nB: 2\nC: 3\nD: 4\nE: 5\n\nbody\n");
        let tr = c
            .send_message(&Envelope::new("a@x").rcpt("b@x"), &msg)
            .unwrap();
        c.quit().unwrap();
        t.join().unwrap();
        assert_eq!(tr.verdict, Verdict::Accept);
        let headers: Vec<&Response> = tr
            .steps
            .iter()
            .filter(|s| s.stage == Stage::Header)
            .map(|s| &s.response)
            .collect();
        assert_eq!(headers[0], &Response::Replied(Decision::Skip));
        assert!(headers[1..].iter().all(|r| **r == Response::Skipped));
        // One header and its macros; end of headers goes out again.
        let codes = log.codes();
        let from_data: Vec<&str> = codes
            .iter()
            .skip_while(|c| *c != "T")
            .map(String::as_str)
            .collect();
        assert_eq!(
            from_data,
            ["T", "DL", "L", "DN", "N", "DB", "B", "DE", "E", "A", "A", "Q"]
        );
    });
}

/// The command codes, macro packets left out.
fn commands(log: &harness::Log) -> Vec<String> {
    log.codes()
        .into_iter()
        .filter(|c| !c.starts_with('D'))
        .collect()
}

/// The command codes from DATA on, macro packets left out.
fn codes_from_data(log: &harness::Log) -> Vec<String> {
    commands(log).into_iter().skip_while(|c| c != "T").collect()
}

#[test]
fn sendmail_skip_before_the_body() {
    watchdog(LIMIT, || {
        let skip_at = |stage: u8| {
            move |code: u8, _: &[u8]| {
                if code == stage {
                    packet(b's', b"")
                } else {
                    cont()
                }
            }
        };
        let env = Envelope::new("a@x").rcpt("b@x").rcpt("c@x");
        let small = Message::parse(b"A: 1\nB: 2\nC: 3\n\nbody\n");
        let large = Message::new()
            .with_header("A", "1")
            .with_body(vec![b'x'; 70_000]);
        // At a header: the headers go on, the body is cut to a first full chunk.
        for (msg, want) in [
            (&small, ["T", "L", "L", "L", "N", "E", "Q"].as_slice()),
            (&large, ["T", "L", "N", "B", "E", "Q"].as_slice()),
        ] {
            let (s, log, t) = spawn_scripted(optneg(0, ProtocolOpts::SKIP.bits()), skip_at(b'L'));
            let mut c = client(Profile::Sendmail, s).unwrap();
            let tr = c.send_message(&env, msg).unwrap();
            assert_eq!(tr.verdict, Verdict::Accept);
            c.quit().unwrap();
            t.join().unwrap();
            assert_eq!(codes_from_data(&log), want);
        }
        // At a recipient: nothing more but quit; the message goes on without it.
        let (s, log, t) = spawn_scripted(optneg(0, ProtocolOpts::SKIP.bits()), skip_at(b'R'));
        let mut c = client(Profile::Sendmail8_18, s).unwrap();
        let tr = c.send_message(&env, &small).unwrap();
        assert_eq!(tr.verdict, Verdict::Accept);
        assert_eq!(tr.accepted_rcpts, [0, 1]);
        assert!(!tr.aborted);
        c.quit().unwrap();
        t.join().unwrap();
        let codes = commands(&log);
        assert_eq!(codes, ["O", "C", "H", "M", "R", "Q"]);
    });
}

#[test]
fn postfix_holds_the_message_and_stops_envelope_commands_after_a_quarantine_at_rcpt() {
    watchdog(LIMIT, || {
        let answer = |code: u8, _: &[u8]| {
            if code == b'R' {
                [packet(b'q', b"suspicious\0"), cont()].concat()
            } else {
                cont()
            }
        };
        let (s, log, t) = spawn_scripted(optneg(0x1FF, 0), answer);
        let mut c = client(Profile::Postfix, s).unwrap();
        let env = Envelope::new("a@x").rcpt("b@x").rcpt("c@x");
        let tr = c
            .send_message(&env, &Message::parse(b"Subject: s\n\nbody\n"))
            .unwrap();
        assert_eq!(tr.verdict, Verdict::Quarantine(b"suspicious".to_vec()));
        assert_eq!(tr.accepted_rcpts, [0, 1]);
        assert_eq!(c.quarantined(), Some(&b"suspicious"[..]));
        c.quit().unwrap();
        t.join().unwrap();
        // No second RCPT and no DATA; the content still goes out (as Postfix's
        // cleanup server sends it).
        let codes = commands(&log);
        assert_eq!(
            codes,
            ["O", "C", "H", "M", "R", "L", "N", "B", "E", "A", "A", "Q"]
        );

        let (s, _log, t) = spawn_scripted(optneg(0x1FF, 0), answer);
        let mut c = client(Profile::Sendmail, s).unwrap();
        c.mail("<a@x>").unwrap();
        assert_eq!(c.rcpt("<b@x>").unwrap_err().kind(), ErrorKind::Protocol);
        drop(c);
        t.join().unwrap();
    });
}

#[test]
fn postfix_closes_the_connection_after_a_session_refusal_or_shutdown() {
    watchdog(LIMIT, || {
        for (stage, reply) in [
            (b'C', packet(b'r', b"")),
            (b'C', packet(b'y', b"554 5.7.1 go away\0")),
            (b'H', packet(b't', b"")),
            (b'C', packet(b'a', b"")),
            (b'M', packet(b'4', b"")),
        ] {
            let r = reply.clone();
            let (s, log, t) =
                spawn_scripted(
                    optneg(0, 0),
                    move |code, _| {
                        if code == stage {
                            r.clone()
                        } else {
                            cont()
                        }
                    },
                );
            let mut c = client(Profile::Postfix, s).unwrap();
            let env = Envelope::new("a@x").rcpt("b@x");
            let msg = Message::parse(b"Subject: s\n\nbody\n");
            let tr = c.send_message(&env, &msg).unwrap();
            assert!(c.closed_by_mta(), "{}", stage as char);
            assert!(!tr.aborted);
            assert!(c.mail("<a@x>").is_err());
            c.quit().unwrap();
            // The milter saw the end of input right after the command.
            t.join().unwrap();
            let codes = log.codes();
            assert_eq!(
                codes.last().map(String::as_str),
                Some((stage as char).to_string().as_str()),
                "{codes:?}"
            );
        }

        // Sendmail goes on and quits.
        let (s, log, t) = spawn_scripted(optneg(0, 0), |code, _| {
            if code == b'C' {
                packet(b'r', b"")
            } else {
                cont()
            }
        });
        let mut c = client(Profile::Sendmail, s).unwrap();
        c.connect("h", &ClientAddress::default()).unwrap();
        assert!(!c.closed_by_mta());
        c.quit().unwrap();
        t.join().unwrap();
        assert_eq!(log.codes().last().map(String::as_str), Some("Q"));
    });
}

#[test]
fn reply_texts_are_checked_as_each_mta_does() {
    watchdog(LIMIT, || {
        let text = b"550-5.7.1 first\r\n551 5.7.1 second\0";
        let (s, _log, t) = spawn_scripted(optneg(0, 0), |_, _| packet(b'y', text));
        let mut c = client(Profile::Postfix, s).unwrap();
        let r = c.mail("<a@x>").unwrap();
        assert_eq!(r.reply_code(), Some(550));
        c.quit().unwrap();
        t.join().unwrap();

        // Sendmail checks only the code, and puts its default in place of a
        // malformed text (also one with a lone %, a format string to it).
        for (sent, got) in [
            (&text[..], &text[..text.len() - 1]),
            (b"hello\0", b"550 5.7.1 Command rejected"),
            (b"550 50% off\0", b"550 5.7.1 Command rejected"),
            (b"550 50%% off\0", b"550 50%% off"),
        ] {
            let (s, _log, t) = spawn_scripted(optneg(0, 0), move |_, _| packet(b'y', sent));
            let mut c = client(Profile::Sendmail, s).unwrap();
            assert_eq!(c.mail("<a@x>").unwrap().reply_text(), Some(got));
            c.quit().unwrap();
            t.join().unwrap();
        }

        let (s, _log, t) = spawn_scripted(optneg(0, 0), |_, _| packet(b'y', text));
        let mut c = client(Profile::Minimal, s).unwrap();
        let e = c.mail("<a@x>").unwrap_err();
        assert!(e.to_string().contains("first line's code"), "{e}");
        drop(c);
        t.join().unwrap();
    });
}

#[test]
fn negotiation_versions_0_and_1() {
    watchdog(LIMIT, || {
        // Postfix: accepted, the offered version's events are sent.
        for v in [0, 1] {
            let (s, log, t) = spawn_scripted(optneg_version(v, 0, 0), |_, _| cont());
            let mut c = client(Profile::Postfix, s).unwrap();
            assert_eq!(c.negotiated().version, v);
            c.mail("<a@x>").unwrap();
            assert_eq!(c.data().unwrap(), Response::Replied(Decision::Continue));
            c.quit().unwrap();
            t.join().unwrap();
            assert!(log.codes().contains(&"T".to_string()));
        }
        // Sendmail: 0 is taken as version 2 (no DATA), 1 is refused.
        let (s, _log, t) = spawn_scripted(optneg_version(0, 0, 0), |_, _| cont());
        let mut c = client(Profile::Sendmail, s).unwrap();
        assert_eq!(c.data().unwrap(), Response::Skipped);
        c.quit().unwrap();
        t.join().unwrap();
        let (s, _log, t) = spawn_scripted(optneg_version(1, 0, 0), |_, _| cont());
        assert_eq!(
            client(Profile::Sendmail, s).unwrap_err().kind(),
            ErrorKind::Protocol
        );
        t.join().unwrap();
    });
}

#[test]
fn an_unterminated_last_line_gets_its_crlf() {
    watchdog(LIMIT, || {
        let (s, log, t) = spawn_pair(Spec::ALL_STAGES, continue_all);
        let mut c = client(Profile::Postfix, s).unwrap();
        let msg = Message::parse(b"Subject: s\n\nline one\nlast line");
        c.send_message(&Envelope::new("a@x").rcpt("b@x"), &msg)
            .unwrap();
        c.quit().unwrap();
        t.join().unwrap();
        let body: Vec<Vec<u8>> = log
            .packets()
            .into_iter()
            .filter(|(code, _)| *code == b'B')
            .map(|(_, p)| p)
            .collect();
        assert_eq!(body, [b"line one\r\nlast line\r\n".to_vec()]);
    });
}

/// The payload length of the first header packet.
fn header_sent(log: &harness::Log) -> usize {
    let packets = log.packets();
    packets
        .iter()
        .find(|(code, _)| *code == b'L')
        .unwrap()
        .1
        .len()
}

#[test]
fn postfix_sends_a_header_over_65535_bytes_and_sendmail_does_not() {
    watchdog(LIMIT, || {
        let long = "x".repeat(70_000);
        let (s, log, t) = spawn_pair(Spec::ALL_STAGES, continue_all);
        let mut c = client(Profile::Postfix, s).unwrap();
        c.connect("h", &ClientAddress::default()).unwrap();
        c.mail("<a@x>").unwrap();
        c.rcpt("<b@x>").unwrap();
        c.data().unwrap();
        assert_eq!(
            c.header("X-Long", &long).unwrap(),
            Response::Replied(Decision::Continue)
        );
        c.quit().unwrap();
        t.join().unwrap();
        assert_eq!(header_sent(&log), "X-Long".len() + 1 + long.len() + 1);

        // A whole message goes out as Postfix stores it: the header cut to
        // 60,000 bytes of `Name:value`.
        let (s, log, t) = spawn_pair(Spec::ALL_STAGES, continue_all);
        let mut c = client(Profile::Postfix, s).unwrap();
        let msg = Message::new().with_header("X-Long", &long).with_body("b\n");
        c.send_message(&Envelope::new("a@x").rcpt("b@x"), &msg)
            .unwrap();
        c.quit().unwrap();
        t.join().unwrap();
        assert_eq!(header_sent(&log), 60_000 - ": ".len() + 2);

        let (s, _log, t) = spawn_pair(Spec::ALL_STAGES, continue_all);
        let mut c = client(Profile::Sendmail, s).unwrap();
        c.connect("h", &ClientAddress::default()).unwrap();
        c.mail("<a@x>").unwrap();
        c.rcpt("<b@x>").unwrap();
        c.data().unwrap();
        let e = c.header("X-Long", &long).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Misuse, "{e}");
        c.quit().unwrap();
        t.join().unwrap();
    });
}

#[test]
fn stalwart_profile() {
    watchdog(LIMIT, || {
        let (s, log, t) = spawn_scripted(
            optneg(0xFF, ProtocolOpts::HEADER_LEADING_SPACE.bits()),
            |_, _| cont(),
        );
        let mut c = client(Profile::Stalwart, s).unwrap();
        assert_eq!(c.offer().actions.bits(), 0xFF);
        assert_eq!(c.offer().protocol.bits(), 0x42);
        let env = Envelope::new("A@x SIZE=10").rcpt("b@X NOTIFY=NEVER");
        let msg = Message::parse(b"Subject:  two spaces \nTo: a,\n b\n\nbody\n");
        let tr = c.send_message(&env, &msg).unwrap();
        assert_eq!(tr.verdict, Verdict::Accept);
        assert!(!tr.aborted);
        // One run per connection.
        assert_eq!(
            c.send_message(&env, &msg).unwrap_err().kind(),
            ErrorKind::Misuse
        );
        c.quit().unwrap();
        t.join().unwrap();
        assert_eq!(
            log.codes(),
            ["O", "DC", "C", "DH", "H", "DM", "M", "DR", "R", "T", "L", "L", "N", "B", "E", "Q"]
        );
        let packets = log.packets();
        let payload = |code: u8| -> Vec<Vec<u8>> {
            packets
                .iter()
                .filter(|(c, _)| *c == code)
                .map(|(_, p)| p.clone())
                .collect()
        };
        // No ESMTP arguments, addresses lowercased; header values trimmed, even
        // with HDR_LEADSPC.
        assert_eq!(payload(b'M'), [b"<a@x>\0".to_vec()]);
        assert_eq!(payload(b'R'), [b"<b@x>\0".to_vec()]);
        assert_eq!(
            payload(b'L'),
            [
                b"Subject\0two spaces\0".to_vec(),
                b"To\0a,\r\n b\0".to_vec()
            ]
        );
        // Its fixed macro list, values or not (no TLS here).
        assert_eq!(
            log.macros(b'H')[0],
            [
                ("{cipher}".to_string(), String::new()),
                ("{tls_version}".to_string(), String::new())
            ]
        );
        // No queue id anywhere.
        for code in [b'C', b'H', b'M', b'R'] {
            assert!(log.macros(code).iter().all(|p| !has_i(p)));
        }

        // A refused recipient refuses the message, and Stalwart drops the
        // connection without quit.
        let (s, log, t) = spawn_scripted(optneg(0xFF, 0), |code, _| {
            if code == b'R' {
                packet(b'r', b"")
            } else {
                cont()
            }
        });
        let mut c = client(Profile::Stalwart, s).unwrap();
        let env = Envelope::new("a@x").rcpt("b@x").rcpt("c@x");
        let tr = c.send_message(&env, &msg).unwrap();
        assert!(matches!(
            tr.verdict,
            Verdict::Reject {
                stage: Stage::Rcpt,
                ..
            }
        ));
        assert!(tr.accepted_rcpts.is_empty());
        c.quit().unwrap();
        t.join().unwrap();
        assert_eq!(log.codes().last().map(String::as_str), Some("R"));
    });
}

/// A peer that answers the first bytes it reads with `answer` (or sends it at
/// once, as an SMTP server does), then waits for the client to hang up.
fn fake_peer(answer: &'static [u8], first: bool) -> (UnixStream, std::thread::JoinHandle<()>) {
    let (a, mut b) = UnixStream::pair().unwrap();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        if !first {
            let _ = b.read(&mut buf);
        }
        let _ = b.write_all(answer);
        while matches!(b.read(&mut buf), Ok(n) if n > 0) {}
    });
    (a, t)
}

#[test]
fn a_peer_that_is_not_a_milter_is_named() {
    watchdog(LIMIT, || {
        for (answer, first, named) in [
            (&b"UNKNOWN COMMAND\n"[..], false, "clamd"),
            (
                b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n",
                false,
                "an HTTP server",
            ),
            (b"220 mx.example.org ESMTP\r\n", true, "an SMTP server"),
            (
                &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32],
                false,
                "a TLS server",
            ),
        ] {
            let (s, t) = fake_peer(answer, first);
            let e = client(Profile::Postfix, s).unwrap_err();
            t.join().unwrap();
            assert!(matches!(e, ClientError::NotAMilter { .. }), "{e}");
            assert_eq!(e.kind(), ErrorKind::Protocol);
            assert!(e.to_string().contains(named), "{e}");
        }
    });
}

#[test]
fn stalwart_runs_for_earlier_stages() {
    watchdog(LIMIT, || {
        let env = Envelope::new("a@x").rcpt("b@x").rcpt("c@x");
        let msg = Message::parse(b"Subject: s\n\nbody\n");
        for (stage, want) in [
            (Stage::Connect, ["O", "C", "H", "Q"].as_slice()),
            (Stage::Helo, ["O", "C", "H", "Q"].as_slice()),
            (Stage::Mail, ["O", "C", "H", "M", "Q"].as_slice()),
            (Stage::Rcpt, ["O", "C", "H", "M", "R", "R", "Q"].as_slice()),
        ] {
            let (s, log, t) = spawn_scripted(optneg(0xFF, 0), |_, _| cont());
            let mut c = client(Profile::Stalwart, s).unwrap();
            let tr = c.send_run(stage, &env, &msg).unwrap();
            assert_eq!(tr.verdict, Verdict::Accept);
            assert_eq!(tr.accepted_rcpts, [0, 1]);
            c.quit().unwrap();
            t.join().unwrap();
            let codes = commands(&log);
            assert_eq!(codes, want, "{stage}");
            // At the connect stage Stalwart knows no HELO name yet.
            let helo = log.packets().into_iter().find(|(c, _)| *c == b'H').unwrap();
            let empty = helo.1 == b"\0";
            assert_eq!(empty, stage == Stage::Connect, "{stage}");
        }
        // A refusal ends the run without quit.
        let (s, log, t) = spawn_scripted(optneg(0xFF, 0), |code, _| {
            packet(if code == b'M' { b'r' } else { b'c' }, b"")
        });
        let mut c = client(Profile::Stalwart, s).unwrap();
        let tr = c.send_run(Stage::Rcpt, &env, &msg).unwrap();
        assert!(matches!(
            tr.verdict,
            Verdict::Reject {
                stage: Stage::Mail,
                ..
            }
        ));
        assert!(tr.accepted_rcpts.is_empty());
        c.quit().unwrap();
        t.join().unwrap();
        assert_eq!(log.codes().last().map(String::as_str), Some("M"));
    });
}
