//! `ClientSession` ↔ `FilterSession` through memory: whole conversations, every
//! stage skipped and not, every no-reply flag, aborts, `K`, macros across
//! messages, modifications at end of message, skip, and the negotiation outcomes
//! observed with libmilter (the same offers must get the same replies).

// Test code: a failed unwrap is a test failure with its location, which is
// what we want here (clippy.toml covers #[test] functions, not helpers).
#![allow(clippy::unwrap_used)]

mod common;

use common::{always_continue, frame, pkt, run_filter, Exchange, Pair};
use milter_core::client::{ClientSession, Decision, Received, Sent, Strictness};
use milter_core::filter::{Adjustment, Event, FilterSession, Position};
use milter_core::{
    ActionError, Actions, ClientError, Command, Connect, EnvelopeAddr, Header, MacroStage,
    Modification, NegotiateError, OptNeg, ProtocolOpts, SessionError, Spec, Stage, Stages, Status,
};

// ---- the pieces of a conversation ----

fn connect() -> Command<'static> {
    Command::Connect(Connect::decode(b"client.example.test\x004\x00\x19192.0.2.7\x00").unwrap())
}

const HELO: Command<'static> = Command::Helo(b"client.example.test");

fn mail(addr: &'static [u8]) -> Command<'static> {
    Command::Mail(EnvelopeAddr::new(addr))
}

fn rcpt(addr: &'static [u8]) -> Command<'static> {
    Command::Rcpt(EnvelopeAddr::new(addr))
}

fn header(name: &'static [u8], value: &'static [u8]) -> Command<'static> {
    Command::Header(Header { name, value })
}

const EOM: Command<'static> = Command::Eom(b"");

fn offer(version: u32, actions: u32, protocol: u32) -> OptNeg {
    OptNeg {
        version,
        actions: Actions::from_bits_retain(actions),
        protocol: ProtocolOpts::from_bits_retain(protocol),
    }
}

/// A handler that answers `status` at `stage` and continue elsewhere.
fn answer_at(stage: Stage, status: Status) -> impl FnMut(&Event<'_>, &mut FilterSession) -> Status {
    move |e: &Event<'_>, _: &mut FilterSession| {
        if e.stage() == Some(stage) {
            status.clone()
        } else {
            Status::Continue
        }
    }
}

/// The command for a stage in a one-recipient message.
fn command_for(stage: Stage) -> Command<'static> {
    match stage {
        Stage::Connect => connect(),
        Stage::Helo => HELO,
        Stage::Mail => mail(b"<from@example.test>"),
        Stage::Rcpt => rcpt(b"<to@example.test>"),
        Stage::Data => Command::Data,
        Stage::Header => header(b"Subject", b"hello"),
        Stage::Eoh => Command::Eoh,
        Stage::Body => Command::Body(b"body\r\n"),
        Stage::Eom => EOM,
        Stage::Unknown => Command::Unknown(b"XFOO"),
    }
}

/// The event summary `common::describe_event` gives for `command_for(stage)`.
fn event_for(stage: Stage) -> String {
    let s = match stage {
        Stage::Connect => "connect client.example.test 192.0.2.7:25",
        Stage::Helo => "helo client.example.test",
        Stage::Mail => "mail <from@example.test>",
        Stage::Rcpt => "rcpt <to@example.test>",
        Stage::Data => "data",
        Stage::Header => "header Subject: hello",
        Stage::Eoh => "eoh",
        Stage::Body => return body_event(b"body\r\n"),
        Stage::Eom => "eom",
        Stage::Unknown => "unknown XFOO",
    };
    s.to_string()
}

fn body_event(chunk: &[u8]) -> String {
    format!("body {} bytes {:016x}", chunk.len(), common::fnv(chunk))
}

/// One message with every message stage, Postfix style (an `A` after it).
fn whole_message<H: common::Handler>(p: &mut Pair<H>) -> Vec<Exchange> {
    let mut out = Vec::new();
    for stage in [
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
        Stage::Header,
        Stage::Eoh,
        Stage::Body,
        Stage::Eom,
    ] {
        out.push(p.send(&command_for(stage)));
    }
    out.push(p.send(&Command::Abort));
    out
}

fn all_continue(exchanges: &[Exchange]) -> bool {
    exchanges
        .iter()
        .all(|e| e.decision.is_none() || e.decision == Some(Decision::Continue))
}

// ---- whole conversations ----

#[test]
fn several_messages_per_connection() {
    let mut p = Pair::new(OptNeg::POSTFIX_3, Spec::ALL_STAGES, always_continue);
    assert_eq!(
        p.take_events(),
        ["negotiate v6 actions=0x1ff protocol=0x1fffff"]
    );
    assert_eq!(p.decide(&connect()), Decision::Continue);
    assert_eq!(p.decide(&HELO), Decision::Continue);
    p.take_events();
    for round in 0..3 {
        let ex = whole_message(&mut p);
        assert!(all_continue(&ex), "round {round}: {ex:?}");
        // The A after a completed message gets no reply and no event.
        assert_eq!(ex.last().unwrap().sent, Sent::NoReply);
        assert_eq!(
            p.take_events(),
            [
                "new-message".to_string(),
                event_for(Stage::Mail),
                event_for(Stage::Rcpt),
                event_for(Stage::Data),
                event_for(Stage::Header),
                event_for(Stage::Eoh),
                event_for(Stage::Body),
                event_for(Stage::Eom),
            ],
            "round {round}"
        );
        assert_eq!(p.milter.position(), Position::Session);
    }
    // Many recipients, headers and chunks in one message.
    p.send(&mail(b"<a@example.test>"));
    for _ in 0..5 {
        assert_eq!(p.decide(&rcpt(b"<r@example.test>")), Decision::Continue);
    }
    p.send(&Command::Data);
    for _ in 0..20 {
        p.send(&header(b"Received", b"from somewhere"));
    }
    p.send(&Command::Eoh);
    let chunk = vec![b'x'; 65535];
    for _ in 0..3 {
        assert_eq!(p.decide(&Command::Body(&chunk)), Decision::Continue);
    }
    assert_eq!(p.decide(&EOM), Decision::Continue);
    p.send(&Command::Quit);
    p.eof();
    let events = p.take_events();
    assert_eq!(events.len(), 1 + 1 + 5 + 1 + 20 + 1 + 3 + 1 + 1);
    assert_eq!(events.last().unwrap(), "close");
}

#[test]
fn abort_mid_message_at_every_stage() {
    let stages = [
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
        Stage::Header,
        Stage::Eoh,
        Stage::Body,
    ];
    for (i, &last) in stages.iter().enumerate() {
        let mut p = Pair::new(OptNeg::POSTFIX_3, Spec::ALL_STAGES, always_continue);
        p.send(&connect());
        p.send(&HELO);
        for &s in &stages[..=i] {
            p.send(&command_for(s));
        }
        assert!(p.milter.in_message());
        p.take_events();
        // RSET: the abort handler is due once.
        assert_eq!(p.send(&Command::Abort).sent, Sent::NoReply);
        assert_eq!(p.take_events(), ["abort"], "abort after {last}");
        assert!(!p.milter.in_message());
        // A second A (Postfix sometimes sends two) is ignored.
        p.send(&Command::Abort);
        assert!(p.take_events().is_empty());
        // A new message works normally.
        let ex = whole_message(&mut p);
        assert!(all_continue(&ex));
        assert_eq!(p.take_events().len(), 8);
    }
}

