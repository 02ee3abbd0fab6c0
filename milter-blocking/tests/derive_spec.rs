//! `#[derive(Milter)]` and `#[handlers]`: the exact `SPEC` each kind of milter gets, and what it
//! negotiates on the wire with MTAs that offer everything or less.

// Helpers outside `#[test]` functions unwrap too.
#![allow(clippy::unwrap_used)]

use milter_blocking::milter_core::client::{ClientNegotiated, ClientSession};
use milter_blocking::milter_core::filter::{Event, FilterSession};
use milter_blocking::milter_core::frame::FrameDecoder;
use milter_blocking::milter_core::{Negotiated, SymbolList};
use milter_blocking::{
    Actions, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerError, HandlerResult, Header,
    MacroStage, Milter, OptNeg, ProtocolOpts, Spec, Stages, Status,
};
use std::borrow::Cow;

/// Postfix with `milter_protocol = 2`: no NR bits, no NODATA/NOUNKNOWN, v2
/// actions (no change_from, no add_rcpt_with_args, no symbol lists).
const POSTFIX_V2: OptNeg = OptNeg {
    version: 2,
    actions: Actions::V2,
    protocol: ProtocolOpts::V2,
};

/// Negotiates `M::SPEC` between an in-memory MTA and milter session, through the
/// bytes; returns what each side agreed.
fn negotiate<M: Milter>(offer: OptNeg) -> (Negotiated, ClientNegotiated) {
    let mut mta = ClientSession::new(offer);
    let mut milter = FilterSession::new();
    let mut to_milter = FrameDecoder::new();
    to_milter.push(mta.output());
    mta.clear_output();
    let frame = to_milter.next_frame().unwrap().unwrap();
    let input = milter.handle(frame).unwrap();
    assert!(matches!(input.event, Some(Event::Negotiate(_))));
    let agreed = milter.negotiate(&M::SPEC).unwrap().clone();
    let mut to_mta = FrameDecoder::new();
    to_mta.push(milter.output());
    let reply = to_mta.next_frame().unwrap().unwrap();
    let seen = mta.receive_negotiation(reply).unwrap().clone();
    assert_eq!(seen.protocol, agreed.protocol);
    assert_eq!(seen.actions, agreed.actions);
    (agreed, seen)
}

fn opts(bits: u32) -> ProtocolOpts {
    ProtocolOpts::from_bits_retain(bits)
}

/// Every skip bit a version-6 MTA offers.
const ALL_NO: u32 = 0x37F;

#[derive(Milter, Default)]
struct Nothing;

#[milter_blocking::handlers]
impl Milter for Nothing {}

#[test]
fn no_handlers_skip_every_stage() {
    assert_eq!(Nothing::SPEC, Spec::NONE);
    let (n, mta) = negotiate::<Nothing>(OptNeg::POSTFIX_3);
    assert_eq!(n.protocol, opts(ALL_NO));
    assert!(n.actions.is_empty());
    assert_eq!(
        mta.skipped,
        Stages::all().difference(Stages::EOM),
        "everything but end of message is skipped"
    );
}

#[derive(Milter, Default)]
struct OneHandler;

#[milter_blocking::handlers]
impl Milter for OneHandler {
    fn rcpt(&mut self, _ctx: &mut Context<'_>, _rcpt: &EnvelopeAddr<'_>) -> Status {
        Status::Continue
    }
}

#[test]
fn one_handler_keeps_its_stage() {
    assert_eq!(
        OneHandler::SPEC,
        Spec {
            handled: Stages::RCPT,
            ..Spec::NONE
        }
    );
    let (n, _) = negotiate::<OneHandler>(OptNeg::POSTFIX_3);
    assert_eq!(n.protocol, opts(ALL_NO & !ProtocolOpts::NO_RCPT.bits()));
}

#[derive(Milter, Default)]
struct Several;

#[milter_blocking::handlers]
impl Milter for Several {
    fn helo(&mut self, _ctx: &mut Context<'_>, _name: &[u8]) -> HandlerResult {
        Ok(Status::Continue)
    }
    fn mail(
        &mut self,
        _ctx: &mut Context<'_>,
        _from: &EnvelopeAddr<'_>,
    ) -> Result<Status, std::io::Error> {
        Ok(Status::Continue)
    }
    fn header(&mut self, _ctx: &mut Context<'_>, _header: &Header<'_>) -> Status {
        Status::Continue
    }
    fn eom(&mut self, _ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        Ok(Status::Accept)
    }
}

