//! The client against our own server: every stage, status and modification, over
//! TCP and Unix sockets, with a hand-written and a derived milter, and many
//! clients at once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers outside #[test] fns.

#[path = "data/harness.rs"]
mod harness;

use harness::{watchdog, ServerGuard};
use milter_blocking::client::{
    ApplyRules, Client, ClientAddress, Decision, Envelope, Message, Modification, Profile,
    Response, Timeouts, Verdict,
};
use milter_blocking::{
    Actions, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter,
    ProtocolOpts, Spec, Stage, Stages, Status,
};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// Decides by what it is given; every stage and every status is reachable.
#[derive(Default)]
struct Judge {
    subject: Option<Vec<u8>>,
    remove: Option<Vec<u8>>,
    body_bytes: usize,
}

fn reply(code: u16, text: &str) -> Status {
    let class = if code >= 500 { "5.7.1" } else { "4.7.1" };
    Status::reply(code, Some(class), text).unwrap()
}

impl milter_blocking::Declaration for Judge {
    const ACTIONS: milter_blocking::Actions = Actions::all().difference(Actions::SET_SYMBOL_LIST);
    fn reset_message(&mut self) {
        self.subject = None;
        self.remove = None;
        self.body_bytes = 0;
    }
}
impl milter_blocking::action::AddHeader for Judge {}
impl milter_blocking::action::ChangeBody for Judge {}
impl milter_blocking::action::AddRcpt for Judge {}
impl milter_blocking::action::DeleteRcpt for Judge {}
impl milter_blocking::action::ChangeHeader for Judge {}
impl milter_blocking::action::Quarantine for Judge {}
impl milter_blocking::action::ChangeFrom for Judge {}
impl milter_blocking::action::AddRcptWithArgs for Judge {}

#[milter_blocking::handlers]
impl Milter for Judge {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec {
            actions: Actions::all().difference(Actions::SET_SYMBOL_LIST),
            optional_options: ProtocolOpts::SKIP,
            ..Spec::ALL_STAGES
        };
    }

    fn connect(
        &mut self,
        _: &mut Context<'_>,
        host: &[u8],
        addr: ConnectAddr<'_>,
    ) -> HandlerResult {
        Ok(match (host, addr) {
            (b"reject.test", _) => reply(554, "connect refused"),
            (_, ConnectAddr::Unknown) => Status::Tempfail,
            _ => Status::Continue,
        })
    }

    fn helo(&mut self, _: &mut Context<'_>, name: &[u8]) -> HandlerResult {
        Ok(match name {
            b"accept.helo" => Status::Accept,
            b"reject.helo" => Status::Reject,
            _ => Status::Continue,
        })
    }

    fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
        Ok(match from.bare() {
            b"reject@x" => reply(550, "sender refused"),
            b"tempfail@x" => Status::Tempfail,
            b"discard@x" => Status::Discard,
            b"accept@x" => Status::Accept,
            _ => Status::Continue,
        })
    }

    fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> HandlerResult {
        Ok(match rcpt.bare() {
            b"reject@x" => Status::Reject,
            b"tempfail@x" => reply(451, "try later"),
            b"remove@x" => {
                self.remove = Some(rcpt.address.to_vec());
                Status::Continue
            }
            _ => Status::Continue,
        })
    }

    fn data(&mut self, ctx: &mut Context<'_>) -> HandlerResult {
        // Postfix sends the queue id from DATA on.
        Ok(if ctx.queue_id().is_some() {
            Status::Continue
        } else {
            reply(451, "no queue id")
        })
    }

    fn header(&mut self, _: &mut Context<'_>, h: &Header<'_>) -> HandlerResult {
        if h.is("Subject") && self.subject.is_none() {
            self.subject = Some(h.value.to_vec());
        }
        Ok(match (h.name, h.value) {
            (b"X-Action", b"reject") => Status::Reject,
            (b"X-Action", b"accept") => Status::Accept,
            (b"X-Action", b"discard") => Status::Discard,
            _ => Status::Continue,
        })
    }

    fn eoh(&mut self, _: &mut Context<'_>) -> HandlerResult {
        Ok(match self.subject.as_deref() {
            Some(b"eoh-tempfail") => Status::Tempfail,
            _ => Status::Continue,
        })
    }

    fn body(&mut self, _: &mut Context<'_>, chunk: &[u8]) -> HandlerResult {
        self.body_bytes += chunk.len();
        Ok(if chunk.starts_with(b"SKIP") {
            Status::Skip
        } else {
            Status::Continue
        })
    }

    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        if self.subject.as_deref() == Some(b"eom-reject") {
            return Ok(reply(554, "content refused"));
        }
        ctx.progress()?;
        ctx.add_header("X-Body-Bytes", self.body_bytes.to_string())?;
        ctx.insert_header(0, "X-Top", "1")?;
        if let Some(s) = self.subject.take() {
            let mut v = b"[judged] ".to_vec();
            v.extend_from_slice(&s);
            ctx.change_header("Subject", 1, v)?;
        }
        ctx.delete_header("X-Old", 2)?;
        ctx.add_rcpt("<added@x>")?;
        ctx.add_rcpt_with_args("<added-args@x>", "NOTIFY=NEVER")?;
        if let Some(r) = self.remove.take() {
            ctx.delete_rcpt(r)?;
        }
        ctx.change_from("<new-sender@x>", Some("RET=HDRS"))?;
        ctx.replace_body(b"new body\r\n")?;
        ctx.replace_body(vec![b'z'; 100_000])?;
        ctx.quarantine("judged")?;
        Ok(Status::Continue)
    }

    fn unknown(&mut self, _: &mut Context<'_>, _line: &[u8]) -> HandlerResult {
        Ok(Status::reply(500, Some("5.5.1"), "what?").unwrap())
    }
}

