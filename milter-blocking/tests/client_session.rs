//! The client against small milters built directly on the core filter session
//! (independent of our server): every stage, status, modification, negotiation
//! outcome, profile and error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers outside #[test] fns.

#[path = "data/harness.rs"]
mod harness;

use harness::{continue_all, optneg, packet, spawn_pair, spawn_raw, watchdog};
use milter_blocking::client::{
    ApplyRules, Client, ClientAddress, ClientError, Decision, Envelope, ErrorKind, Message,
    Modification, Profile, Response, Timeouts, Verdict,
};
use milter_blocking::milter_core::filter::{Event, FilterSession};
use milter_blocking::{Actions, MacroStage, OptNeg, ProtocolOpts, Spec, Stage, Stages, Status};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

fn short() -> Timeouts {
    Timeouts::uniform(Duration::from_secs(5))
}

fn replied(d: Decision) -> Response {
    Response::Replied(d)
}

#[test]
fn client_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Client>();
}

#[test]
fn every_stage_is_sent_and_answered() {
    watchdog(LIMIT, || {
        let (s, log, t) = spawn_pair(Spec::ALL_STAGES, continue_all);
        let mut c = Client::builder().timeouts(short()).over_stream(s).unwrap();
        assert_eq!(c.negotiated().version, 6);
        assert!(c.negotiated().skipped.is_empty());
        let ok = replied(Decision::Continue);
        assert_eq!(
            c.connect("client.example.net", &ClientAddress::default())
                .unwrap(),
            ok
        );
        assert_eq!(c.helo("client.example.net").unwrap(), ok);
        assert_eq!(
            c.mail_with_args("<a@example.org>", &["SIZE=10"]).unwrap(),
            ok
        );
        assert_eq!(c.rcpt("<b@example.com>").unwrap(), ok);
        assert_eq!(c.data().unwrap(), ok);
        assert_eq!(c.header("Subject", "hi").unwrap(), ok);
        assert_eq!(c.eoh().unwrap(), ok);
        assert_eq!(c.body(b"hello\r\n").unwrap(), ok);
        let eom = c.eom().unwrap();
        assert_eq!(eom.decision, Decision::Continue);
        assert!(eom.modifications.is_empty());
        c.abort().unwrap();
        assert_eq!(c.unknown("XFOO bar").unwrap(), ok);
        c.quit().unwrap();
        t.join().unwrap();
        // Postfix: a D before every command, with codes L and B for content.
        assert_eq!(
            log.codes(),
            [
                "O", "DC", "C", "DH", "H", "DM", "M", "DR", "R", "DT", "T", "DL", "L", "DN", "N",
                "DB", "B", "DE", "E", "A", "DU", "U", "A", "Q"
            ]
        );
        let connect = &log.macros(b'C')[0];
        assert!(connect.contains(&("j".into(), "mx.example.org".into())));
        assert!(connect.contains(&("_".into(), "client.example.net [192.0.2.1]".into())));
        assert!(connect.contains(&("v".into(), "Postfix 3.7.11".into())));
        // The queue id: not at MAIL, `i` from DATA on, also at body and eom (Postfix
        // spells it `{i}` there only when the milter's symbol list does).
        assert!(!log.macros(b'M')[0].iter().any(|(n, _)| n == "i"));
        let qid = c_queue_id(&log.macros(b'T')[0]);
        assert_eq!(log.macros(b'E')[0], [("i".to_string(), qid.clone())]);
        assert_eq!(log.macros(b'B')[0], [("i".to_string(), qid)]);
        // The connect packet: host, family 4, port, address.
        let c_pkt = log.packets().into_iter().find(|(c, _)| *c == b'C').unwrap();
        assert_eq!(c_pkt.1, b"client.example.net\x004\xa1\x12192.0.2.1\0");
        let m_pkt = log.packets().into_iter().find(|(c, _)| *c == b'M').unwrap();
        assert_eq!(m_pkt.1, b"<a@example.org>\0SIZE=10\0");
    });
}

