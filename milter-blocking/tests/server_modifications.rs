//! Every modification at end of message reaches the MTA, in order; actions that
//! were not negotiated are refused with a typed error and never sent.
#![allow(clippy::unwrap_used)]

mod common;

use common::{watchdog, Mta, TestServer};
use milter_blocking::milter_core::client::Decision;
use milter_blocking::milter_core::{ActionError, Modification, OptNeg};
use milter_blocking::{Actions, EomContext, HandlerResult, Milter, ModifyError, Spec, Status};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Everything;

impl milter_blocking::Declaration for Everything {
    const ACTIONS: milter_blocking::Actions = Actions::all().difference(Actions::SET_SYMBOL_LIST);
}
impl milter_blocking::action::AddHeader for Everything {}
impl milter_blocking::action::ChangeBody for Everything {}
impl milter_blocking::action::AddRcpt for Everything {}
impl milter_blocking::action::DeleteRcpt for Everything {}
impl milter_blocking::action::ChangeHeader for Everything {}
impl milter_blocking::action::Quarantine for Everything {}
impl milter_blocking::action::ChangeFrom for Everything {}
impl milter_blocking::action::AddRcptWithArgs for Everything {}

#[milter_blocking::handlers]
impl Milter for Everything {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec {
            actions: Actions::all().difference(Actions::SET_SYMBOL_LIST),
            ..Spec::ALL_STAGES
        };
    }

    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        ctx.add_header("X-Added", "yes")?;
        ctx.insert_header(0, "X-Top", "1")?;
        ctx.change_header("Subject", 1, "[tag] hello")?;
        ctx.delete_header("X-Old", 2)?;
        ctx.add_rcpt("<new@example.org>")?;
        ctx.add_rcpt_with_args("<args@example.org>", "NOTIFY=NEVER ORCPT=rfc822;x@y")?;
        ctx.delete_rcpt("<Old@Example.org>")?;
        ctx.change_from("<>", None)?;
        ctx.change_from("<bounce@example.org>", Some("RET=HDRS"))?;
        ctx.quarantine("held for review")?;
        ctx.progress()?;
        ctx.replace_body(b"new body\r\n")?;
        ctx.progress()?; // deferred until the body run ends
        ctx.replace_body(vec![b'z'; 200_000])?;
        Ok(Status::Continue)
    }
}

fn m(name: &str, value: &str) -> (Vec<u8>, Vec<u8>) {
    (name.as_bytes().to_vec(), value.as_bytes().to_vec())
}

#[test]
fn every_modification_reaches_the_mta_in_order() {
    watchdog(Duration::from_secs(30), || {
        let server = TestServer::start(|| Everything);
        let mut mta = Mta::connect(&server.spec);
        assert_eq!(mta.negotiated().actions.bits(), 0xFF);
        mta.message_until_eom();
        let eom = mta.eom();
        assert_eq!(eom.decision, Decision::Continue);
        assert_eq!(eom.progress, 2);
        let (n, v) = m("X-Added", "yes");
        let mut body = b"new body\r\n".to_vec();
        body.extend(std::iter::repeat_n(b'z', 200_000));
        let want = vec![
            Modification::AddHeader { name: n, value: v },
            Modification::InsertHeader {
                index: 0,
                name: b"X-Top".to_vec(),
                value: b"1".to_vec(),
            },
            Modification::ChangeHeader {
                index: 1,
                name: b"Subject".to_vec(),
                value: b"[tag] hello".to_vec(),
            },
            Modification::ChangeHeader {
                index: 2,
                name: b"X-Old".to_vec(),
                value: vec![],
            },
            Modification::AddRcpt(b"<new@example.org>".to_vec()),
            Modification::AddRcptWithArgs {
                rcpt: b"<args@example.org>".to_vec(),
                args: Some(b"NOTIFY=NEVER ORCPT=rfc822;x@y".to_vec()),
            },
            Modification::DeleteRcpt(b"<Old@Example.org>".to_vec()),
            Modification::ChangeFrom {
                from: b"<>".to_vec(),
                args: None,
            },
            Modification::ChangeFrom {
                from: b"<bounce@example.org>".to_vec(),
                args: Some(b"RET=HDRS".to_vec()),
            },
            Modification::Quarantine(b"held for review".to_vec()),
            Modification::ReplaceBody(body),
        ];
        assert_eq!(eom.modifications, want);
    });
}

type Seen = Arc<Mutex<Vec<String>>>;