#[test]
fn several_handlers_keep_their_stages() {
    assert_eq!(
        Several::SPEC,
        Spec {
            handled: Stages::HELO | Stages::MAIL | Stages::HEADER | Stages::EOM,
            ..Spec::NONE
        }
    );
    let (n, mta) = negotiate::<Several>(OptNeg::POSTFIX_3);
    let kept = ProtocolOpts::NO_HELO | ProtocolOpts::NO_MAIL | ProtocolOpts::NO_HEADERS;
    assert_eq!(n.protocol, opts(ALL_NO).difference(kept));
    assert_eq!(
        mta.skipped,
        Stages::CONNECT
            | Stages::RCPT
            | Stages::DATA
            | Stages::EOH
            | Stages::BODY
            | Stages::UNKNOWN
    );
    assert!(mta.no_reply.is_empty());
}

#[derive(Milter, Default)]
struct Everything {
    calls: Vec<&'static str>,
}

#[milter_blocking::handlers]
impl Milter for Everything {
    fn negotiate(&mut self, _offer: &OptNeg, _spec: &mut Spec) -> HandlerResult<()> {
        self.calls.push("negotiate");
        Ok(())
    }
    fn connect(&mut self, _: &mut Context<'_>, _: &[u8], _: ConnectAddr<'_>) -> HandlerResult {
        Ok(Status::Continue)
    }
    fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> HandlerResult {
        Ok(Status::Continue)
    }
    fn mail(&mut self, _: &mut Context<'_>, _: &EnvelopeAddr<'_>) -> HandlerResult {
        Ok(Status::Continue)
    }
    fn rcpt(&mut self, _: &mut Context<'_>, _: &EnvelopeAddr<'_>) -> HandlerResult {
        Ok(Status::Continue)
    }
    fn data(&mut self, _: &mut Context<'_>) -> HandlerResult {
        Ok(Status::Continue)
    }
    fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> HandlerResult {
        Ok(Status::Continue)
    }
    fn eoh(&mut self, _: &mut Context<'_>) -> HandlerResult {
        Ok(Status::Continue)
    }
    fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> HandlerResult {
        Ok(Status::Continue)
    }
    fn eom(&mut self, _: &mut EomContext<'_, Self>) -> HandlerResult {
        Ok(Status::Continue)
    }
    fn unknown(&mut self, _: &mut Context<'_>, _: &[u8]) -> HandlerResult {
        Ok(Status::Continue)
    }
    fn abort(&mut self, _: &mut Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
    fn close(&mut self, _: &mut Context<'_>) -> Result<(), HandlerError> {
        Ok(())
    }
}

#[test]
fn all_handlers_ask_for_every_stage() {
    assert_eq!(Everything::SPEC, Spec::ALL_STAGES);
    let (n, mta) = negotiate::<Everything>(OptNeg::POSTFIX_3);
    assert!(n.protocol.is_empty());
    assert!(mta.skipped.is_empty());
    let mut e = Everything::default();
    let mut spec = Everything::SPEC;
    Milter::negotiate(&mut e, &OptNeg::POSTFIX_3, &mut spec).unwrap();
    assert_eq!(e.calls, ["negotiate"]);
}

#[derive(Milter, Default)]
struct NoReply;

#[milter_blocking::handlers]
impl Milter for NoReply {
    fn connect(&mut self, _: &mut Context<'_>, _: &[u8], _: ConnectAddr<'_>) {}
    fn rcpt(&mut self, _: &mut Context<'_>, _: &EnvelopeAddr<'_>) -> Status {
        Status::Continue
    }
    fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Result<(), std::io::Error> {
        Ok(())
    }
    fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> HandlerResult<()> {
        Ok(())
    }
    // End of message always gets a reply: `()` there only means "continue".
    fn eom(&mut self, _: &mut EomContext<'_, Self>) {}
}

#[test]
fn unit_handlers_get_no_reply_bits() {
    let handled = Stages::CONNECT | Stages::RCPT | Stages::HEADER | Stages::BODY | Stages::EOM;
    let no_reply = Stages::CONNECT | Stages::HEADER | Stages::BODY;
    assert_eq!(
        NoReply::SPEC,
        Spec {
            handled,
            no_reply,
            ..Spec::NONE
        }
    );
    let (n, mta) = negotiate::<NoReply>(OptNeg::POSTFIX_3);
    let nr = ProtocolOpts::NR_CONNECT | ProtocolOpts::NR_HEADER | ProtocolOpts::NR_BODY;
    let skip = ProtocolOpts::NO_HELO
        | ProtocolOpts::NO_MAIL
        | ProtocolOpts::NO_DATA
        | ProtocolOpts::NO_EOH
        | ProtocolOpts::NO_UNKNOWN;
    assert_eq!(n.protocol, nr | skip);
    assert_eq!(n.no_reply, no_reply);
    assert!(n.forced_continue.is_empty());
    assert_eq!(mta.no_reply, no_reply);
}

#[test]
fn an_old_mta_forces_continue_instead_of_no_reply() {
    let (n, mta) = negotiate::<NoReply>(POSTFIX_V2);
    assert_eq!(n.version, 2);
    // Only the skip bits of version 2 (no NODATA, NOUNKNOWN) and no NR bit.
    assert_eq!(
        n.protocol,
        ProtocolOpts::NO_HELO | ProtocolOpts::NO_MAIL | ProtocolOpts::NO_EOH
    );
    assert!(n.no_reply.is_empty());
    assert_eq!(
        n.forced_continue,
        Stages::CONNECT | Stages::HEADER | Stages::BODY
    );
    assert!(mta.no_reply.is_empty());
}

#[derive(Milter, Default)]
struct SharedReceivers;

#[milter_blocking::handlers]
impl Milter for SharedReceivers {
    fn mail(&mut self, _: &mut Context<'_>, _: &EnvelopeAddr<'_>) -> Status {
        Status::Continue
    }
    fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) {}
    fn eom(&mut self, _: &mut EomContext<'_, Self>) -> HandlerResult {
        Ok(Status::Continue)
    }
    fn close(&mut self, _: &mut Context<'_>) {}
}

#[test]
fn shared_receivers_are_handlers_too() {
    assert_eq!(
        SharedReceivers::SPEC,
        Spec {
            handled: Stages::MAIL | Stages::HEADER | Stages::EOM,
            no_reply: Stages::HEADER,
            ..Spec::NONE
        }
    );
}

macro_rules! one_action {
    ($($name:ident: $action:ident => $constant:ident,)*) => {
        $(
            #[derive(Milter, Default)]
            #[milter(actions($action))]
            struct $name;

            #[milter_blocking::handlers]
            impl Milter for $name {}
        )*

        #[test]
        fn each_action_name_sets_its_bit() {
            $(
                assert_eq!(
                    $name::SPEC,
                    Spec { actions: Actions::$constant, ..Spec::NONE },
                    stringify!($action)
                );
                let (n, mta) = negotiate::<$name>(OptNeg::POSTFIX_3);
                assert_eq!(n.actions, Actions::$constant);
                assert_eq!(mta.actions, Actions::$constant);
            )*
        }
    };
}

one_action! {
    AddHeader: add_header => ADD_HEADER,
    ChangeBody: change_body => CHANGE_BODY,
    AddRcpt: add_rcpt => ADD_RCPT,
    DeleteRcpt: delete_rcpt => DELETE_RCPT,
    ChangeHeader: change_header => CHANGE_HEADER,
    Quarantine: quarantine => QUARANTINE,
    ChangeFrom: change_from => CHANGE_FROM,
    AddRcptWithArgs: add_rcpt_with_args => ADD_RCPT_WITH_ARGS,
}

#[derive(Milter, Default)]
#[milter(actions(add_header, change_body, add_rcpt, delete_rcpt))]
#[milter(actions(change_header, quarantine, change_from, add_rcpt_with_args))]
struct AllActions;

#[milter_blocking::handlers]
impl Milter for AllActions {}

#[test]
fn actions_add_up_across_attributes() {
    assert_eq!(AllActions::SPEC.actions.bits(), 0xFF);
    let (n, _) = negotiate::<AllActions>(OptNeg::POSTFIX_3);
    assert_eq!(n.actions.bits(), 0xFF);
}

#[derive(Milter, Default)]
#[milter(
    actions(add_header),
    optional_actions(change_body, quarantine, add_rcpt_with_args)
)]
struct OptionalActions;