fn c_queue_id(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .find(|(n, _)| n == "i")
        .map(|(_, v)| v.clone())
        .expect("queue id at DATA")
}

#[test]
fn every_status_comes_back() {
    watchdog(LIMIT, || {
        let spec = Spec {
            options: ProtocolOpts::SKIP,
            ..Spec::ALL_STAGES
        };
        let (s, _log, t) = spawn_pair(spec, |_: &mut FilterSession, ev: &Event<'_>| match ev {
            Event::Rcpt(r) => match r.bare() {
                b"reject@x" => Status::Reject,
                b"tempfail@x" => Status::Tempfail,
                b"discard@x" => Status::Discard,
                b"accept@x" => Status::Accept,
                b"reply@x" => Status::reply(550, Some("5.7.1"), "no 100% thanks").unwrap(),
                b"multi@x" => Status::Reply(
                    milter_blocking::SmtpReply::multiline(451, None, &["a", "b"]).unwrap(),
                ),
                _ => Status::Continue,
            },
            Event::Body(_) => Status::Skip,
            _ => Status::Continue,
        });
        let mut c = Client::builder().timeouts(short()).over_stream(s).unwrap();
        c.connect("h", &ClientAddress::Unknown).unwrap();
        c.mail("<a@x>").unwrap();
        assert_eq!(c.rcpt("<reject@x>").unwrap(), replied(Decision::Reject));
        assert_eq!(c.rcpt("<tempfail@x>").unwrap(), replied(Decision::Tempfail));
        let r = c.rcpt("<reply@x>").unwrap();
        assert_eq!(r.reply_code(), Some(550));
        assert_eq!(r.reply_text(), Some(&b"550 5.7.1 no 100%% thanks"[..]));
        assert!(r.is_final());
        let r = c.rcpt("<multi@x>").unwrap();
        assert_eq!(r.reply_text(), Some(&b"451-4.0.0 a\r\n451 4.0.0 b"[..]));
        assert_eq!(r.to_string(), "reply 451-4.0.0 a / 451 4.0.0 b");
        assert_eq!(c.rcpt("<ok@x>").unwrap(), replied(Decision::Continue));
        c.data().unwrap();
        c.eoh().unwrap();
        let b = c.body_chunks(&vec![b'x'; 200_000]).unwrap();
        assert_eq!((b.chunks, b.response), (1, Some(replied(Decision::Skip))));
        c.eom().unwrap();
        c.mail("<a@x>").unwrap();
        assert_eq!(c.rcpt("<discard@x>").unwrap(), replied(Decision::Discard));
        c.abort().unwrap();
        c.mail("<a@x>").unwrap();
        assert_eq!(c.rcpt("<accept@x>").unwrap(), replied(Decision::Accept));
        c.quit().unwrap();
        t.join().unwrap();
    });
}

fn modifying_milter(s: &mut FilterSession, ev: &Event<'_>) -> Status {
    if let Event::Eom(_) = ev {
        s.progress().unwrap();
        s.add_header(b"X-Added", b"yes").unwrap();
        s.insert_header(0, b"X-Top", b"first").unwrap();
        s.change_header(b"subject", 1, b"[tagged] hi").unwrap();
        s.change_header(b"X-Drop", 1, b"").unwrap();
        s.add_rcpt(b"<new@example.com>").unwrap();
        s.add_rcpt_with_args(b"<args@example.com>", Some(b"NOTIFY=NEVER"))
            .unwrap();
        s.delete_rcpt(b"<gone@example.com>").unwrap();
        s.change_from(b"<bounce@example.org>", Some(b"RET=HDRS"))
            .unwrap();
        let body = vec![b'z'; 100_000];
        s.replace_body(&body[..60_000]).unwrap();
        s.replace_body(&body[60_000..]).unwrap();
        s.quarantine(b"held for review").unwrap();
    }
    Status::Continue
}