#[test]
fn abort_outside_a_message_is_ignored() {
    let mut p = Pair::new(OptNeg::POSTFIX_3, Spec::ALL_STAGES, always_continue);
    // Before connect, after connect, after HELO, after end of message, twice.
    p.send(&Command::Abort);
    p.send(&connect());
    p.send(&Command::Abort);
    p.send(&HELO);
    p.send(&Command::Abort);
    whole_message(&mut p);
    p.send(&Command::Abort);
    p.send(&Command::Abort);
    let events = p.take_events();
    assert!(!events.iter().any(|e| e == "abort"), "{events:?}");
    assert!(p.milter_wrote.len() > 5);
}

#[test]
fn a_new_mail_helo_quit_or_eof_inside_a_message_aborts_it_first() {
    // MAIL without A.
    let mut p = Pair::new(OptNeg::POSTFIX_3, Spec::ALL_STAGES, always_continue);
    p.send(&connect());
    p.send(&mail(b"<one@example.test>"));
    p.send(&rcpt(b"<r@example.test>"));
    p.take_events();
    assert_eq!(p.decide(&mail(b"<two@example.test>")), Decision::Continue);
    assert_eq!(
        p.take_events(),
        ["implicit-abort", "new-message", "mail <two@example.test>"]
    );
    // HELO inside a message.
    p.send(&rcpt(b"<r@example.test>"));
    p.send(&HELO);
    assert_eq!(
        p.take_events(),
        [
            "rcpt <r@example.test>",
            "implicit-abort",
            "helo client.example.test"
        ]
    );
    // QUIT inside a message.
    p.send(&mail(b"<three@example.test>"));
    p.send(&Command::Data);
    p.take_events();
    p.send(&Command::Quit);
    p.eof();
    assert_eq!(p.take_events(), ["implicit-abort", "close"]);

    // End of input inside a message.
    let mut p = Pair::new(OptNeg::POSTFIX_3, Spec::ALL_STAGES, always_continue);
    p.send(&connect());
    p.send(&mail(b"<one@example.test>"));
    p.take_events();
    p.eof();
    assert_eq!(p.take_events(), ["implicit-abort", "close"]);
    assert_eq!(p.milter.end_of_input(), None, "closed once");
}

#[test]
fn close_is_called_once_per_session() {
    // Only O was ever received.
    let mut p = Pair::new(OptNeg::POSTFIX_3, Spec::ALL_STAGES, always_continue);
    p.take_events();
    p.eof();
    assert_eq!(p.take_events(), ["close"]);
    assert_eq!(p.milter.end_of_input(), None);
    // After a connect-stage reject, Postfix closes without Q.
    let mut p = Pair::new(
        OptNeg::POSTFIX_3,
        Spec::ALL_STAGES,
        answer_at(Stage::Connect, Status::Reject),
    );
    assert_eq!(p.decide(&connect()), Decision::Reject);
    p.eof();
    assert_eq!(p.take_events().last().unwrap(), "close");
    assert_eq!(p.milter.end_of_input(), None);
}

// ---- skipping stages ----

/// The stages that have a skip bit (all but end of message).
const SKIPPABLE: [Stage; 9] = [
    Stage::Connect,
    Stage::Helo,
    Stage::Mail,
    Stage::Rcpt,
    Stage::Data,
    Stage::Header,
    Stage::Eoh,
    Stage::Body,
    Stage::Unknown,
];

/// Runs connect, helo, two whole messages with an unknown command after each,
/// quit; for every command checks whether the MTA side sent it and whether the
/// milter saw it.
fn check_stage_subset(offer: OptNeg, handled: Stages) {
    let spec = Spec {
        handled,
        ..Spec::NONE
    };
    let mut p = Pair::new(offer, spec, always_continue);
    let n = p.milter.negotiated().unwrap().clone();
    let client_skips = p.mta.negotiated().unwrap().skipped;
    p.take_events();
    let mut script = vec![Stage::Connect, Stage::Helo];
    for _ in 0..2 {
        script.extend([
            Stage::Mail,
            Stage::Rcpt,
            Stage::Data,
            Stage::Header,
            Stage::Eoh,
            Stage::Body,
            Stage::Eom,
            Stage::Unknown,
        ]);
    }
    let mut expected_events = Vec::new();
    let mut message_started = false;
    for stage in script {
        let mta_sends = n.mta_sends(stage);
        assert_eq!(
            client_skips.has(stage),
            !mta_sends && stage != Stage::Eom,
            "{offer:?} {handled:?}: both sides agree on {stage}"
        );
        let ex = p.send(&command_for(stage));
        if !mta_sends {
            assert_eq!(ex.sent, Sent::Skipped, "{handled:?} {stage}");
            continue;
        }
        assert_eq!(ex.sent, Sent::AwaitReply, "{handled:?} {stage}");
        assert_eq!(ex.decision, Some(Decision::Continue), "{handled:?} {stage}");
        if stage.is_message_stage() && !message_started {
            expected_events.push("new-message".to_string());
            message_started = true;
        }
        if stage == Stage::Eom {
            message_started = false;
        }
        if handled.has(stage) || stage == Stage::Eom {
            expected_events.push(event_for(stage));
        }
    }
    p.send(&Command::Quit);
    expected_events.push("close".into());
    assert_eq!(p.take_events(), expected_events, "{offer:?} {handled:?}");
}

#[test]
fn every_subset_of_stages_is_skipped_or_sent() {
    for offered in [
        OptNeg::POSTFIX_3,
        // Postfix with milter_protocol = 4 and = 2.
        offer(4, 0x1FF, 0x37F),
        offer(2, 0x1FF, 0x7F),
    ] {
        for mask in 0u32..(1 << SKIPPABLE.len()) {
            let mut handled = Stages::empty();
            for (i, s) in SKIPPABLE.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    handled |= s.set();
                }
            }
            check_stage_subset(offered, handled);
        }
    }
}

#[test]
fn skip_bits_follow_the_handled_stages() {
    for stage in SKIPPABLE {
        let spec = Spec {
            handled: Stages::all().difference(stage.set()),
            ..Spec::NONE
        };
        let p = Pair::new(OptNeg::POSTFIX_3, spec, always_continue);
        let n = p.milter.negotiated().unwrap();
        assert_eq!(n.protocol, stage.skip_flag().unwrap(), "{stage}");
        assert_eq!(n.skipped, stage.set());
        assert_eq!(p.mta.negotiated().unwrap().skipped, stage.set());
    }
}

#[test]
fn an_unhandled_stage_the_mta_cannot_skip_is_answered_by_the_session() {
    // An MTA that offers no skip bit for HELO, DATA or headers.
    let protocol = ProtocolOpts::V6.bits()
        & !(ProtocolOpts::NO_HELO | ProtocolOpts::NO_DATA | ProtocolOpts::NO_HEADERS).bits();
    let spec = Spec {
        handled: Stages::CONNECT | Stages::RCPT,
        ..Spec::NONE
    };
    let mut p = Pair::new(offer(6, 0x1FF, protocol), spec, always_continue);
    p.take_events();
    p.send(&connect());
    for stage in [Stage::Helo, Stage::Data, Stage::Header] {
        let _ = p.send(&mail(b"<x@y>"));
        let ex = p.send(&command_for(stage));
        assert_eq!(ex.sent, Sent::AwaitReply, "{stage}");
        assert_eq!(ex.decision, Some(Decision::Continue), "{stage}");
    }
    // The milter saw only what it handles (and end of message never came).
    let events = p.take_events();
    assert!(
        events
            .iter()
            .all(|e| e == "new-message" || e == "implicit-abort" || e.starts_with("connect")),
        "{events:?}"
    );
}

