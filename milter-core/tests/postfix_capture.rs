//! Byte streams captured between a real Postfix 3.7 and the libmilter-based
//! conformance milter (see `tests/data/README.md`), replayed through both halves
//! of milter-core:
//!
//! - every packet decodes and re-encodes byte for byte;
//! - the MTA stream fed to a `FilterSession` gives the expected events, and
//!   answering them with libmilter's decisions and modifications reproduces the
//!   milter stream byte for byte;
//! - a `ClientSession` sending the same commands writes Postfix's bytes exactly and
//!   classifies every reply of the milter stream.

// Test code: a failed unwrap is a test failure with its location, which is
// what we want here (clippy.toml covers #[test] functions, not helpers).
#![allow(clippy::unwrap_used)]

mod common;

use common::{describe_event, frame, raw_frames, run_filter, Handler};
use milter_core::client::{ClientSession, Decision, Received, Sent};
use milter_core::filter::{Event, FilterSession};
use milter_core::{
    Actions, Command, MacroStage, Modification, Reply, SmtpReply, Spec, Stages, Status,
};
use std::collections::VecDeque;

/// One captured conversation: what Postfix wrote and what the milter wrote.
struct Capture {
    name: &'static str,
    mta: &'static [u8],
    milter: &'static [u8],
    version: u32,
}

const V6: Capture = Capture {
    name: "milter_protocol = 6",
    mta: include_bytes!("data/postfix-3.7-mta-to-milter.bin"),
    milter: include_bytes!("data/postfix-3.7-milter-to-mta.bin"),
    version: 6,
};

const V4: Capture = Capture {
    name: "milter_protocol = 4",
    mta: include_bytes!("data/postfix-3.7-v4-mta-to-milter.bin"),
    milter: include_bytes!("data/postfix-3.7-v4-milter-to-mta.bin"),
    version: 4,
};

const V2: Capture = Capture {
    name: "milter_protocol = 2",
    mta: include_bytes!("data/postfix-3.7-v2-mta-to-milter.bin"),
    milter: include_bytes!("data/postfix-3.7-v2-milter-to-mta.bin"),
    version: 2,
};

const ALL: [&Capture; 3] = [&V6, &V4, &V2];

/// What the conformance milter asks for (docs/CONFORMANCE.md, "Negotiation"): every
/// stage handled, no protocol flag, all nine actions, four symbol lists.
fn conformance_spec() -> Spec {
    Spec {
        handled: Stages::all(),
        optional_actions: Actions::all(),
        ..Spec::NONE
    }
    .with_macros(MacroStage::Connect, "{j} {daemon_name} {client_addr}")
    .with_macros(MacroStage::Mail, "{i} {auth_authen} {mail_addr}")
    .with_macros(MacroStage::Rcpt, "{rcpt_addr}")
    .with_macros(MacroStage::Eom, "{i} {msg_id}")
}

/// The body of the second message, as the capture script generated it.
fn second_body() -> Vec<u8> {
    let mut body = Vec::new();
    let mut n = 0;
    while body.len() < 70_000 {
        body.extend_from_slice(
            format!("line {n:05} café € 0123456789abcdefghijklmnopqrstuvwxyz\r\n").as_bytes(),
        );
        n += 1;
    }
    body
}

#[test]
fn every_frame_decodes_and_reencodes() {
    for c in ALL {
        let commands = raw_frames(c.mta);
        for raw in &commands {
            let cmd = Command::decode(frame(raw)).unwrap();
            assert!(
                !matches!(cmd, Command::Unrecognized { .. }),
                "{}: {cmd:?}",
                c.name
            );
            let mut again = Vec::new();
            cmd.encode(&mut again);
            assert_eq!(&again, raw, "{}: re-encoding {cmd:?}", c.name);
        }
        let replies = raw_frames(c.milter);
        for raw in &replies {
            let reply = Reply::decode(frame(raw)).unwrap();
            assert!(
                !matches!(reply, Reply::Unrecognized { .. }),
                "{}: {reply:?}",
                c.name
            );
            let mut again = Vec::new();
            reply.encode(&mut again);
            assert_eq!(&again, raw, "{}: re-encoding {reply:?}", c.name);
        }
        // The sizes the README promises: a full 65535-byte body chunk.
        assert!(
            commands
                .iter()
                .any(|r| r[4] == b'B' && r.len() == 5 + 65535),
            "{}",
            c.name
        );
        // Postfix offers its per-version masks.
        let Command::OptNeg(offer) = Command::decode(frame(commands[0])).unwrap() else {
            panic!("first packet is not O")
        };
        let mask = match c.version {
            6 => 0x1F_FFFF,
            4 => 0x37F,
            _ => 0x7F,
        };
        assert_eq!(
            (offer.version, offer.actions.bits(), offer.protocol.bits()),
            (c.version, 0x1FF, mask),
            "{}",
            c.name
        );
    }
}