#[test]
fn every_modification_is_collected_and_applied() {
    watchdog(LIMIT, || {
        let spec = Spec {
            actions: Actions::all() - Actions::SET_SYMBOL_LIST,
            ..Spec::ALL_STAGES
        };
        let (s, _log, t) = spawn_pair(spec, modifying_milter);
        let mut c = Client::builder().timeouts(short()).over_stream(s).unwrap();
        let msg = Message::parse(b"Subject: hi\r\nX-Drop: 1\r\nX-Drop: 2\r\n\r\nold body\r\n");
        let env = Envelope::new("a@example.org")
            .rcpt("keep@example.com")
            .rcpt("gone@example.com");
        let tr = c.send_message(&env, &msg).unwrap();
        assert!(tr.aborted, "Postfix aborts after every transaction");
        assert_eq!(tr.verdict, Verdict::Quarantine(b"held for review".to_vec()));
        let eom = tr.eom.as_ref().unwrap();
        assert_eq!(eom.progress, 1);
        assert_eq!(eom.modifications.len(), 10, "{:?}", eom.modifications);
        assert!(eom.has_added_header("x-added", "yes"));
        assert_eq!(eom.added_header("X-Top"), Some(&b"first"[..]));
        assert_eq!(eom.header_changes("Subject"), [(1, &b"[tagged] hi"[..])]);
        assert_eq!(eom.header_changes("x-drop"), [(1, &b""[..])]);
        assert_eq!(
            eom.added_rcpts(),
            [&b"<new@example.com>"[..], b"<args@example.com>"]
        );
        assert_eq!(eom.deleted_rcpts(), [&b"<gone@example.com>"[..]]);
        assert_eq!(eom.new_sender(), Some(&b"<bounce@example.org>"[..]));
        assert_eq!(eom.new_body().unwrap().len(), 100_000, "runs are merged");
        assert!(matches!(
            &eom.modifications[8],
            Modification::ReplaceBody(b) if b.len() == 100_000
        ));
        let out = tr.delivered(ApplyRules::Postfix, &msg, &env).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.message.to_bytes()[..71]),
            "X-Top: first\r\nSubject: [tagged] hi\r\nX-Drop: 2\r\nX-Added: yes\r\n\r\nzzzzzzzz"
        );
        let rcpts: Vec<String> = out
            .envelope
            .recipients
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(
            rcpts,
            [
                "<keep@example.com>",
                "<new@example.com>",
                "<args@example.com> NOTIFY=NEVER"
            ]
        );
        assert_eq!(
            out.envelope.sender.to_string(),
            "<bounce@example.org> RET=HDRS"
        );
        assert_eq!(out.quarantine.as_deref(), Some(&b"held for review"[..]));
        c.quit().unwrap();
        t.join().unwrap();
    });
}

#[test]
fn skipped_and_no_reply_stages_are_honoured() {
    watchdog(LIMIT, || {
        let spec = Spec {
            handled: Stages::MAIL | Stages::HEADER | Stages::EOM,
            no_reply: Stages::HEADER,
            ..Spec::NONE
        };
        let (s, log, t) = spawn_pair(spec, continue_all);
        let mut c = Client::builder().timeouts(short()).over_stream(s).unwrap();
        let n = c.negotiated().clone();
        assert!(n
            .skipped
            .contains(Stages::CONNECT | Stages::HELO | Stages::RCPT | Stages::BODY));
        assert_eq!(n.no_reply, Stages::HEADER);
        assert_eq!(
            c.connect("h", &ClientAddress::default()).unwrap(),
            Response::Skipped
        );
        assert_eq!(c.helo("h").unwrap(), Response::Skipped);
        assert_eq!(c.mail("<a@x>").unwrap(), replied(Decision::Continue));
        assert_eq!(c.rcpt("<b@x>").unwrap(), Response::Skipped);
        assert_eq!(c.data().unwrap(), Response::Skipped);
        assert_eq!(c.header("A", "1").unwrap(), Response::NoReply);
        assert_eq!(c.eoh().unwrap(), Response::Skipped);
        assert_eq!(c.body("x").unwrap(), Response::Skipped);
        assert_eq!(c.eom().unwrap().decision, Decision::Continue);
        c.quit().unwrap();
        t.join().unwrap();
        // Postfix sends the macros of skipped envelope stages, not of content ones,
        // and an abort when the client quits.
        assert_eq!(
            log.codes(),
            ["O", "DC", "DH", "DM", "M", "DR", "DT", "DL", "L", "DE", "E", "A", "Q"]
        );
    });
}