// ---- no-reply flags ----

/// The stages that have a no-reply bit (all but end of message).
const NO_REPLY_STAGES: [Stage; 9] = SKIPPABLE;

/// A conversation in which every stage appears once.
fn every_stage(p: &mut Pair<impl common::Handler>) -> Vec<(Stage, Exchange)> {
    let mut out = Vec::new();
    for stage in [
        Stage::Connect,
        Stage::Helo,
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
        Stage::Header,
        Stage::Eoh,
        Stage::Body,
        Stage::Unknown,
        Stage::Eom,
    ] {
        out.push((stage, p.send(&command_for(stage))));
    }
    out
}

#[test]
fn no_reply_stages_get_no_reply() {
    for nr in NO_REPLY_STAGES {
        let spec = Spec {
            handled: Stages::all(),
            no_reply: nr.set(),
            ..Spec::NONE
        };
        // The handler even tries to reject there: nothing may be sent.
        let mut p = Pair::new(OptNeg::POSTFIX_3, spec, answer_at(nr, Status::Reject));
        let n = p.milter.negotiated().unwrap();
        assert_eq!(n.protocol, nr.no_reply_flag().unwrap(), "{nr}");
        assert_eq!(n.no_reply, nr.set());
        assert_eq!(p.mta.negotiated().unwrap().no_reply, nr.set());
        p.take_events();
        for (stage, ex) in every_stage(&mut p) {
            if stage == nr {
                // The client expects no reply; `Pair::send` fails on stray bytes.
                assert_eq!(ex.sent, Sent::NoReply, "{nr}");
                assert_eq!(ex.decision, None);
            } else {
                assert_eq!(ex.decision, Some(Decision::Continue), "{nr}: {stage}");
            }
        }
        // The handler still ran at that stage.
        assert!(p.take_events().contains(&event_for(nr)));
        assert_eq!(
            p.adjustments,
            [Adjustment::NoReplyStage {
                stage: nr,
                status: Status::Reject
            }],
            "{nr}"
        );
    }
}

#[test]
fn all_no_reply_bits_at_once() {
    let spec = Spec {
        handled: Stages::all(),
        no_reply: Stages::all(),
        ..Spec::NONE
    };
    let mut p = Pair::new(OptNeg::POSTFIX_3, spec, always_continue);
    assert_eq!(
        p.milter.negotiated().unwrap().protocol,
        ProtocolOpts::ALL_NO_REPLY
    );
    let before = p.milter_wrote.len();
    for (stage, ex) in every_stage(&mut p) {
        if stage == Stage::Eom {
            // End of message always gets a reply.
            assert_eq!(ex.decision, Some(Decision::Continue));
        } else {
            assert_eq!(ex.sent, Sent::NoReply, "{stage}");
        }
    }
    assert_eq!(&p.milter_wrote[before..], b"\0\0\0\x01c");
}

#[test]
fn no_reply_is_forced_to_continue_when_the_offer_lacks_the_bit() {
    let spec = Spec {
        handled: Stages::all(),
        no_reply: Stages::all(),
        ..Spec::NONE
    };
    let protocol = ProtocolOpts::V6.bits() & !ProtocolOpts::ALL_NO_REPLY.bits();
    let mut p = Pair::new(
        offer(6, 0x1FF, protocol),
        spec,
        |_: &Event<'_>, _: &mut FilterSession| Status::Reject,
    );
    let n = p.milter.negotiated().unwrap();
    assert!(n.protocol.is_empty());
    assert!(n.no_reply.is_empty());
    assert_eq!(n.forced_continue, Stages::all().difference(Stages::EOM));
    for (stage, ex) in every_stage(&mut p) {
        assert_eq!(ex.sent, Sent::AwaitReply, "{stage}");
        let want = if stage == Stage::Eom {
            Decision::Reject
        } else {
            Decision::Continue
        };
        assert_eq!(ex.decision, Some(want), "{stage}");
    }
    assert_eq!(p.adjustments.len(), 9);
    assert!(p.adjustments.iter().all(|a| matches!(
        a,
        Adjustment::ForcedContinue {
            status: Status::Reject,
            ..
        }
    )));
}

#[test]
fn header_no_reply_at_version_2() {
    // Postfix `milter_protocol = 2 no_header_reply` offers 0x7F | NR_HDR.
    let spec = Spec {
        handled: Stages::all(),
        no_reply: Stages::HEADER | Stages::EOH,
        ..Spec::NONE
    };
    let mut p = Pair::new(offer(2, 0x1FF, 0xFF), spec, always_continue);
    let n = p.milter.negotiated().unwrap();
    assert_eq!(n.protocol, ProtocolOpts::NR_HEADER);
    assert_eq!(n.forced_continue, Stages::EOH);
    p.send(&connect());
    p.send(&mail(b"<a@b>"));
    assert_eq!(p.send(&header(b"A", b"1")).sent, Sent::NoReply);
    assert_eq!(p.send(&Command::Data).sent, Sent::Skipped);
    assert_eq!(p.decide(&Command::Eoh), Decision::Continue);
    assert_eq!(p.decide(&EOM), Decision::Continue);
}

#[test]
fn client_fails_cleanly_when_a_no_reply_stage_is_answered() {
    // A milter that negotiated NR_CONN and still answers `c`.
    let mut mta = ClientSession::new(OptNeg::POSTFIX_3);
    let reply = pkt(b'O', b"\0\0\0\x06\0\0\0\0\0\0\x10\0");
    mta.receive_negotiation(frame(&reply)).unwrap();
    assert_eq!(mta.send(&connect()).unwrap(), Sent::NoReply);
    let stray = pkt(b'c', b"");
    assert!(matches!(
        mta.receive(frame(&stray)),
        Err(ClientError::Protocol { .. })
    ));
}

// ---- decisions ----