#[milter_blocking::handlers]
impl Milter for OptionalActions {}

#[test]
fn optional_actions_are_used_when_offered() {
    assert_eq!(
        OptionalActions::SPEC,
        Spec {
            actions: Actions::ADD_HEADER,
            optional_actions: Actions::CHANGE_BODY
                | Actions::QUARANTINE
                | Actions::ADD_RCPT_WITH_ARGS,
            ..Spec::NONE
        }
    );
    let (n, _) = negotiate::<OptionalActions>(OptNeg::POSTFIX_3);
    assert_eq!(n.actions.bits(), 0xA3);
    let (n, mta) = negotiate::<OptionalActions>(POSTFIX_V2);
    assert_eq!(n.actions.bits(), 0x23, "no add_rcpt_with_args before v6");
    assert_eq!(mta.actions.bits(), 0x23);
}

#[derive(Milter, Default)]
#[milter(options(header_leading_space), optional_options(skip, rcpt_rej))]
struct Options;

#[milter_blocking::handlers]
impl Milter for Options {
    fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status {
        Status::Skip
    }
}

#[test]
fn options_are_asked_for() {
    assert_eq!(
        Options::SPEC,
        Spec {
            handled: Stages::BODY,
            options: ProtocolOpts::HEADER_LEADING_SPACE,
            optional_options: ProtocolOpts::SKIP | ProtocolOpts::RCPT_REJ,
            ..Spec::NONE
        }
    );
    let (n, _) = negotiate::<Options>(OptNeg::POSTFIX_3);
    let caps = ProtocolOpts::HEADER_LEADING_SPACE | ProtocolOpts::SKIP | ProtocolOpts::RCPT_REJ;
    assert_eq!(
        n.protocol,
        caps | opts(ALL_NO & !ProtocolOpts::NO_BODY.bits())
    );
}