#[test]
fn sendmail_profile_macros_and_addresses() {
    watchdog(LIMIT, || {
        let spec = Spec::ALL_STAGES.with_macros(MacroStage::Rcpt, "{rcpt_addr} {client_addr}");
        let spec = Spec {
            optional_actions: Actions::SET_SYMBOL_LIST,
            ..spec
        };
        let (s, log, t) = spawn_pair(spec, continue_all);
        let mut c = Client::builder()
            .profile(Profile::Sendmail)
            .timeouts(short())
            .stage_macro(Stage::Helo, "{tls_version}", "TLSv1.3")
            .over_stream(s)
            .unwrap();
        assert_eq!(
            c.negotiated().macros_for(MacroStage::Rcpt),
            Some(&b"{rcpt_addr} {client_addr}"[..])
        );
        let v6: ClientAddress = "[2001:db8::7]:25".parse().unwrap();
        c.connect("client.example.net", &v6).unwrap();
        c.helo("client.example.net").unwrap();
        c.mail("<a@example.org>").unwrap();
        c.rcpt("<b@example.com>").unwrap();
        c.data().unwrap();
        c.header("Message-ID", "<m1@example.org>").unwrap();
        c.eoh().unwrap();
        c.body("b").unwrap();
        c.eom().unwrap();
        c.quit().unwrap();
        t.join().unwrap();
        // No D before DATA, headers, end of headers or body: their lists are empty.
        assert_eq!(
            log.codes(),
            ["O", "DC", "C", "DH", "H", "DM", "M", "DR", "R", "T", "L", "N", "B", "DE", "E", "Q"]
        );
        let c_pkt = log.packets().into_iter().find(|(c, _)| *c == b'C').unwrap();
        assert_eq!(
            c_pkt.1,
            b"client.example.net\x006\x00\x19IPv6:2001:db8::7\0"
        );
        assert_eq!(
            log.macros(b'H')[0],
            [("{tls_version}".to_string(), "TLSv1.3".to_string())]
        );
        assert!(log.macros(b'M')[0]
            .iter()
            .any(|(n, v)| n == "i" && v.starts_with("5A")));
        assert_eq!(
            log.macros(b'R')[0],
            [
                ("{rcpt_addr}".to_string(), "b@example.com".to_string()),
                ("{client_addr}".to_string(), "2001:db8::7".to_string())
            ]
        );
        assert_eq!(
            log.macros(b'E')[0],
            [("{msg_id}".to_string(), "<m1@example.org>".to_string())]
        );
    });
}