fn client(spec: &milter_blocking::SocketSpec, profile: Profile) -> Client {
    Client::builder()
        .profile(profile)
        .timeouts(Timeouts::uniform(Duration::from_secs(10)))
        .open(spec)
        .unwrap()
}

fn d(decision: Decision) -> Response {
    Response::Replied(decision)
}

#[test]
fn every_stage_and_status_over_tcp() {
    watchdog(LIMIT, || {
        let server = ServerGuard::start("inet:0@127.0.0.1", Judge::default);
        let mut c = client(&server.spec, Profile::Postfix);
        let n = c.negotiated().clone();
        assert_eq!(n.version, 6);
        assert_eq!(n.actions.bits(), 0xFF);
        assert!(n.skipped.is_empty());
        assert!(n.protocol.contains(ProtocolOpts::SKIP));
        let addr = ClientAddress::default();
        // Postfix closes the milter connection after a session-level verdict:
        // each of these needs a new one.
        assert!(c.connect("reject.test", &addr).unwrap().reply_code() == Some(554));
        assert!(c.closed_by_mta());
        c = client(&server.spec, Profile::Postfix);
        assert_eq!(
            c.connect("h", &ClientAddress::Unknown).unwrap(),
            d(Decision::Tempfail)
        );
        c = client(&server.spec, Profile::Postfix);
        assert_eq!(c.connect("h", &addr).unwrap(), d(Decision::Continue));
        assert_eq!(c.helo("reject.helo").unwrap(), d(Decision::Reject));
        c = client(&server.spec, Profile::Postfix);
        c.connect("h", &addr).unwrap();
        assert_eq!(c.helo("accept.helo").unwrap(), d(Decision::Accept));
        assert!(c.closed_by_mta());
        c = client(&server.spec, Profile::Postfix);
        c.connect("h", &addr).unwrap();
        assert_eq!(c.helo("h").unwrap(), d(Decision::Continue));
        for (sender, want) in [
            ("<tempfail@x>", d(Decision::Tempfail)),
            ("<discard@x>", d(Decision::Discard)),
            ("<accept@x>", d(Decision::Accept)),
        ] {
            assert_eq!(c.mail(sender).unwrap(), want, "{sender}");
            c.abort().unwrap();
        }
        let r = c.mail("<reject@x>").unwrap();
        assert_eq!(r.reply_text(), Some(&b"550 5.7.1 sender refused"[..]));
        c.abort().unwrap();
        assert_eq!(c.mail("<a@x>").unwrap(), d(Decision::Continue));
        assert_eq!(c.rcpt("<reject@x>").unwrap(), d(Decision::Reject));
        assert_eq!(c.rcpt("<tempfail@x>").unwrap().reply_code(), Some(451));
        assert_eq!(c.rcpt("<ok@x>").unwrap(), d(Decision::Continue));
        assert_eq!(c.data().unwrap(), d(Decision::Continue));
        assert_eq!(c.header("Subject", "s").unwrap(), d(Decision::Continue));
        assert_eq!(c.eoh().unwrap(), d(Decision::Continue));
        assert_eq!(c.body("SKIP the rest").unwrap(), d(Decision::Skip));
        let eom = c.eom().unwrap();
        assert_eq!(eom.decision, Decision::Continue);
        assert_eq!(eom.progress, 1);
        assert_eq!(eom.added_header("X-Body-Bytes"), Some(&b"13"[..]));
        c.abort().unwrap();
        let r = c.unknown("XFOO").unwrap();
        assert_eq!(r.reply_text(), Some(&b"500 5.5.1 what?"[..]));
        c.quit().unwrap();
    });
}