#[test]
fn decisions_at_each_stage_move_the_conversation() {
    // Reject at MAIL: the transaction never started; Postfix's A is ignored.
    let mut p = Pair::new(
        OptNeg::POSTFIX_3,
        Spec::ALL_STAGES,
        answer_at(Stage::Mail, Status::Reject),
    );
    p.send(&connect());
    assert_eq!(p.decide(&mail(b"<a@b>")), Decision::Reject);
    assert_eq!(p.milter.position(), Position::Session);
    p.send(&Command::Abort);
    assert!(!p.take_events().contains(&"abort".to_string()));

    // Reject at RCPT refuses one recipient; the message goes on.
    let mut p = Pair::new(
        OptNeg::POSTFIX_3,
        Spec::ALL_STAGES,
        |e: &Event<'_>, _: &mut FilterSession| match e {
            Event::Rcpt(a) if a.address == b"<bad@b>" => {
                Status::reply(550, Some("5.1.1"), "no such user").unwrap()
            }
            _ => Status::Continue,
        },
    );
    p.send(&connect());
    p.send(&mail(b"<a@b>"));
    assert_eq!(
        p.decide(&rcpt(b"<bad@b>")),
        Decision::Reply(b"550 5.1.1 no such user".to_vec())
    );
    assert_eq!(p.decide(&rcpt(b"<good@b>")), Decision::Continue);
    assert_eq!(p.milter.position(), Position::Message(Stage::Rcpt));
    p.send(&Command::Data);
    assert_eq!(p.decide(&EOM), Decision::Continue);

    // Accept at RCPT ends the message for the milter; the next is A or MAIL.
    let mut p = Pair::new(
        OptNeg::POSTFIX_3,
        Spec::ALL_STAGES,
        answer_at(Stage::Rcpt, Status::Accept),
    );
    p.send(&connect());
    p.send(&mail(b"<a@b>"));
    assert_eq!(p.decide(&rcpt(b"<r@b>")), Decision::Accept);
    assert_eq!(p.milter.position(), Position::MessageDone);
    // A further message command is a protocol error (no MTA sends one).
    let err = p.try_send(&Command::Data).unwrap_err();
    assert!(err.contains("not allowed"), "{err}");

    // Discard at a header.
    let mut p = Pair::new(
        OptNeg::POSTFIX_3,
        Spec::ALL_STAGES,
        answer_at(Stage::Header, Status::Discard),
    );
    p.send(&connect());
    p.send(&mail(b"<a@b>"));
    p.send(&rcpt(b"<r@b>"));
    assert_eq!(p.decide(&header(b"X", b"y")), Decision::Discard);
    p.send(&Command::Abort);
    assert_eq!(p.milter.position(), Position::Session);
    p.send(&mail(b"<a@b>"));
    p.send(&rcpt(b"<r@b>"));
    p.send(&Command::Data);
    assert_eq!(p.decide(&header(b"X", b"y")), Decision::Discard);
    assert_eq!(p.milter.position(), Position::MessageDone);
    p.send(&Command::Abort);

    // 421 passes the client's validation unchanged.
    let mut p = Pair::new(
        OptNeg::POSTFIX_3,
        Spec::ALL_STAGES,
        answer_at(
            Stage::Data,
            Status::reply(421, Some("4.7.0"), "closing").unwrap(),
        ),
    );
    p.send(&connect());
    p.send(&mail(b"<a@b>"));
    p.send(&rcpt(b"<r@b>"));
    assert_eq!(
        p.decide(&Command::Data),
        Decision::Reply(b"421 4.7.0 closing".to_vec())
    );
}

#[test]
fn statuses_not_allowed_at_a_stage_become_continue() {
    for (stage, status) in [
        (Stage::Connect, Status::Discard),
        (Stage::Helo, Status::Discard),
        (Stage::Unknown, Status::Discard),
        (Stage::Unknown, Status::Accept),
        (Stage::Header, Status::Skip),
        (Stage::Eom, Status::Skip),
    ] {
        let mut p = Pair::new(
            OptNeg::POSTFIX_3,
            Spec::ALL_STAGES,
            answer_at(stage, status.clone()),
        );
        let exchanges = every_stage(&mut p);
        let (_, ex) = exchanges.iter().find(|(s, _)| *s == stage).unwrap();
        assert_eq!(ex.decision, Some(Decision::Continue), "{stage} {status:?}");
        assert_eq!(
            p.adjustments,
            [Adjustment::NotAllowed { stage, status }],
            "{stage}"
        );
    }
}

// ---- unknown commands ----

#[test]
fn unknown_command_mid_message() {
    let mut p = Pair::new(
        OptNeg::POSTFIX_3,
        Spec::ALL_STAGES,
        answer_at(
            Stage::Unknown,
            Status::reply(500, Some("5.5.1"), "what?").unwrap(),
        ),
    );
    p.send(&connect());
    p.send(&HELO);
    p.send(&mail(b"<a@b>"));
    p.send(&rcpt(b"<one@b>"));
    assert_eq!(
        p.decide(&Command::Unknown(b"XFOO bar")),
        Decision::Reply(b"500 5.5.1 what?".to_vec())
    );
    // The message continues: more recipients, then the rest.
    assert_eq!(p.decide(&rcpt(b"<two@b>")), Decision::Continue);
    p.send(&Command::Data);
    p.send(&Command::Unknown(b"XBAR"));
    p.send(&header(b"A", b"b"));
    p.send(&Command::Eoh);
    assert_eq!(p.decide(&EOM), Decision::Continue);
    let events = p.take_events();
    assert_eq!(
        events[events.len() - 9..],
        [
            "mail <a@b>",
            "rcpt <one@b>",
            "unknown XFOO bar",
            "rcpt <two@b>",
            "data",
            "unknown XBAR",
            "header A: b",
            "eoh",
            "eom",
        ]
    );
    // Before HELO and between messages.
    let mut p = Pair::new(OptNeg::POSTFIX_3, Spec::ALL_STAGES, always_continue);
    p.send(&connect());
    assert_eq!(p.decide(&Command::Unknown(b"EARLY")), Decision::Continue);
    whole_message(&mut p);
    assert_eq!(p.decide(&Command::Unknown(b"LATE")), Decision::Continue);
}

// ---- K: quit, new connection follows ----

#[test]
fn quit_new_connection_starts_a_new_session() {
    let mut p = Pair::new(
        OptNeg::POSTFIX_3,
        Spec::ALL_STAGES.with_macros(MacroStage::Connect, "j"),
        always_continue,
    );
    let negotiated = p.milter.negotiated().unwrap().clone();
    p.macros(b'C', &[("j", "mx.example.test")]);
    p.send(&connect());
    p.send(&HELO);
    whole_message(&mut p);
    assert_eq!(p.send(&Command::QuitNewConnection).sent, Sent::NoReply);
    let events = p.take_events();
    assert_eq!(events.last().unwrap(), "close-keep");
    assert_eq!(p.milter.position(), Position::Idle);
    // Macros are gone; negotiation is kept.
    assert_eq!(p.milter.macros().get("j"), None);
    assert_eq!(p.milter.negotiated().unwrap(), &negotiated);
    // The next session starts at C, without a new O.
    assert_eq!(p.decide(&connect()), Decision::Continue);
    assert_eq!(p.decide(&HELO), Decision::Continue);
    // K inside a message: abort first.
    p.send(&mail(b"<a@b>"));
    p.take_events();
    p.send(&Command::QuitNewConnection);
    assert_eq!(p.take_events(), ["implicit-abort", "close-keep"]);
    p.send(&connect());
    p.send(&Command::Quit);
    p.eof();
    assert_eq!(p.take_events(), [event_for(Stage::Connect), "close".into()]);
}

#[test]
fn session_commands_before_connect_after_k_are_refused() {
    let mut p = Pair::new(OptNeg::POSTFIX_3, Spec::ALL_STAGES, always_continue);
    p.send(&connect());
    p.send(&Command::QuitNewConnection);
    let err = p.try_send(&HELO).unwrap_err();
    assert!(err.contains("before connect"), "{err}");
}

/// `K` ends the session as `Q` does (close handler) but keeps the connection and
/// the negotiated options, and the next command is a new `C`; if the MTA then
/// closes the connection without starting another session, there is no session
/// left to close. The close handler must not run a second time.
#[test]
fn eof_after_quit_new_connection_does_not_close_twice() {
    let mut p = Pair::new(OptNeg::POSTFIX_3, Spec::ALL_STAGES, always_continue);
    p.send(&connect());
    whole_message(&mut p);
    p.send(&Command::QuitNewConnection);
    p.take_events();
    p.eof();
    assert_eq!(
        p.take_events(),
        Vec::<String>::new(),
        "close handler called twice for one session"
    );
}