#[test]
fn sendmail_aborts_only_inside_a_message() {
    watchdog(LIMIT, || {
        let (s, log, t) =
            spawn_pair(
                Spec::ALL_STAGES,
                |_: &mut FilterSession, ev: &Event<'_>| match ev {
                    Event::Mail(m) if m.bare() == b"bad@x" => Status::Reject,
                    Event::Rcpt(_) => Status::Tempfail,
                    _ => Status::Continue,
                },
            );
        let mut c = Client::builder()
            .profile(Profile::Sendmail)
            .timeouts(short())
            .over_stream(s)
            .unwrap();
        let msg = Message::parse(b"Subject: x\n\nbody\n");
        let t1 = c
            .send_message(&Envelope::new("bad@x").rcpt("r@x"), &msg)
            .unwrap();
        assert!(matches!(
            t1.verdict,
            Verdict::Reject {
                stage: Stage::Mail,
                ..
            }
        ));
        assert!(!t1.aborted);
        let t2 = c
            .send_message(&Envelope::new("ok@x").rcpt("r@x"), &msg)
            .unwrap();
        assert!(matches!(
            t2.verdict,
            Verdict::Tempfail {
                stage: Stage::Rcpt,
                ..
            }
        ));
        assert!(
            t2.aborted,
            "all recipients refused: the milter is still in the message"
        );
        assert!(t2
            .delivered(ApplyRules::Sendmail, &msg, &Envelope::new("x"))
            .is_none());
        c.quit().unwrap();
        t.join().unwrap();
        let codes = log.codes();
        assert_eq!(codes.iter().filter(|c| *c == "A").count(), 1, "{codes:?}");
    });
}

#[test]
fn send_message_stops_at_the_first_final_decision() {
    watchdog(LIMIT, || {
        let (s, log, t) =
            spawn_pair(
                Spec::ALL_STAGES,
                |_: &mut FilterSession, ev: &Event<'_>| match ev {
                    Event::Header(h) if h.is("X-Bad") => {
                        Status::reply(554, Some("5.7.1"), "bad header").unwrap()
                    }
                    _ => Status::Continue,
                },
            );
        let mut c = Client::builder().timeouts(short()).over_stream(s).unwrap();
        let msg = Message::parse(b"A: 1\nX-Bad: yes\nB: 2\n\nbody\n");
        let env = Envelope::new("a@x").rcpt("b@x");
        let tr = c.send_message(&env, &msg).unwrap();
        assert_eq!(
            tr.verdict,
            Verdict::Reject {
                stage: Stage::Header,
                reply: Some(b"554 5.7.1 bad header".to_vec())
            }
        );
        assert_eq!(tr.steps.last().unwrap().index, 1);
        assert!(tr.eom.is_none());
        // The second message on the same session starts at MAIL.
        let ok = Message::parse(b"A: 1\n\nbody\n");
        let tr2 = c.send_message(&env, &ok).unwrap();
        assert_eq!(tr2.verdict, Verdict::Accept);
        assert_eq!(tr2.steps[0].stage, Stage::Mail);
        c.quit().unwrap();
        t.join().unwrap();
        let codes: Vec<String> = log
            .codes()
            .into_iter()
            .filter(|c| !c.starts_with('D'))
            .collect();
        assert_eq!(
            codes,
            [
                "O", "C", "H", "M", "R", "T", "L", "L", "A", "M", "R", "T", "L", "N", "B", "E",
                "A", "A", "Q"
            ]
        );
    });
}

#[test]
fn session_level_reject_applies_to_later_messages() {
    watchdog(LIMIT, || {
        let (s, log, t) =
            spawn_pair(
                Spec::ALL_STAGES,
                |_: &mut FilterSession, ev: &Event<'_>| match ev {
                    Event::Helo(_) => Status::reply(550, Some("5.7.0"), "go away").unwrap(),
                    _ => Status::Continue,
                },
            );
        let mut c = Client::builder().timeouts(short()).over_stream(s).unwrap();
        let msg = Message::parse(b"A: 1\n\nbody\n");
        let env = Envelope::new("a@x").rcpt("b@x");
        let t1 = c.send_message(&env, &msg).unwrap();
        assert!(matches!(
            t1.verdict,
            Verdict::Reject {
                stage: Stage::Helo,
                ..
            }
        ));
        let t2 = c.send_message(&env, &msg).unwrap();
        assert_eq!(t1.verdict, t2.verdict);
        assert!(t2.steps.is_empty());
        drop(c);
        t.join().unwrap();
        assert_eq!(log.codes().last().map(String::as_str), Some("H"));
    });
}