#[test]
fn send_message_with_every_modification_over_unix() {
    watchdog(LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let listen = format!("unix:{}", dir.path().join("judge.sock").display());
        let server = ServerGuard::start(&listen, Judge::default);
        let mut c = client(&server.spec, Profile::Postfix);
        let msg = Message::parse(b"Subject: hello\nX-Old: 1\nX-Old: 2\nX-Old: 3\n\nold body\n");
        let env = Envelope::new("a@x")
            .rcpt("keep@x")
            .rcpt("reject@x")
            .rcpt("remove@x");
        let t = c.send_message(&env, &msg).unwrap();
        assert_eq!(t.verdict, Verdict::Quarantine(b"judged".to_vec()));
        assert_eq!(t.accepted_rcpts, [0, 2]);
        let eom = t.eom.as_ref().unwrap();
        let body = [&b"new body\r\n"[..], &[b'z'; 100_000]].concat();
        let want = vec![
            Modification::AddHeader {
                name: b"X-Body-Bytes".to_vec(),
                value: b"10".to_vec(),
            },
            Modification::InsertHeader {
                index: 0,
                name: b"X-Top".to_vec(),
                value: b"1".to_vec(),
            },
            Modification::ChangeHeader {
                index: 1,
                name: b"Subject".to_vec(),
                value: b"[judged] hello".to_vec(),
            },
            Modification::ChangeHeader {
                index: 2,
                name: b"X-Old".to_vec(),
                value: vec![],
            },
            Modification::AddRcpt(b"<added@x>".to_vec()),
            Modification::AddRcptWithArgs {
                rcpt: b"<added-args@x>".to_vec(),
                args: Some(b"NOTIFY=NEVER".to_vec()),
            },
            Modification::DeleteRcpt(b"<remove@x>".to_vec()),
            Modification::ChangeFrom {
                from: b"<new-sender@x>".to_vec(),
                args: Some(b"RET=HDRS".to_vec()),
            },
            Modification::ReplaceBody(body.clone()),
            Modification::Quarantine(b"judged".to_vec()),
        ];
        assert_eq!(eom.modifications, want);
        let out = t.delivered(ApplyRules::Postfix, &msg, &env).unwrap();
        let mut text = b"X-Top: 1\r\nSubject: [judged] hello\r\nX-Old: 1\r\nX-Old: 3\r\nX-Body-Bytes: 10\r\n\r\n".to_vec();
        text.extend_from_slice(&body);
        text.extend_from_slice(b"\r\n"); // Postfix ends the last line
        assert!(
            out.message.to_bytes() == text,
            "the delivered message differs"
        );
        let rcpts: Vec<String> = out
            .envelope
            .recipients
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(
            rcpts,
            ["<keep@x>", "<added@x>", "<added-args@x> NOTIFY=NEVER"]
        );
        assert_eq!(out.envelope.sender.to_string(), "<new-sender@x> RET=HDRS");
        assert_eq!(out.quarantine.as_deref(), Some(&b"judged"[..]));

        // Later messages on the same connection: per-message state was reset.
        for (subject, verdict) in [
            ("eom-reject", "reject at eom: 554 5.7.1 content refused"),
            ("eoh-tempfail", "tempfail at eoh"),
        ] {
            let m = Message::new()
                .with_header("Subject", subject)
                .with_body("b\n");
            let t = c.send_message(&env, &m).unwrap();
            assert_eq!(t.verdict.to_string(), verdict);
        }
        for (action, verdict) in [
            ("reject", "reject at header"),
            ("accept", "accept"),
            ("discard", "discard at header"),
        ] {
            let m = Message::new()
                .with_header("X-Action", action)
                .with_body("b\n");
            let t = c.send_message(&env, &m).unwrap();
            assert_eq!(t.verdict.to_string(), verdict);
            assert!(t.eom.is_none());
        }
        c.quit().unwrap();
    });
}