#[test]
fn close_after_k_when_connect_is_skipped() {
    // With NOCONNECT the second session starts at HELO; it still gets its close.
    let spec = Spec {
        handled: Stages::all().difference(Stages::CONNECT),
        ..Spec::NONE
    };
    let mut p = Pair::new(OptNeg::POSTFIX_3, spec, always_continue);
    assert_eq!(p.send(&connect()).sent, Sent::Skipped);
    p.send(&HELO);
    p.send(&Command::QuitNewConnection);
    p.send(&HELO);
    whole_message(&mut p);
    p.take_events();
    p.eof();
    assert_eq!(p.take_events(), ["close"]);
}

// ---- negotiation as libmilter does it: each offer below got this reply from a
// libmilter milter with every callback and actions 0xFF ----

/// The `O` reply the milter wrote.
fn o_reply<H>(p: &Pair<H>) -> Vec<u8> {
    common::raw_frames(&p.milter_wrote)[0].to_vec()
}

fn o_bytes(version: u32, actions: u32, protocol: u32, lists: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&version.to_be_bytes());
    payload.extend_from_slice(&actions.to_be_bytes());
    payload.extend_from_slice(&protocol.to_be_bytes());
    payload.extend_from_slice(lists);
    pkt(b'O', &payload)
}

/// The probe milter those replies came from: all callbacks, registered actions 0xFF.
fn probe() -> Spec {
    Spec {
        handled: Stages::all(),
        actions: Actions::from_bits_truncate(0xFF),
        ..Spec::NONE
    }
}

#[test]
fn negotiation_matches_libmilter_observations() {
    let mds_1m = 0x1F_FFFF | ProtocolOpts::MDS_1M.bits();
    // No negotiate callback: the MDS bit is never echoed.
    let p = Pair::new(offer(6, 0x1FF, mds_1m), probe(), always_continue);
    assert_eq!(o_reply(&p), o_bytes(6, 0xFF, 0, b""));
    // Callback returning ALL_OPTS: every offered action, SKIP.
    let all_opts = Spec {
        optional_actions: Actions::all(),
        optional_options: ProtocolOpts::SKIP,
        ..probe()
    };
    let p = Pair::new(offer(6, 0x1FF, mds_1m), all_opts, always_continue);
    assert_eq!(o_reply(&p), o_bytes(6, 0x1FF, 0x400, b""));
    // Callback choosing NR bits 0x1FF000 (which include HDR_LEADSPC).
    let nr = Spec {
        actions: Actions::all(),
        no_reply: Stages::all().difference(Stages::HEADER),
        options: ProtocolOpts::HEADER_LEADING_SPACE,
        ..probe()
    };
    let p = Pair::new(offer(6, 0x1FF, mds_1m), nr, always_continue);
    assert_eq!(o_reply(&p), o_bytes(6, 0x1FF, 0x1F_F000, b""));
    // Callback choosing HDR_LEADSPC and three symbol lists.
    let lists = Spec {
        actions: Actions::all(),
        options: ProtocolOpts::HEADER_LEADING_SPACE,
        ..probe()
    }
    .with_macros(MacroStage::Connect, "{j} _")
    .with_macros(MacroStage::Eom, "{i}")
    .with_macros(MacroStage::Eoh, "");
    let p = Pair::new(offer(6, 0x1FF, mds_1m), lists, always_continue);
    assert_eq!(
        o_reply(&p),
        o_bytes(
            6,
            0x1FF,
            0x10_0000,
            b"\0\0\0\0{j} _\0\0\0\0\x05{i}\0\0\0\0\x06\0"
        )
    );
    let n = p.mta.negotiated().unwrap();
    assert_eq!(n.macros_for(MacroStage::Eoh), Some(&b""[..]));
    // Older and newer offers.
    let p = Pair::new(offer(4, 0x1FF, 0x3FF), probe(), always_continue);
    assert_eq!(o_reply(&p), o_bytes(4, 0xFF, 0, b""));
    let p = Pair::new(offer(7, 0x1FF, 0x1F_FFFF), probe(), always_continue);
    assert_eq!(o_reply(&p), o_bytes(6, 0xFF, 0, b""));
}

#[test]
fn negotiation_failures_write_nothing() {
    let fail = |o: OptNeg| {
        let mut s = FilterSession::new();
        let mut wire = Vec::new();
        o.encode(&mut wire);
        assert!(matches!(
            s.handle(frame(&wire)).unwrap().event,
            Some(Event::Negotiate(_))
        ));
        let err = s.negotiate(&probe()).unwrap_err();
        assert!(s.output().is_empty(), "{o:?}");
        err
    };
    // Actions not offered (a v2 offer lacks 0xC0).
    assert_eq!(
        fail(offer(2, 0x3F, 0x7F)),
        SessionError::Negotiate(NegotiateError::ActionsNotOffered {
            missing: Actions::from_bits_truncate(0xC0)
        })
    );
    // Actions 0 read as 0x0F, which lacks 0xF0.
    assert_eq!(
        fail(offer(6, 0, 0)),
        SessionError::Negotiate(NegotiateError::ActionsNotOffered {
            missing: Actions::from_bits_truncate(0xF0)
        })
    );
    // Version 1 and 0.
    for v in [0, 1] {
        assert_eq!(
            fail(offer(v, 0x1FF, 0x1F_FFFF)),
            SessionError::Negotiate(NegotiateError::VersionTooOld(v))
        );
    }
    // A 4-byte payload.
    let mut s = FilterSession::new();
    assert!(matches!(
        s.handle(frame(&pkt(b'O', b"\0\0\0\x06"))),
        Err(SessionError::Decode(_))
    ));
}

#[test]
fn client_checks_the_negotiation_reply() {
    let check = |reply: Vec<u8>, strict: bool| {
        let strictness = Strictness {
            options_subset: strict,
            ..Strictness::default()
        };
        let mut mta = ClientSession::with_strictness(offer(4, 0x3F, 0x37F), strictness);
        mta.receive_negotiation(frame(&reply)).cloned()
    };
    // Version above the offer, 1 and 0.
    for v in [0, 1, 5, 6] {
        assert!(check(o_bytes(v, 0, 0, b""), true).is_err(), "version {v}");
    }
    // Actions outside the offer.
    assert!(check(o_bytes(4, 0x40, 0, b""), true).is_err());
    // Protocol bits outside the offer: Sendmail refuses, Postfix does not check.
    assert!(check(o_bytes(4, 0, 0x400, b""), true).is_err());
    assert!(check(o_bytes(4, 0, 0x400, b""), false).is_ok());
    // Version 2 and 3: no T (and no U at 2).
    let n = check(o_bytes(3, 0, 0, b""), true).unwrap();
    assert!(n.skipped.has(Stage::Data) && !n.skipped.has(Stage::Unknown));
    let n = check(o_bytes(2, 0, 0, b""), true).unwrap();
    assert!(n.skipped.has(Stage::Data) && n.skipped.has(Stage::Unknown));
    // Not an O at all.
    assert!(check(pkt(b'c', b""), true).is_err());
    // A second negotiation reply.
    let mut mta = ClientSession::new(OptNeg::POSTFIX_3);
    let reply = o_bytes(6, 0, 0, b"");
    mta.receive_negotiation(frame(&reply)).unwrap();
    assert!(mta.receive_negotiation(frame(&reply)).is_err());
}