/// The v6 events, with body chunks shown by their size only.
fn expected_v6_events() -> Vec<String> {
    [
        "negotiate v6 actions=0x1ff protocol=0x1fffff",
        "connect [127.0.0.1] 127.0.0.1:40566",
        "helo client.example.test",
        "new-message",
        "mail <change-from@example.test> BODY=8BITMIME SIZE=400",
        "rcpt <rcpt1@example.test>",
        "rcpt <reject-rcpt@example.test>",
        "rcpt <REMOVED@Example.TEST> NOTIFY=NEVER",
        "data",
        "header From: Change From <change-from@example.test>",
        "header To: rcpt1@example.test, REMOVED@Example.TEST",
        "header Subject: REPLACE-BODY QUARANTINE first message",
        "header Message-ID: <capture-1@example.test>",
        "header Date: Mon, 01 Dec 2025 12:00:00 +0000",
        // A folded header: LF + the original white space, no CR.
        "header X-Folded: first line\\n\\tsecond line\\n  third line",
        // Exactly one space removed after the colon.
        "header X-Two-Spaces:  two leading spaces",
        "header X-Empty: ",
        "header X-Delete-Me: first",
        "header X-Delete-Me: second",
        "eoh",
        "body 45 bytes",
        "eom",
        // Postfix sends only the verb of an unknown command.
        "unknown XFOO",
        "new-message",
        "mail <sender2@example.test> BODY=8BITMIME",
        "rcpt <rcpt2@example.test>",
        "data",
        "header From: <sender2@example.test>",
        "header To: <rcpt2@example.test>",
        "header Subject: second message, multi-chunk 8-bit body",
        "header Message-ID: <capture-2@example.test>",
        "header Date: Mon, 01 Dec 2025 12:00:01 +0000",
        "header MIME-Version: 1.0",
        "header Content-Type: text/plain; charset=utf-8",
        "header Content-Transfer-Encoding: 8bit",
        "header X-Long-Fold: alpha\\n beta\\n gamma",
        "eoh",
        "body 65535 bytes",
        "body 4498 bytes",
        "eom",
        // The abandoned transaction: MAIL, RCPT, RSET.
        "new-message",
        "mail <sender3@example.test>",
        "rcpt <rcpt3@example.test>",
        "abort",
        // QUIT; the close handler runs once, not again at end of input.
        "close",
        "end-of-input",
    ]
    .map(String::from)
    .to_vec()
}

/// Drops the content hash from body events.
fn without_hashes(events: &[String]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            if e.starts_with("body ") {
                e.split(' ').take(3).collect::<Vec<_>>().join(" ")
            } else {
                e.clone()
            }
        })
        .collect()
}