#[derive(Milter, Default)]
#[milter(macros(connect = "{j} {daemon_name}", mail = "{i}", eom = "{i} {msg_id}"))]
#[milter(macros(eoh = "  i   {mail_addr} "))]
struct Macros;

#[milter_blocking::handlers]
impl Milter for Macros {}

#[test]
fn macros_become_symbol_lists() {
    assert_eq!(
        Macros::SPEC,
        Spec::NONE
            .with_macros(MacroStage::Connect, "{j} {daemon_name}")
            .with_macros(MacroStage::Mail, "{i}")
            .with_macros(MacroStage::Eom, "{i} {msg_id}")
            .with_macros(MacroStage::Eoh, "i {mail_addr}")
    );
    assert!(matches!(Macros::SPEC.macros[5], Some(Cow::Borrowed(_))));
    let (n, mta) = negotiate::<Macros>(OptNeg::POSTFIX_3);
    assert_eq!(n.actions, Actions::SET_SYMBOL_LIST);
    let list = |index: u32, macros: &str| SymbolList {
        index,
        macros: macros.as_bytes().to_vec(),
    };
    assert_eq!(
        mta.symbol_lists,
        [
            list(0, "{j} {daemon_name}"),
            list(2, "{i}"),
            list(5, "{i} {msg_id}"),
            list(6, "i {mail_addr}"),
        ]
    );
    assert_eq!(mta.macros_for(MacroStage::Mail), Some(&b"{i}"[..]));
}

#[test]
fn an_old_mta_gets_no_symbol_lists() {
    let (n, mta) = negotiate::<Macros>(POSTFIX_V2);
    assert!(n.symbol_lists.is_empty());
    assert!(mta.symbol_lists.is_empty());
    assert!(n.actions.is_empty());
}

#[test]
fn an_old_mta_fails_required_actions_it_lacks() {
    let mut milter = FilterSession::new();
    let mut mta = ClientSession::new(POSTFIX_V2);
    let mut to_milter = FrameDecoder::new();
    to_milter.push(mta.output());
    mta.clear_output();
    milter
        .handle(to_milter.next_frame().unwrap().unwrap())
        .unwrap();
    assert!(milter.negotiate(&ChangeFrom::SPEC).is_err());
}

#[derive(Milter, Default)]
struct PerMessage {
    connections: u32,
    #[milter(per_message)]
    rcpts: Vec<String>,
    #[milter(per_message)]
    size: usize,
}

#[milter_blocking::handlers]
impl Milter for PerMessage {}