#[test]
fn a_second_negotiation_is_a_protocol_error() {
    let mut p = Pair::new(OptNeg::POSTFIX_3, Spec::ALL_STAGES, always_continue);
    p.send(&connect());
    let mut wire = Vec::new();
    OptNeg::POSTFIX_3.encode(&mut wire);
    assert!(matches!(
        p.milter.handle(frame(&wire)),
        Err(SessionError::OutOfOrder { code: b'O', .. })
    ));
}

// ---- macros across messages: one set per stage (connect, helo, mail, rcpt,
// data, eoh, eom); a `D` replaces its stage's set (even when empty, unlike
// libmilter, so values never leak into the next message); `C` clears the sets
// after connect, `H` those after helo, `M` those after mail, `R` those after rcpt;
// a lookup searches from eom back to connect ----

#[test]
fn macros_scope_across_messages() {
    let mut notes: Vec<String> = Vec::new();
    let handler = |e: &Event<'_>, s: &mut FilterSession| {
        let m = s.macros();
        let show = |name: &str| {
            format!(
                "{name}={}",
                m.get(name)
                    .map_or("-".into(), |v| String::from_utf8_lossy(v).into_owned())
            )
        };
        let names = [
            "j",
            "{tls_version}",
            "i",
            "mail_addr",
            "rcpt_addr",
            "msg_id",
            "x",
        ];
        let line: Vec<String> = names.iter().map(|n| show(n)).collect();
        let stage = e.stage().map_or("?", Stage::name);
        notes.push(format!("{stage}: {}", line.join(" ")));
        Status::Continue
    };
    let mut p = Pair::new(OptNeg::POSTFIX_3, Spec::ALL_STAGES, handler);
    p.macros(b'C', &[("j", "mx"), ("{daemon_name}", "smtpd")]);
    p.send(&connect());
    p.macros(b'H', &[("{tls_version}", "TLSv1.3")]);
    p.send(&HELO);
    // Message 1, Postfix style: `D` before everything, `i` from DATA on.
    p.macros(b'M', &[("{mail_addr}", "a@b")]);
    p.send(&mail(b"<a@b>"));
    p.macros(b'R', &[("{rcpt_addr}", "r1")]);
    p.send(&rcpt(b"<r1>"));
    p.macros(b'R', &[("{rcpt_addr}", "r2")]);
    p.send(&rcpt(b"<r2>"));
    p.macros(b'T', &[("i", "Q1")]);
    p.send(&Command::Data);
    p.macros(b'L', &[("x", "header-only")]);
    p.send(&header(b"A", b"b"));
    p.macros(b'N', &[("i", "Q1")]);
    p.send(&Command::Eoh);
    p.macros(b'B', &[("{i}", "Q1")]);
    p.send(&Command::Body(b"x"));
    p.macros(b'E', &[("{i}", "Q1"), ("{msg_id}", "<m1>")]);
    p.send(&EOM);
    p.send(&Command::Abort);
    // Message 2: `D` without pairs for MAIL, no `D` before RCPT.
    p.macros(b'M', &[]);
    p.send(&mail(b"<c@d>"));
    p.send(&rcpt(b"<r3>"));
    p.macros(b'E', &[]);
    p.send(&EOM);
    // An unknown command with its own macros.
    p.macros(b'U', &[("x", "unknown-only")]);
    p.send(&Command::Unknown(b"XFOO"));
    p.send(&HELO);
    // K clears everything.
    p.send(&Command::QuitNewConnection);
    p.send(&connect());
    drop(p);
    assert_eq!(
        notes,
        [
            "connect: j=mx {tls_version}=- i=- mail_addr=- rcpt_addr=- msg_id=- x=-",
            "helo: j=mx {tls_version}=TLSv1.3 i=- mail_addr=- rcpt_addr=- msg_id=- x=-",
            "mail: j=mx {tls_version}=TLSv1.3 i=- mail_addr=a@b rcpt_addr=- msg_id=- x=-",
            "rcpt: j=mx {tls_version}=TLSv1.3 i=- mail_addr=a@b rcpt_addr=r1 msg_id=- x=-",
            "rcpt: j=mx {tls_version}=TLSv1.3 i=- mail_addr=a@b rcpt_addr=r2 msg_id=- x=-",
            "data: j=mx {tls_version}=TLSv1.3 i=Q1 mail_addr=a@b rcpt_addr=r2 msg_id=- x=-",
            // Macros sent with L are visible to that header only.
            "header: j=mx {tls_version}=TLSv1.3 i=Q1 mail_addr=a@b rcpt_addr=r2 msg_id=- x=header-only",
            "eoh: j=mx {tls_version}=TLSv1.3 i=Q1 mail_addr=a@b rcpt_addr=r2 msg_id=- x=-",
            "body: j=mx {tls_version}=TLSv1.3 i=Q1 mail_addr=a@b rcpt_addr=r2 msg_id=- x=-",
            "eom: j=mx {tls_version}=TLSv1.3 i=Q1 mail_addr=a@b rcpt_addr=r2 msg_id=<m1> x=-",
            // A new MAIL: rcpt..eom cleared, and the empty `D` replaces the mail
            // set (deliberately unlike libmilter), so nothing leaks.
            "mail: j=mx {tls_version}=TLSv1.3 i=- mail_addr=- rcpt_addr=- msg_id=- x=-",
            "rcpt: j=mx {tls_version}=TLSv1.3 i=- mail_addr=- rcpt_addr=- msg_id=- x=-",
            "eom: j=mx {tls_version}=TLSv1.3 i=- mail_addr=- rcpt_addr=- msg_id=- x=-",
            "unknown: j=mx {tls_version}=TLSv1.3 i=- mail_addr=- rcpt_addr=- msg_id=- x=unknown-only",
            // A new HELO keeps connect and helo macros (no `D H` came: the old
            // set stays).
            "helo: j=mx {tls_version}=TLSv1.3 i=- mail_addr=- rcpt_addr=- msg_id=- x=-",
            "connect: j=- {tls_version}=- i=- mail_addr=- rcpt_addr=- msg_id=- x=-",
        ]
    );
}

#[test]
fn macros_for_skipped_stages_are_stored() {
    // An MTA may send `D C` although connect was negotiated away (Postfix
    // does); the macros are accepted and stored, not an error.
    let spec = Spec {
        handled: Stages::MAIL,
        ..Spec::NONE
    };
    let mut seen = None;
    let mut p = Pair::new(
        OptNeg::POSTFIX_3,
        spec,
        |_: &Event<'_>, s: &mut FilterSession| {
            seen = s.macros().get("j").map(<[u8]>::to_vec);
            Status::Continue
        },
    );
    p.macros(b'C', &[("{j}", "mx")]);
    assert_eq!(p.send(&connect()).sent, Sent::Skipped);
    p.send(&mail(b"<a@b>"));
    drop(p);
    assert_eq!(seen.as_deref(), Some(&b"mx"[..]));
}

// ---- modifications at end of message ----

fn all_actions() -> Spec {
    Spec {
        actions: Actions::all().difference(Actions::SET_SYMBOL_LIST),
        ..Spec::ALL_STAGES
    }
}