#[test]
fn filter_session_sees_the_postfix_conversation() {
    let mut notes = Vec::new();
    let mut bodies: Vec<Vec<u8>> = vec![Vec::new()];
    let mut handler = |event: &Event<'_>, s: &mut FilterSession| {
        let m = s.macros();
        let get = |name| m.get(name).map(|v| String::from_utf8_lossy(v).into_owned());
        match event {
            Event::Connect(_) => notes.push(format!("connect j={:?}", get("j"))),
            Event::Mail(_) => notes.push(format!(
                "mail i={:?} mail_addr={:?}",
                get("i"),
                get("{mail_addr}")
            )),
            Event::Rcpt(_) => notes.push(format!("rcpt rcpt_addr={:?}", get("rcpt_addr"))),
            Event::Header(h) if h.is("Subject") => {
                notes.push(format!("subject i={:?}", get("{i}")))
            }
            Event::Body(b) => bodies.last_mut().unwrap().extend_from_slice(b),
            Event::Eom(_) => {
                notes.push(format!(
                    "eom i={:?} j={:?} mail_addr={:?}",
                    get("i"),
                    get("j"),
                    get("mail_addr")
                ));
                bodies.push(Vec::new());
            }
            _ => {}
        }
        Status::Continue
    };
    let t = run_filter([V6.mta], &conformance_spec(), &mut handler);
    assert_eq!(t.error, None);
    assert_eq!(without_hashes(&t.events), expected_v6_events());
    assert!(t.adjustments.is_empty(), "{:?}", t.adjustments);

    // Bodies arrive dot-unstuffed, in chunks that concatenate to the original.
    assert_eq!(
        bodies[0],
        b"Hello,\r\n.a line that starts with a dot\r\nbye\r\n"
    );
    assert_eq!(bodies[1], second_body());

    // Macro scoping: the queue id is not known at MAIL and never leaks into the
    // next message; connect macros last the whole session.
    let queue_ids: Vec<String> = raw_frames(V6.mta)
        .iter()
        .filter_map(|raw| match Command::decode(frame(raw)).unwrap() {
            Command::Macro(d) if d.stage == b'T' => {
                Some(String::from_utf8(d.pairs().next().unwrap().1.to_vec()).unwrap())
            }
            _ => None,
        })
        .collect();
    assert_eq!(queue_ids.len(), 2);
    let q = |i: usize| format!("{:?}", Some(&queue_ids[i]));
    assert_eq!(
        notes,
        [
            r#"connect j=Some("mx.example.test")"#.to_string(),
            r#"mail i=None mail_addr=Some("change-from@example.test")"#.into(),
            r#"rcpt rcpt_addr=Some("rcpt1@example.test")"#.into(),
            r#"rcpt rcpt_addr=Some("reject-rcpt@example.test")"#.into(),
            r#"rcpt rcpt_addr=Some("removed@example.test")"#.into(),
            format!("subject i={}", q(0)),
            format!(
                r#"eom i={} j=Some("mx.example.test") mail_addr=Some("change-from@example.test")"#,
                q(0)
            ),
            r#"mail i=None mail_addr=Some("sender2@example.test")"#.into(),
            r#"rcpt rcpt_addr=Some("rcpt2@example.test")"#.into(),
            format!("subject i={}", q(1)),
            format!(
                r#"eom i={} j=Some("mx.example.test") mail_addr=Some("sender2@example.test")"#,
                q(1)
            ),
            r#"mail i=None mail_addr=Some("sender3@example.test")"#.into(),
            r#"rcpt rcpt_addr=Some("rcpt3@example.test")"#.into(),
        ]
    );
}

#[test]
fn answering_continue_gives_a_valid_conversation() {
    for c in ALL {
        let t = run_filter([c.mta], &conformance_spec(), &mut common::always_continue);
        assert_eq!(t.error, None, "{}", c.name);
        let ours = raw_frames(&t.output);
        let theirs = raw_frames(c.milter);
        // The negotiation reply is libmilter's, byte for byte.
        assert_eq!(ours[0], theirs[0], "{}: O reply", c.name);
        // One `c` per command that owes a reply, nothing else.
        let owed = raw_frames(c.mta)
            .iter()
            .filter(|r| b"CHMRTLNBEU".contains(&r[4]))
            .count();
        assert_eq!(ours.len() - 1, owed, "{}", c.name);
        assert!(ours[1..].iter().all(|r| *r == b"\0\0\0\x01c"), "{}", c.name);
        // And the MTA side accepts that conversation.
        let replay = replay_client(c.mta, &t.output);
        assert!(replay.modifications.iter().all(Vec::is_empty), "{}", c.name);
        assert!(
            replay.decisions.iter().all(|d| *d == Decision::Continue),
            "{}",
            c.name
        );
    }
}