#[derive(Milter, Default)]
struct PerMessageTuple(u8, #[milter(per_message)] Option<String>);

#[milter_blocking::handlers]
impl Milter for PerMessageTuple {}

#[test]
fn reset_message_resets_per_message_fields_only() {
    use milter_blocking::Declaration;
    let mut m = PerMessage {
        connections: 3,
        rcpts: vec!["a".into()],
        size: 10,
    };
    m.reset_message();
    assert_eq!((m.connections, m.rcpts.len(), m.size), (3, 0, 0));
    let mut t = PerMessageTuple(7, Some("x".into()));
    t.reset_message();
    assert_eq!((t.0, t.1), (7, None));
}

/// A module that imports everything from the crate, the `Milter` trait included.
mod glob_import {
    use milter_blocking::*;

    #[derive(Milter, Default)]
    #[milter(actions(add_header))]
    pub struct Stamp {
        pub offers: Vec<u32>,
        #[milter(per_message)]
        pub rcpts: usize,
    }

    #[milter_blocking::handlers]
    impl Milter for Stamp {
        fn negotiate(&mut self, offer: &OptNeg, spec: &mut Spec) {
            self.offers.push(offer.version);
            spec.optional_actions |= Actions::QUARANTINE;
        }
        fn rcpt(&mut self, _ctx: &mut Context<'_>, _rcpt: &EnvelopeAddr<'_>) -> Status {
            self.rcpts += 1;
            Status::Continue
        }
        fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
            ctx.add_header("X-Rcpts", self.rcpts.to_string())?;
            Ok(Status::Accept)
        }
    }
}

/// A module that imports the trait (and the derive) by name.
mod named_import {
    use milter_blocking::{Context, Milter};

    #[derive(Milter, Default)]
    pub struct Quiet;

    #[milter_blocking::handlers]
    impl Milter for Quiet {
        fn close(&mut self, _ctx: &mut Context<'_>) {}
        fn abort(&mut self, _ctx: &mut Context<'_>) {}
        fn data(&mut self, _ctx: &mut Context<'_>) {}
    }
}

/// A module that imports neither.
mod no_import {
    #[derive(milter_blocking::Milter)]
    pub struct Bare;

    #[milter_blocking::handlers]
    impl milter_blocking::Milter for Bare {
        fn unknown(&mut self, _: &mut milter_blocking::Context<'_>, _: &[u8]) {}
    }
}

#[test]
fn handlers_work_whatever_is_imported() {
    use glob_import::Stamp;
    assert_eq!(
        Stamp::SPEC,
        Spec {
            handled: Stages::RCPT | Stages::EOM,
            actions: Actions::ADD_HEADER,
            ..Spec::NONE
        }
    );
    let mut s = Stamp::default();
    let mut spec = Stamp::SPEC;
    Milter::negotiate(&mut s, &OptNeg::POSTFIX_3, &mut spec);
    assert_eq!(s.offers, [6]);
    assert_eq!(spec.optional_actions, Actions::QUARANTINE);
    s.rcpts = 2;
    milter_blocking::Declaration::reset_message(&mut s);
    assert_eq!(s.rcpts, 0);

    assert_eq!(
        named_import::Quiet::SPEC,
        Spec {
            handled: Stages::DATA,
            no_reply: Stages::DATA,
            ..Spec::NONE
        }
    );
    assert_eq!(
        no_import::Bare::SPEC,
        Spec {
            handled: Stages::UNKNOWN,
            no_reply: Stages::UNKNOWN,
            ..Spec::NONE
        }
    );
    // Without a negotiate method the hook does nothing.
    let mut spec = Spec::NONE;
    let mut quiet = named_import::Quiet;
    let r = Milter::negotiate(&mut quiet, &OptNeg::POSTFIX_3, &mut spec);
    milter_blocking::UnitReturn::into_result(r).unwrap();
    assert_eq!(spec, Spec::NONE);
}

#[test]
fn spec_is_a_constant() {
    // Usable where only constants are: an array length.
    const SPEC: &Spec = &<glob_import::Stamp as Milter>::SPEC;
    const RCPT_BIT: usize = SPEC.handled.bits() as usize;
    assert_eq!(
        [0u8; RCPT_BIT].len(),
        (Stages::RCPT | Stages::EOM).bits() as usize
    );
}