#[test]
fn every_modification_at_end_of_message() {
    let big: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
    let body = big.clone();
    let handler = move |e: &Event<'_>, s: &mut FilterSession| {
        if !matches!(e, Event::Eom(_)) {
            return Status::Continue;
        }
        s.progress().unwrap();
        s.add_header(b"X-A", b"1").unwrap();
        s.insert_header(0, b"X-First", b"top").unwrap();
        s.change_header(b"Subject", 1, b"new\n\tfolded").unwrap();
        s.change_header(b"X-Old", 2, b"").unwrap();
        s.add_rcpt(b"<new@x>").unwrap();
        s.add_rcpt_with_args(b"<p@x>", Some(b"NOTIFY=NEVER ORCPT=rfc822;p@x"))
            .unwrap();
        s.add_rcpt_with_args(b"<q@x>", None).unwrap();
        s.delete_rcpt(b"<Old@X>").unwrap();
        s.change_from(b"<>", None).unwrap();
        s.change_from(b"<f@x>", Some(b"RET=HDRS")).unwrap();
        s.replace_body(&body[..100_000]).unwrap();
        // Progress inside the run is deferred until the run ends.
        s.progress().unwrap();
        s.replace_body(&body[100_000..]).unwrap();
        s.quarantine(b"held for review").unwrap();
        Status::Continue
    };
    let mut p = Pair::new(OptNeg::POSTFIX_3, all_actions(), handler);
    p.send(&connect());
    let ex = whole_message(&mut p);
    let eom = &ex[6];
    assert_eq!(eom.decision, Some(Decision::Continue));
    let v = |s: &[u8]| s.to_vec();
    let mut expected = vec![
        Received::Progress,
        Received::Modification(Modification::AddHeader {
            name: v(b"X-A"),
            value: v(b"1"),
        }),
        Received::Modification(Modification::InsertHeader {
            index: 0,
            name: v(b"X-First"),
            value: v(b"top"),
        }),
        Received::Modification(Modification::ChangeHeader {
            index: 1,
            name: v(b"Subject"),
            value: v(b"new\n\tfolded"),
        }),
        Received::Modification(Modification::ChangeHeader {
            index: 2,
            name: v(b"X-Old"),
            value: v(b""),
        }),
        Received::Modification(Modification::AddRcpt(v(b"<new@x>"))),
        Received::Modification(Modification::AddRcptWithArgs {
            rcpt: v(b"<p@x>"),
            args: Some(v(b"NOTIFY=NEVER ORCPT=rfc822;p@x")),
        }),
        Received::Modification(Modification::AddRcptWithArgs {
            rcpt: v(b"<q@x>"),
            args: None,
        }),
        Received::Modification(Modification::DeleteRcpt(v(b"<Old@X>"))),
        Received::Modification(Modification::ChangeFrom {
            from: v(b"<>"),
            args: None,
        }),
        Received::Modification(Modification::ChangeFrom {
            from: v(b"<f@x>"),
            args: Some(v(b"RET=HDRS")),
        }),
    ];
    // The body goes out as packets of at most 65535 bytes, one run.
    for chunk in [&big[..65535], &big[65535..100_000], &big[100_000..]] {
        expected.push(Received::Modification(Modification::ReplaceBody(v(chunk))));
    }
    expected.push(Received::Progress);
    expected.push(Received::Modification(Modification::Quarantine(v(
        b"held for review",
    ))));
    assert_eq!(eom.received, expected);
    let body: Vec<u8> = eom
        .modifications()
        .iter()
        .filter_map(|m| match m {
            Modification::ReplaceBody(b) => Some(b.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(body, big);
}

#[test]
fn empty_replacement_body_is_one_empty_packet() {
    let mut p = Pair::new(
        OptNeg::POSTFIX_3,
        all_actions(),
        |e: &Event<'_>, s: &mut FilterSession| {
            if matches!(e, Event::Eom(_)) {
                s.replace_body(b"").unwrap();
                s.progress().unwrap();
            }
            Status::Continue
        },
    );
    p.send(&connect());
    let ex = whole_message(&mut p);
    assert_eq!(
        ex[6].received,
        [
            Received::Modification(Modification::ReplaceBody(Vec::new())),
            // Deferred to the end of the run, then sent before the decision.
            Received::Progress,
        ]
    );
}

#[test]
fn modifications_are_refused_outside_end_of_message_or_without_the_action() {
    let mut results: Vec<String> = Vec::new();
    let spec = Spec {
        actions: Actions::ADD_HEADER | Actions::CHANGE_BODY | Actions::QUARANTINE,
        optional_actions: Actions::CHANGE_FROM,
        ..Spec::ALL_STAGES
    };
    let handler = |e: &Event<'_>, s: &mut FilterSession| {
        let mut note = |r: Result<(), ActionError>| results.push(format!("{r:?}"));
        match e {
            Event::Rcpt(_) => {
                note(s.add_header(b"X", b"y"));
                note(s.progress());
            }
            Event::Eom(_) => {
                // Not negotiated (not asked for; not offered).
                note(s.add_rcpt(b"<a@b>"));
                note(s.change_from(b"<a@b>", None));
                // Bad arguments.
                note(s.add_header(b"", b"v"));
                note(s.add_header(b"Bad:Name", b"v"));
                note(s.add_header(b"Bad Name", b"v"));
                note(s.add_header(b"X", b"nul\0inside"));
                note(s.quarantine(b""));
                note(s.add_header(b"X", &[b'v'; 70_000]));
                // A body run interrupted, then resumed.
                note(s.replace_body(b"one"));
                note(s.add_header(b"X-Ok", b"1"));
                note(s.replace_body(b"two"));
            }
            _ => {}
        }
        Status::Continue
    };
    // An MTA that offers the version-2 actions only: no CHANGE_FROM.
    let mut p = Pair::new(offer(6, Actions::V2.bits(), 0x1F_FFFF), spec, handler);
    p.send(&connect());
    assert_eq!(
        p.milter.actions(),
        Actions::ADD_HEADER | Actions::CHANGE_BODY | Actions::QUARANTINE
    );
    let ex = whole_message(&mut p);
    // Only the accepted calls reached the MTA.
    assert_eq!(
        ex[6].modifications(),
        [
            Modification::ReplaceBody(b"one".to_vec()),
            Modification::AddHeader {
                name: b"X-Ok".to_vec(),
                value: b"1".to_vec()
            },
        ]
    );
    drop(p);
    let not_eom = |call: &str| format!("Err(NotAtEndOfMessage {{ call: {call:?} }})");
    assert_eq!(results[0], not_eom("add_header"));
    assert_eq!(results[1], not_eom("progress"));
    assert!(results[2].contains("NotNegotiated") && results[2].contains("ADD_RCPT"));
    assert!(results[3].contains("NotNegotiated") && results[3].contains("CHANGE_FROM"));
    for r in &results[4..9] {
        assert!(r.starts_with("Err(InvalidArgument"), "{r}");
    }
    assert!(results[9].starts_with("Err(TooLarge"), "{}", results[9]);
    assert_eq!(
        results[10..],
        ["Ok(())", "Ok(())", "Err(BodyRunInterrupted)"]
    );
}

#[test]
fn client_refuses_modifications_outside_end_of_message() {
    let mut mta = ClientSession::new(OptNeg::POSTFIX_3);
    mta.receive_negotiation(frame(&o_bytes(6, 0x1FF, 0, b"")))
        .unwrap();
    mta.send(&rcpt(b"<a@b>")).unwrap();
    let add = pkt(b'h', b"X\0y\0");
    assert!(matches!(
        mta.receive(frame(&add)),
        Err(ClientError::Protocol { .. })
    ));
    // Progress is for end of message only too.
    let mut mta = ClientSession::new(OptNeg::POSTFIX_3);
    mta.receive_negotiation(frame(&o_bytes(6, 0x1FF, 0, b"")))
        .unwrap();
    mta.send(&header(b"A", b"b")).unwrap();
    assert!(mta.receive(frame(&pkt(b'p', b""))).is_err());
    // A modification whose action was not negotiated.
    let mut mta = ClientSession::new(OptNeg::POSTFIX_3);
    mta.receive_negotiation(frame(&o_bytes(6, 0x01, 0, b"")))
        .unwrap();
    mta.send(&EOM).unwrap();
    assert!(mta.receive(frame(&add)).is_ok());
    assert!(mta.receive(frame(&pkt(b'+', b"<a@b>\0"))).is_err());
}