#[test]
fn older_protocol_versions_lack_data_and_unknown() {
    let names = |c: &Capture| {
        let t = run_filter([c.mta], &conformance_spec(), &mut common::always_continue);
        assert_eq!(t.error, None, "{}", c.name);
        without_hashes(&t.events)
            .into_iter()
            .map(|e| e.split(' ').next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let v6 = names(&V6);
    let v4 = names(&V4);
    let v2 = names(&V2);
    // Version 4 has DATA and unknown commands: the same events as version 6.
    assert_eq!(v4, v6);
    // Version 2: no `T` and no `U`, everything else the same.
    let without: Vec<String> = v6
        .iter()
        .filter(|e| *e != "data" && *e != "unknown")
        .cloned()
        .collect();
    assert_eq!(v2, without);
}

/// Answers each event the way libmilter did in the capture: replays the captured
/// replies (modifications through the session's checked calls) up to the
/// decision.
struct Replayer {
    replies: VecDeque<Reply>,
}

impl Replayer {
    fn new(milter_stream: &[u8]) -> Replayer {
        let mut replies: VecDeque<Reply> = raw_frames(milter_stream)
            .iter()
            .map(|raw| Reply::decode(frame(raw)).unwrap())
            .collect();
        assert!(matches!(replies.pop_front(), Some(Reply::OptNeg(_))));
        Replayer { replies }
    }
}

/// The `SmtpReply` for a single-line text `ddd x.y.z text`.
fn smtp_reply(text: &[u8]) -> SmtpReply {
    let text = std::str::from_utf8(text).unwrap();
    let (code, rest) = text.split_once(' ').unwrap();
    let (enhanced, msg) = rest.split_once(' ').unwrap();
    let reply = SmtpReply::new(code.parse().unwrap(), Some(enhanced), msg).unwrap();
    assert_eq!(reply.wire_text(), text.as_bytes());
    reply
}

impl Handler for Replayer {
    fn answer(&mut self, event: &Event<'_>, s: &mut FilterSession) -> Status {
        loop {
            let reply = self
                .replies
                .pop_front()
                .unwrap_or_else(|| panic!("no captured reply left for {}", describe_event(event)));
            match reply {
                Reply::Continue => return Status::Continue,
                Reply::Accept => return Status::Accept,
                Reply::Reject => return Status::Reject,
                Reply::Tempfail => return Status::Tempfail,
                Reply::Discard => return Status::Discard,
                Reply::ReplyCode(t) => return Status::Reply(smtp_reply(&t)),
                Reply::Progress => s.progress().unwrap(),
                Reply::AddHeader { name, value } => s.add_header(&name, &value).unwrap(),
                Reply::InsertHeader { index, name, value } => {
                    s.insert_header(index, &name, &value).unwrap()
                }
                Reply::ChangeHeader { index, name, value } => {
                    s.change_header(&name, index, &value).unwrap()
                }
                Reply::AddRcpt(r) => s.add_rcpt(&r).unwrap(),
                Reply::AddRcptWithArgs { rcpt, args } => {
                    s.add_rcpt_with_args(&rcpt, args.as_deref()).unwrap()
                }
                Reply::DeleteRcpt(r) => s.delete_rcpt(&r).unwrap(),
                Reply::ChangeFrom { from, args } => s.change_from(&from, args.as_deref()).unwrap(),
                Reply::ReplaceBody(b) => s.replace_body(&b).unwrap(),
                Reply::Quarantine(q) => s.quarantine(&q).unwrap(),
                other => panic!("unexpected captured reply {other:?}"),
            }
        }
    }
}

#[test]
fn filter_session_reproduces_libmilters_bytes() {
    for c in ALL {
        let mut replayer = Replayer::new(c.milter);
        let t = run_filter([c.mta], &conformance_spec(), &mut replayer);
        assert_eq!(t.error, None, "{}", c.name);
        assert!(replayer.replies.is_empty(), "{}", c.name);
        assert!(t.adjustments.is_empty(), "{}", c.name);
        assert_eq!(
            t.output, c.milter,
            "{}: output differs from libmilter",
            c.name
        );
    }
}

/// What a `ClientSession` replaying an MTA stream against a milter stream got.
#[derive(Debug)]
struct ClientReplay {
    /// The decision for every command that owed a reply.
    decisions: Vec<Decision>,
    /// Modifications received, one list per end of message.
    modifications: Vec<Vec<Modification>>,
    /// Progress packets received.
    progress: usize,
}

/// Sends every command of `mta` through a `ClientSession` (checking it writes the
/// same bytes) and classifies the milter's `replies`.
fn replay_client(mta: &[u8], replies: &[u8]) -> ClientReplay {
    let commands = raw_frames(mta);
    let mut replies = raw_frames(replies).into_iter();
    let Command::OptNeg(offer) = Command::decode(frame(commands[0])).unwrap() else {
        panic!("first packet is not O")
    };
    let mut client = ClientSession::new(offer);
    let mut written = client.output().to_vec();
    client.clear_output();
    client
        .receive_negotiation(frame(replies.next().unwrap()))
        .unwrap();
    let mut r = ClientReplay {
        decisions: Vec::new(),
        modifications: Vec::new(),
        progress: 0,
    };
    for raw in &commands[1..] {
        let cmd = Command::decode(frame(raw)).unwrap();
        if let Command::Macro(d) = cmd {
            let pairs: Vec<(&[u8], &[u8])> = d.pairs().collect();
            client.send_macros(d.stage, &pairs).unwrap();
        } else {
            let sent = client.send(&cmd).unwrap();
            let expect = if matches!(cmd, Command::Abort | Command::Quit) {
                Sent::NoReply
            } else {
                Sent::AwaitReply
            };
            assert_eq!(sent, expect, "{cmd:?}");
            if sent == Sent::AwaitReply {
                let mut mods = Vec::new();
                loop {
                    let f = replies.next().expect("the milter stream ends early");
                    match client.receive(frame(f)).unwrap() {
                        Received::Progress => r.progress += 1,
                        Received::Modification(m) => mods.push(m),
                        Received::Decision(d) => {
                            r.decisions.push(d);
                            break;
                        }
                    }
                }
                if matches!(cmd, Command::Eom(_)) {
                    r.modifications.push(mods);
                } else {
                    assert!(mods.is_empty());
                }
            }
        }
        written.extend_from_slice(client.output());
        client.clear_output();
    }
    assert_eq!(replies.next(), None, "replies left over");
    assert!(written == mta, "the client did not write Postfix's bytes");
    r
}

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

#[test]
fn client_session_replays_postfix_and_classifies_every_reply() {
    for c in ALL {
        let r = replay_client(c.mta, c.milter);
        assert_eq!(r.progress, 2, "{}", c.name);
        assert_eq!(r.modifications.len(), 2, "{}", c.name);
        let rcpt_reject = Decision::Reply(v("550 5.1.1 rcpt rejected by conformance milter"));
        let unknown_reject =
            Decision::Reply(v("500 5.5.1 command not recognised by conformance milter"));
        let finals: Vec<&Decision> = r
            .decisions
            .iter()
            .filter(|d| **d != Decision::Continue)
            .collect();
        if c.version >= 3 {
            assert_eq!(finals, [&rcpt_reject, &unknown_reject], "{}", c.name);
        } else {
            assert_eq!(finals, [&rcpt_reject], "{}", c.name);
        }
    }
    // What libmilter sent at the end of the first message, in order.
    let r = replay_client(V6.mta, V6.milter);
    let queue_id = match &r.modifications[0][4] {
        Modification::AddHeader { value, .. } => value.clone(),
        other => panic!("{other:?}"),
    };
    let add = |name: &str, value: &[u8]| Modification::AddHeader {
        name: v(name),
        value: value.to_vec(),
    };
    assert_eq!(
        r.modifications[0],
        [
            add("X-Conformance", b"seen"),
            Modification::InsertHeader {
                index: 0,
                name: v("X-Conformance-First"),
                value: v("1"),
            },
            Modification::ChangeHeader {
                index: 1,
                name: v("Subject"),
                value: v("[filtered] REPLACE-BODY QUARANTINE first message"),
            },
            Modification::ChangeHeader {
                index: 1,
                name: v("X-Delete-Me"),
                value: v(""),
            },
            add("X-Conformance-Queue-Id", &queue_id),
            add("X-Conformance-Body-Bytes", b"45"),
            add("X-Conformance-Rcpts", b"2"),
            add("X-Conformance-Headers", b"10"),
            Modification::AddRcpt(v("<added@example.test>")),
            Modification::AddRcptWithArgs {
                rcpt: v("<added-args@example.test>"),
                args: Some(v("NOTIFY=NEVER")),
            },
            Modification::DeleteRcpt(v("<REMOVED@Example.TEST>")),
            Modification::ChangeFrom {
                from: v("<changed-from@example.test>"),
                args: None,
            },
            Modification::ReplaceBody(v("REPLACED BODY\r\n")),
            Modification::Quarantine(v("conformance quarantine")),
        ]
    );
    assert_eq!(r.modifications[1].len(), 9);
    assert_eq!(
        r.modifications[1][4],
        add("X-Conformance-Body-Bytes", b"70033")
    );
}