#[test]
fn old_versions_get_no_data_or_unknown() {
    watchdog(LIMIT, || {
        for (version, data, unknown) in [(2, false, false), (3, false, true), (4, true, true)] {
            let (s, _log, t) = spawn_pair(Spec::ALL_STAGES, continue_all);
            let mut c = Client::builder()
                .offer_version(version)
                .timeouts(short())
                .over_stream(s)
                .unwrap();
            assert_eq!(
                c.offer().protocol,
                Profile::offer_for_version(version).unwrap().protocol
            );
            assert_eq!(c.negotiated().version, version);
            c.connect("h", &ClientAddress::Unknown).unwrap();
            c.mail("<a@x>").unwrap();
            c.rcpt("<b@x>").unwrap();
            assert_eq!(c.data().unwrap() != Response::Skipped, data, "v{version}");
            assert_eq!(
                c.unknown("X").unwrap() != Response::Skipped,
                unknown,
                "v{version}"
            );
            c.quit().unwrap();
            t.join().unwrap();
        }
        assert!(Client::builder()
            .offer_version(5)
            .over_stream(std::os::unix::net::UnixStream::pair().unwrap().0)
            .is_err());
    });
}

#[test]
fn quit_new_connection_starts_a_new_session() {
    watchdog(LIMIT, || {
        let (s, log, t) = spawn_pair(Spec::ALL_STAGES, continue_all);
        let mut c = Client::builder().timeouts(short()).over_stream(s).unwrap();
        let msg = Message::parse(b"A: 1\n\nbody\n");
        let env = Envelope::new("a@x").rcpt("b@x");
        c.send_message(&env, &msg).unwrap();
        c.quit_new_connection().unwrap();
        let tr = c.send_message(&env, &msg).unwrap();
        assert_eq!(tr.steps[0].stage, Stage::Connect);
        c.quit().unwrap();
        t.join().unwrap();
        let codes = log.codes();
        assert_eq!(codes.iter().filter(|c| *c == "O").count(), 1);
        assert_eq!(codes.iter().filter(|c| *c == "C").count(), 2);
        assert!(codes.contains(&"K".to_string()));
    });
}

#[test]
fn misuse_is_reported_and_harmless() {
    watchdog(LIMIT, || {
        let (s, _log, t) = spawn_pair(Spec::ALL_STAGES, continue_all);
        let mut c = Client::builder().timeouts(short()).over_stream(s).unwrap();
        c.connect("h", &ClientAddress::Unknown).unwrap();
        let e = c.body(vec![b'x'; 65_536]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Misuse, "{e}");
        let e = c.body(b"").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Misuse);
        // The connection is still fine.
        assert_eq!(c.helo("h").unwrap(), replied(Decision::Continue));
        c.quit().unwrap();
        t.join().unwrap();
        let e = Client::open("tcp:1").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Misuse, "{e}");
    });
}