/// Declares the other actions as optional, then drops them at negotiation (as
/// when the MTA does not offer them): the calls compile and fail at run time.
struct HeadersOnly(Seen);

impl milter_blocking::Declaration for HeadersOnly {
    const ACTIONS: milter_blocking::Actions = Actions::ADD_HEADER;
    const OPTIONAL_ACTIONS: milter_blocking::Actions = Actions::CHANGE_FROM
        .union(Actions::CHANGE_HEADER)
        .union(Actions::QUARANTINE)
        .union(Actions::CHANGE_BODY)
        .union(Actions::ADD_RCPT);
}
impl milter_blocking::action::AddHeader for HeadersOnly {}
impl milter_blocking::action::ChangeFrom for HeadersOnly {}
impl milter_blocking::action::ChangeHeader for HeadersOnly {}
impl milter_blocking::action::Quarantine for HeadersOnly {}
impl milter_blocking::action::ChangeBody for HeadersOnly {}
impl milter_blocking::action::AddRcpt for HeadersOnly {}

#[milter_blocking::handlers]
impl Milter for HeadersOnly {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec {
            actions: Actions::ADD_HEADER,
            ..Spec::ALL_STAGES
        };
    }

    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        let mut seen = self.0.lock().unwrap();
        for r in [
            ctx.change_from("<x@y>", None),
            ctx.delete_header("Subject", 1),
            ctx.quarantine("q"),
            ctx.replace_body("b"),
            ctx.add_rcpt("<r@s>"),
        ] {
            match r {
                Err(ModifyError::Action(ActionError::NotNegotiated { action, .. })) => {
                    seen.push(format!("{action:?}"))
                }
                other => seen.push(format!("unexpected {other:?}")),
            }
        }
        ctx.add_header("X-Ok", "1")?;
        Ok(Status::Continue)
    }
}

#[test]
fn actions_not_negotiated_are_refused_and_never_sent() {
    watchdog(Duration::from_secs(30), || {
        let seen: Seen = Arc::default();
        let s = seen.clone();
        let server = TestServer::start(move || HeadersOnly(s.clone()));
        let mut mta = Mta::connect(&server.spec);
        assert_eq!(mta.negotiated().actions, Actions::ADD_HEADER);
        mta.message_until_eom();
        let eom = mta.eom();
        assert_eq!(
            eom.modifications,
            [Modification::AddHeader {
                name: b"X-Ok".to_vec(),
                value: b"1".to_vec()
            }]
        );
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                "Actions(CHANGE_FROM)",
                "Actions(CHANGE_HEADER)",
                "Actions(QUARANTINE)",
                "Actions(CHANGE_BODY)",
                "Actions(ADD_RCPT)"
            ]
        );
    });
}

#[test]
fn required_actions_the_mta_lacks_fail_the_connection() {
    watchdog(Duration::from_secs(30), || {
        let server = TestServer::start(|| Everything);
        let offer = OptNeg {
            version: 2,
            actions: Actions::V2,
            protocol: milter_blocking::ProtocolOpts::V2,
        };
        let mut mta = Mta::open(&server.spec, offer);
        assert!(mta.negotiate().is_err(), "milter must close: it needs 0xFF");
    });
}

struct InterruptedBody(Seen);

impl milter_blocking::Declaration for InterruptedBody {
    const ACTIONS: milter_blocking::Actions = Actions::CHANGE_BODY.union(Actions::ADD_HEADER);
}
impl milter_blocking::action::AddHeader for InterruptedBody {}
impl milter_blocking::action::ChangeBody for InterruptedBody {}

#[milter_blocking::handlers]
impl Milter for InterruptedBody {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec {
            actions: Actions::CHANGE_BODY.union(Actions::ADD_HEADER),
            ..Spec::ALL_STAGES
        };
    }

    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        ctx.replace_body("a")?;
        ctx.add_header("X-Between", "1")?;
        let r = ctx.replace_body("b");
        self.0.lock().unwrap().push(format!("{r:?}"));
        Ok(Status::Continue)
    }
}

#[test]
fn a_second_body_run_is_refused() {
    watchdog(Duration::from_secs(30), || {
        let seen: Seen = Arc::default();
        let s = seen.clone();
        let server = TestServer::start(move || InterruptedBody(s.clone()));
        let mut mta = Mta::connect(&server.spec);
        mta.message_until_eom();
        let eom = mta.eom();
        assert_eq!(eom.modifications.len(), 2);
        assert_eq!(seen.lock().unwrap()[0], "Err(Action(BodyRunInterrupted))");
    });
}