#[test]
fn sendmail_profile_against_our_server() {
    watchdog(LIMIT, || {
        let server = ServerGuard::start("inet:0@127.0.0.1", Judge::default);
        let mut c = client(&server.spec, Profile::Sendmail);
        let env = Envelope::new("a@x").rcpt("keep@x");
        // Sendmail sends the queue id at MAIL: the milter still sees it at DATA.
        let t = c
            .send_message(&env, &Message::parse(b"Subject: s\n\nbody\n"))
            .unwrap();
        assert_eq!(t.verdict, Verdict::Quarantine(b"judged".to_vec()));
        assert!(!t.aborted);
        c.quit().unwrap();
    });
}

/// Derived: no-reply headers, skipped everything else but end of message.
#[derive(milter_blocking::Milter, Default)]
#[milter(actions(add_header))]
struct Counter {
    #[milter(per_message)]
    headers: usize,
}

#[milter_blocking::handlers]
impl milter_blocking::Milter for Counter {
    fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) {
        self.headers += 1;
    }

    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        ctx.add_header("X-Headers", self.headers.to_string())?;
        Ok(Status::Continue)
    }
}

#[test]
fn derived_milter_negotiates_skips_and_no_reply() {
    watchdog(LIMIT, || {
        let server = ServerGuard::start("inet:0@127.0.0.1", Counter::default);
        let mut c = client(&server.spec, Profile::Postfix);
        let n = c.negotiated().clone();
        assert_eq!(n.no_reply, Stages::HEADER);
        assert!(n
            .skipped
            .contains(Stages::CONNECT | Stages::MAIL | Stages::BODY));
        let msg = Message::parse(b"A: 1\nB: 2\nC: 3\n\nbody\n");
        let env = Envelope::new("a@x").rcpt("b@x");
        for i in 0..3 {
            let t = c.send_message(&env, &msg).unwrap();
            let connect = t.response(Stage::Connect);
            assert_eq!(
                connect.is_some(),
                i == 0,
                "connect only on the first message"
            );
            assert_eq!(t.response(Stage::Header), Some(&Response::NoReply));
            assert!(t.eom.unwrap().has_added_header("X-Headers", "3"));
            assert_eq!(t.verdict, Verdict::Accept);
        }
        c.quit().unwrap();
    });
}

#[test]
fn many_clients_at_once() {
    watchdog(Duration::from_secs(60), || {
        let server = ServerGuard::start("inet:0@127.0.0.1", Counter::default);
        let spec = server.spec.clone();
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let spec = spec.clone();
                std::thread::spawn(move || {
                    let mut c = client(&spec, Profile::Postfix);
                    let msg = Message::parse(b"A: 1\n\nbody\n");
                    let env = Envelope::new("a@x").rcpt("b@x");
                    for _ in 0..25 {
                        let t = c.send_message(&env, &msg).unwrap();
                        assert!(t.eom.unwrap().has_added_header("X-Headers", "1"));
                    }
                    c.quit().unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
}

/// An MTA announcing a future version (7, 8) gets version 6 from our server.
#[test]
fn future_version_announcements_get_version_6() {
    use milter_blocking::client::Client;
    let server = milter_blocking::Server::builder()
        .listen("inet:0@127.0.0.1")
        .expect("bind")
        .build(FutureProof::default)
        .expect("server");
    let spec = server.local_spec();
    let handle = server.handle();
    let t = std::thread::spawn(move || server.run());
    for version in [7, 8] {
        let c = Client::builder()
            .offer_version(version)
            .open(spec.clone())
            .expect("negotiation");
        assert_eq!(c.negotiated().version, 6);
        c.quit().expect("quit");
    }
    handle.shutdown(std::time::Duration::from_secs(5));
    t.join().expect("server thread").expect("run");
}

#[derive(milter_blocking::Milter, Default)]
struct FutureProof;

#[milter_blocking::handlers]
impl milter_blocking::Milter for FutureProof {}