#[test]
fn protocol_violations_carry_the_offending_bytes() {
    watchdog(LIMIT, || {
        // A modification in answer to HELO.
        let (s, t) = spawn_raw(optneg(0x1ff, 0), packet(b'h', b"X\0y\0"));
        let mut c = Client::builder().timeouts(short()).over_stream(s).unwrap();
        let e = c.helo("h").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        assert_eq!(e.offending_bytes(), Some(&b"hX\0y\0"[..]));
        assert!(e.to_string().contains("helo"), "{e}");
        // The connection is unusable afterwards.
        let again = c.helo("h").unwrap_err();
        assert_eq!(again.kind(), ErrorKind::Misuse);
        assert!(again.to_string().contains("earlier error"), "{again}");
        drop(c);
        t.join().unwrap();

        // A modification that was not negotiated.
        let (s, t) = spawn_raw(
            optneg(0, 0),
            [packet(b'h', b"X\0y\0"), packet(b'c', b"")].concat(),
        );
        let mut c = Client::builder().timeouts(short()).over_stream(s).unwrap();
        c.mail("<a@x>").unwrap_err();
        drop(c);
        t.join().unwrap();

        // A negotiation reply with a version above the offer.
        let mut bad = optneg(0, 0);
        bad[8] = 7;
        let (s, t) = spawn_raw(bad.clone(), vec![]);
        let e = Client::builder()
            .timeouts(short())
            .over_stream(s)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
        assert_eq!(e.offending_bytes().unwrap(), &bad[4..]);
        t.join().unwrap();

        // A length prefix of 0.
        let (s, t) = spawn_raw(optneg(0, 0), vec![0, 0, 0, 0]);
        let mut c = Client::builder().timeouts(short()).over_stream(s).unwrap();
        let e = c.helo("h").unwrap_err();
        assert_eq!(e.offending_bytes(), Some(&[0u8, 0, 0, 0][..]), "{e}");
        drop(c);
        t.join().unwrap();

        // Protocol bits beyond the offer: Sendmail refuses, Postfix does not check.
        let (s, t) = spawn_raw(optneg(0, 0x8000_0000), vec![]);
        let e = Client::builder()
            .profile(Profile::Sendmail)
            .over_stream(s)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        t.join().unwrap();
        let (s, t) = spawn_raw(optneg(0, 0x8000_0000), vec![]);
        let c = Client::builder().over_stream(s).unwrap();
        drop(c);
        t.join().unwrap();
    });
}

#[test]
fn a_reply_to_a_no_reply_stage_is_detected() {
    watchdog(LIMIT, || {
        // Negotiates NR_HELO but answers HELO anyway; the stray `c` is read as the
        // answer to MAIL, and MAIL's own answer is then left over.
        let (s, t) = spawn_raw(
            optneg(0, ProtocolOpts::NR_HELO.bits()),
            [packet(b'c', b""), packet(b'c', b"")].concat(),
        );
        let mut c = Client::builder().timeouts(short()).over_stream(s).unwrap();
        assert_eq!(c.helo("h").unwrap(), Response::NoReply);
        std::thread::sleep(Duration::from_millis(100));
        let e = c.mail("<a@x>").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
        assert_eq!(e.offending_bytes(), Some(&b"c"[..]));
        drop(c);
        t.join().unwrap();
    });
}