#[test]
fn client_body_run_rule_is_configurable() {
    let body_after_progress = |strict: bool| {
        let strictness = Strictness {
            body_run: strict,
            ..Strictness::default()
        };
        let mut mta = ClientSession::with_strictness(OptNeg::POSTFIX_3, strictness);
        mta.receive_negotiation(frame(&o_bytes(6, 0x1FF, 0, b"")))
            .unwrap();
        mta.send(&EOM).unwrap();
        let b = pkt(b'b', b"part");
        mta.receive(frame(&b)).unwrap();
        mta.receive(frame(&pkt(b'p', b""))).unwrap();
        let third = mta.receive(frame(&b));
        let last = mta.receive(frame(&pkt(b'c', b"")));
        (third, last)
    };
    let (third, _) = body_after_progress(true);
    assert!(
        matches!(third, Err(ClientError::Protocol { .. })),
        "{third:?}"
    );
    let (third, last) = body_after_progress(false);
    assert!(matches!(third, Ok(Received::Modification(_))), "{third:?}");
    assert_eq!(last.unwrap(), Received::Decision(Decision::Continue));
}

#[test]
fn client_refuses_data_in_end_of_message() {
    let mut mta = ClientSession::new(OptNeg::POSTFIX_3);
    mta.receive_negotiation(frame(&o_bytes(6, 0, 0, b"")))
        .unwrap();
    assert!(matches!(
        mta.send(&Command::Eom(b"last chunk")),
        Err(ClientError::Misuse(_))
    ));
    assert!(mta.send(&Command::Body(b"")).is_err());
    assert!(mta.send(&Command::Body(&[0; 65536])).is_err());
    assert_eq!(
        mta.send(&Command::Body(&[0; 65535])).unwrap(),
        Sent::AwaitReply
    );
}

/// A packet above the limit is refused; the error names the size that was too
/// large.
#[test]
fn client_refuses_an_oversized_packet_and_names_its_size() {
    let mut mta = ClientSession::new(OptNeg::POSTFIX_3);
    mta.receive_negotiation(frame(&o_bytes(6, 0, 0, b"")))
        .unwrap();
    mta.clear_output();
    let value = vec![b'v'; 70_000];
    let err = mta
        .send(&Command::Header(Header {
            name: b"X-Big",
            value: &value,
        }))
        .unwrap_err();
    assert!(mta.output().is_empty());
    assert_eq!(mta.awaiting(), None);
    let text = err.to_string();
    // 70012 bytes on the wire, a 70007-byte payload.
    assert!(
        text.contains("70012") || text.contains("70007"),
        "the message names the size: {text}"
    );
}

// ---- skip ----

#[test]
fn skip_with_skip_negotiated() {
    let spec = Spec {
        optional_options: ProtocolOpts::SKIP,
        ..Spec::ALL_STAGES
    };
    let mut p = Pair::new(
        OptNeg::POSTFIX_3,
        spec,
        answer_at(Stage::Body, Status::Skip),
    );
    assert!(p.milter.negotiated().unwrap().can_skip());
    p.send(&connect());
    for s in [Stage::Mail, Stage::Rcpt, Stage::Data, Stage::Eoh] {
        p.send(&command_for(s));
    }
    p.take_events();
    assert_eq!(p.decide(&Command::Body(b"first")), Decision::Skip);
    // Should the MTA send another chunk anyway, the session answers it.
    assert_eq!(p.decide(&Command::Body(b"second")), Decision::Continue);
    assert_eq!(p.decide(&EOM), Decision::Continue);
    assert_eq!(p.take_events(), [body_event(b"first"), "eom".into()]);
    assert!(p.adjustments.is_empty());
    // The next message's body is seen again.
    let ex = whole_message(&mut p);
    assert_eq!(ex[5].decision, Some(Decision::Skip));
}

#[test]
fn skip_without_skip_negotiated() {
    for spec in [
        // Not asked for.
        Spec::ALL_STAGES,
        // Asked for but not offered.
        Spec {
            optional_options: ProtocolOpts::SKIP,
            ..Spec::ALL_STAGES
        },
    ] {
        let o = offer(6, 0x1FF, 0x1F_FFFF & !ProtocolOpts::SKIP.bits());
        let mut p = Pair::new(o, spec, answer_at(Stage::Body, Status::Skip));
        assert!(!p.milter.negotiated().unwrap().can_skip());
        p.send(&connect());
        for s in [Stage::Mail, Stage::Rcpt, Stage::Data, Stage::Eoh] {
            p.send(&command_for(s));
        }
        p.take_events();
        assert_eq!(p.decide(&Command::Body(b"first")), Decision::Continue);
        // The rest of the body is answered without calling the handler.
        assert_eq!(p.decide(&Command::Body(b"second")), Decision::Continue);
        assert_eq!(p.decide(&EOM), Decision::Continue);
        assert_eq!(p.take_events(), [body_event(b"first"), "eom".into()]);
        assert_eq!(p.adjustments, [Adjustment::SkipNotNegotiated]);
        // The next message's body is seen again.
        whole_message(&mut p);
        assert!(p.take_events().contains(&event_for(Stage::Body)));
    }
}

// ---- data in end of message (the client never sends it; raw bytes) ----

fn stream(cmds: &[Command<'_>]) -> Vec<u8> {
    let mut w = Vec::new();
    OptNeg::POSTFIX_3.encode(&mut w);
    for c in cmds {
        c.encode(&mut w);
    }
    w
}

#[test]
fn data_in_end_of_message_is_a_last_body_chunk() {
    let cmds = [
        connect(),
        mail(b"<a@b>"),
        rcpt(b"<r@b>"),
        Command::Body(b"first "),
        Command::Eom(b"last"),
    ];
    let wire = stream(&cmds);
    let t = run_filter([&wire[..]], &Spec::ALL_STAGES, &mut always_continue);
    assert_eq!(t.error, None);
    let eom = format!("eom +4 bytes {:016x}", common::fnv(b"last"));
    assert!(t.events.contains(&eom), "{:?}", t.events);
    // Exactly one reply to E.
    let replies = common::raw_frames(&t.output);
    assert_eq!(replies.len(), 1 + 5);
    // Without a body handler the chunk is dropped; still one reply.
    let spec = Spec {
        handled: Stages::all().difference(Stages::BODY),
        ..Spec::NONE
    };
    let t = run_filter([&wire[..]], &spec, &mut always_continue);
    assert!(t.events.contains(&"eom".to_string()), "{:?}", t.events);
    assert_eq!(common::raw_frames(&t.output).len(), 1 + 5);
    // After a skip the chunk is dropped too.
    let t = run_filter(
        [&wire[..]],
        &Spec::ALL_STAGES,
        &mut answer_at(Stage::Body, Status::Skip),
    );
    assert!(t.events.contains(&"eom".to_string()), "{:?}", t.events);
}