#[test]
fn a_silent_milter_times_out_and_a_closed_one_is_reported() {
    watchdog(LIMIT, || {
        let (s, t) = spawn_raw(optneg(0, 0), vec![]);
        let mut c = Client::builder()
            .timeouts(Timeouts::uniform(Duration::from_millis(200)))
            .over_stream(s)
            .unwrap();
        let started = std::time::Instant::now();
        let e = c.helo("h").unwrap_err();
        assert!(matches!(e, ClientError::Timeout { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(c);
        t.join().unwrap();

        let (s, peer) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(peer);
        let e = Client::builder().over_stream(s).unwrap_err();
        assert!(
            matches!(e, ClientError::Disconnected { .. } | ClientError::Io { .. }),
            "{e}"
        );
        assert!(matches!(e.kind(), ErrorKind::Protocol | ErrorKind::Io));
    });
}

#[test]
fn connects_by_socket_spec_over_tcp_and_unix() {
    watchdog(LIMIT, || {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let spec = format!("inet:{}@127.0.0.1", tcp.local_addr().unwrap().port());
        let server = std::thread::spawn(move || {
            let (s, _) = tcp.accept().unwrap();
            harness::serve(s, Spec::ALL_STAGES, continue_all, Default::default());
        });
        let c = Client::builder()
            .timeouts(short())
            .open(spec.as_str())
            .unwrap();
        c.quit().unwrap();
        server.join().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sock");
        let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = unix.accept().unwrap();
            harness::serve(s, Spec::ALL_STAGES, continue_all, Default::default());
        });
        let c = Client::open(format!("unix:{}", path.display())).unwrap();
        c.quit().unwrap();
        server.join().unwrap();

        // Refused: nothing listens on a port that was just released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = Client::open(format!("inet:{port}@127.0.0.1")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
        assert!(e.to_string().starts_with("cannot connect to inet:"), "{e}");
    });
}

#[test]
fn many_threads_each_with_a_connection() {
    watchdog(Duration::from_secs(60), || {
        let threads: Vec<_> = (0..8)
            .map(|i| {
                std::thread::spawn(move || {
                    let spec = Spec {
                        actions: Actions::ADD_HEADER,
                        ..Spec::ALL_STAGES
                    };
                    let (s, _log, t) = spawn_pair(spec, modifying_milter_all);
                    let mut c = Client::builder().timeouts(short()).over_stream(s).unwrap();
                    let msg = Message::parse(b"Subject: load\r\n\r\nbody\r\n");
                    let env = Envelope::new(&format!("t{i}@x")).rcpt("r@x");
                    for _ in 0..50 {
                        let tr = c.send_message(&env, &msg).unwrap();
                        assert!(tr.eom.unwrap().has_added_header("X-Added", "yes"));
                    }
                    c.quit().unwrap();
                    t.join().unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
}

fn modifying_milter_all(s: &mut FilterSession, ev: &Event<'_>) -> Status {
    if let Event::Eom(_) = ev {
        s.add_header(b"X-Added", b"yes").unwrap();
    }
    Status::Continue
}

#[test]
fn header_leading_space_changes_what_is_sent_and_applied() {
    watchdog(LIMIT, || {
        let spec = Spec {
            options: ProtocolOpts::HEADER_LEADING_SPACE,
            actions: Actions::ADD_HEADER,
            ..Spec::ALL_STAGES
        };
        let (s, log, t) = spawn_pair(spec, |s: &mut FilterSession, ev: &Event<'_>| {
            if let Event::Eom(_) = ev {
                s.add_header(b"X-Raw", b"\tverbatim").unwrap();
            }
            Status::Continue
        });
        let mut c = Client::builder().timeouts(short()).over_stream(s).unwrap();
        let msg = Message::parse(b"Subject:  two\r\nX-F: a\r\n b\r\n\r\n");
        let env = Envelope::new("a@x").rcpt("b@x");
        let tr = c.send_message(&env, &msg).unwrap();
        let out = tr.delivered(ApplyRules::Postfix, &msg, &env).unwrap();
        assert_eq!(
            out.message.to_bytes(),
            b"Subject:  two\r\nX-F: a\r\n b\r\nX-Raw:\tverbatim\r\n\r\n"
        );
        c.quit().unwrap();
        t.join().unwrap();
        let headers: Vec<Vec<u8>> = log
            .packets()
            .into_iter()
            .filter(|(c, _)| *c == b'L')
            .map(|(_, p)| p)
            .collect();
        assert_eq!(
            headers,
            [b"Subject\0  two\0".to_vec(), b"X-F\0 a\n b\0".to_vec()]
        );
    });
}

#[test]
fn offer_can_be_anything() {
    watchdog(LIMIT, || {
        let (s, _log, t) = spawn_pair(
            Spec {
                optional_actions: Actions::all(),
                ..Spec::ALL_STAGES
            },
            continue_all,
        );
        let offer = OptNeg {
            version: 6,
            actions: Actions::ADD_HEADER | Actions::QUARANTINE,
            protocol: ProtocolOpts::V6,
        };
        let c = Client::builder().offer(offer).over_stream(s).unwrap();
        assert_eq!(
            c.negotiated().actions,
            Actions::ADD_HEADER | Actions::QUARANTINE
        );
        c.quit().unwrap();
        t.join().unwrap();
    });
}
