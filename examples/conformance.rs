//! `conformance`: a milter whose behaviour is fixed exactly (see
//! `docs/CONFORMANCE.md`), so that it can be run behind real MTAs and its effect
//! checked from outside, message by message. It exercises every callback, every
//! reply and every modification of protocol version 6.
//!
//! Run: `cargo run -p milter-examples --bin conformance -- inet:7357@127.0.0.1`
//! (the default socket when none is given).
//!
//! Postfix (`main.cf`): `smtpd_milters = inet:127.0.0.1:7357`,
//! `milter_protocol = 6`, `milter_default_action = tempfail`.
//! Sendmail (`.mc`): `INPUT_MAIL_FILTER(`conformance', `S=inet:7357@127.0.0.1, F=T')`.

use milter_blocking::milter_core::ActionError;
use milter_blocking::{
    bare_address, handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header,
    Milter, ModifyError, Status,
};

/// What an `X-Conformance-Action` header asked for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Action {
    #[default]
    None,
    Discard,
    Reject,
    Accept,
}

/// Everything that is emptied at MAIL, on abort and after end of message.
#[derive(Debug, Default)]
struct Message {
    sender: Vec<u8>,
    eight_bit: bool,
    rcpts: Vec<Vec<u8>>,
    headers: usize,
    subject: Option<Vec<u8>>,
    delete_me: bool,
    action: Action,
    body_bytes: u64,
    queue_id: Option<String>,
}

#[derive(Milter, Default)]
#[milter(
    optional_actions(
        add_header,
        change_header,
        add_rcpt,
        add_rcpt_with_args,
        delete_rcpt,
        change_from,
        change_body,
        quarantine
    ),
    macros(
        connect = "{j} {daemon_name} {client_addr}",
        mail = "{i} {auth_authen} {mail_addr}",
        rcpt = "{rcpt_addr}",
        eom = "{i} {msg_id}"
    )
)]
struct Conformance {
    /// Per connection: the client's host name and address.
    client: Option<(String, String)>,
    #[milter(per_message)]
    msg: Message,
}

/// Compares an address with surrounding space and one pair of brackets removed,
/// ignoring case.
fn addr_is(addr: &[u8], want: &str) -> bool {
    bare_address(addr).eq_ignore_ascii_case(want.as_bytes())
}

/// Modifications whose action the MTA did not offer are left out, not failed.
fn unless_unavailable(r: Result<(), ModifyError>) -> Result<(), ModifyError> {
    match r {
        Err(ModifyError::Action(ActionError::NotNegotiated { .. })) => Ok(()),
        other => other,
    }
}

/// The 3,600,000-byte replacement body: 200,000 lines of 18 bytes.
const BIG_LINE: &[u8] = b"0123456789abcdef\r\n";
const BIG_LINES: usize = 200_000;

impl Conformance {
    fn remember_queue_id(&mut self, ctx: &Context<'_>) {
        if let Some(q) = ctx.queue_id() {
            self.msg.queue_id = Some(q.to_string());
        }
    }

    fn verdict(&self, verdict: &str) {
        let rcpts: Vec<_> = self
            .msg
            .rcpts
            .iter()
            .map(|r| String::from_utf8_lossy(r))
            .collect();
        log::info!(
            "queue id {}, sender {}, recipients [{}], verdict {verdict}",
            self.msg.queue_id.as_deref().unwrap_or("unknown"),
            String::from_utf8_lossy(&self.msg.sender),
            rcpts.join(", ")
        );
    }
}

#[handlers]
impl Milter for Conformance {
    fn connect(&mut self, _ctx: &mut Context<'_>, host: &[u8], addr: ConnectAddr<'_>) -> Status {
        self.client = Some((String::from_utf8_lossy(host).into_owned(), addr.to_string()));
        Status::Continue
    }

    fn helo(&mut self, _ctx: &mut Context<'_>, name: &[u8]) -> HandlerResult {
        if name.eq_ignore_ascii_case(b"reject.helo.test") {
            return Ok(Status::reply(
                550,
                Some("5.7.0"),
                "helo rejected by conformance milter",
            )?);
        }
        Ok(Status::Continue)
    }

    fn mail(&mut self, ctx: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
        self.remember_queue_id(ctx);
        self.msg.sender = from.address.to_vec();
        if addr_is(from.address, "reject-mail@example.test") {
            self.verdict("reject at mail");
            return Ok(Status::reply(
                550,
                Some("5.7.1"),
                "mail rejected by conformance milter",
            )?);
        }
        if addr_is(from.address, "tempfail-mail@example.test") {
            self.verdict("tempfail at mail");
            return Ok(Status::reply(
                451,
                Some("4.7.1"),
                "mail tempfailed by conformance milter",
            )?);
        }
        self.msg.eight_bit = from.has_arg("BODY=8BITMIME");
        Ok(Status::Continue)
    }

    fn rcpt(&mut self, ctx: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> HandlerResult {
        self.remember_queue_id(ctx);
        if addr_is(rcpt.address, "reject-rcpt@example.test") {
            return Ok(Status::reply(
                550,
                Some("5.1.1"),
                "rcpt rejected by conformance milter",
            )?);
        }
        if addr_is(rcpt.address, "tempfail-rcpt@example.test") {
            return Ok(Status::reply(
                451,
                Some("4.7.1"),
                "rcpt tempfailed by conformance milter",
            )?);
        }
        if addr_is(rcpt.address, "discard-rcpt@example.test") {
            self.verdict("discard at rcpt");
            return Ok(Status::Discard);
        }
        self.msg.rcpts.push(rcpt.address.to_vec());
        Ok(Status::Continue)
    }

    fn data(&mut self, ctx: &mut Context<'_>) -> Status {
        self.remember_queue_id(ctx);
        Status::Continue
    }

    fn header(&mut self, ctx: &mut Context<'_>, h: &Header<'_>) -> Status {
        self.remember_queue_id(ctx);
        if h.is("X-Conformance-Action") {
            let action = match h.value.trim_ascii().to_ascii_lowercase().as_slice() {
                b"discard" => Some(Action::Discard),
                b"reject" => Some(Action::Reject),
                b"accept" => Some(Action::Accept),
                _ => None,
            };
            if let Some(a) = action {
                self.msg.action = a;
                return Status::Continue;
            }
        }
        self.msg.headers += 1;
        if h.is("Subject") && self.msg.subject.is_none() {
            self.msg.subject = Some(h.value.to_vec());
        }
        if h.is("X-Delete-Me") {
            self.msg.delete_me = true;
        }
        Status::Continue
    }

    fn eoh(&mut self, ctx: &mut Context<'_>) -> HandlerResult {
        self.remember_queue_id(ctx);
        Ok(match self.msg.action {
            Action::Discard => {
                self.verdict("discard at eoh");
                Status::Discard
            }
            Action::Reject => {
                self.verdict("reject at eoh");
                Status::reply(554, Some("5.7.1"), "message rejected by conformance milter")?
            }
            Action::Accept => {
                self.verdict("accept at eoh");
                Status::Accept
            }
            Action::None => Status::Continue,
        })
    }

    fn body(&mut self, ctx: &mut Context<'_>, chunk: &[u8]) -> Status {
        self.remember_queue_id(ctx);
        self.msg.body_bytes += chunk.len() as u64;
        Status::Continue
    }

    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        if let Some(q) = ctx.queue_id() {
            self.msg.queue_id = Some(q.to_string());
        }
        let m = &self.msg;
        ctx.progress()?;
        unless_unavailable(ctx.add_header("X-Conformance", "seen"))?;
        unless_unavailable(ctx.insert_header(0, "X-Conformance-First", "1"))?;
        if let Some(subject) = &m.subject {
            let start = subject
                .iter()
                .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                .unwrap_or(subject.len());
            let value = [b"[filtered] ".as_slice(), &subject[start..]].concat();
            unless_unavailable(ctx.change_header("Subject", 1, value))?;
        }
        if m.delete_me {
            unless_unavailable(ctx.delete_header("X-Delete-Me", 1))?;
        }
        let qid = m.queue_id.as_deref().unwrap_or("unknown");
        unless_unavailable(ctx.add_header("X-Conformance-Queue-Id", qid))?;
        unless_unavailable(ctx.add_header("X-Conformance-Body-Bytes", m.body_bytes.to_string()))?;
        unless_unavailable(ctx.add_header("X-Conformance-Rcpts", m.rcpts.len().to_string()))?;
        unless_unavailable(ctx.add_header("X-Conformance-Headers", m.headers.to_string()))?;
        unless_unavailable(ctx.add_rcpt("<added@example.test>"))?;
        if m.eight_bit {
            unless_unavailable(
                ctx.add_rcpt_with_args("<added-args@example.test>", "NOTIFY=NEVER"),
            )?;
        }
        // Every accepted recipient that is removed@example.test, each exactly as
        // the MTA presented it.
        for r in m
            .rcpts
            .iter()
            .filter(|r| addr_is(r, "removed@example.test"))
        {
            unless_unavailable(ctx.delete_rcpt(r))?;
        }
        if addr_is(&m.sender, "change-from@example.test") {
            unless_unavailable(ctx.change_from("<changed-from@example.test>", None))?;
        }
        let subject = m.subject.as_deref().unwrap_or_default();
        let contains = |needle: &[u8]| subject.windows(needle.len()).any(|w| w == needle);
        if contains(b"REPLACE-BODY") {
            unless_unavailable(ctx.replace_body(b"REPLACED BODY\r\n"))?;
        }
        if contains(b"BIG-BODY") {
            // Streamed: 3,640 lines (65,520 bytes) per call, each one packet.
            let chunk = BIG_LINE.repeat(3_640);
            let mut left = BIG_LINES;
            while left > 0 {
                let n = left.min(3_640);
                unless_unavailable(ctx.replace_body(&chunk[..n * BIG_LINE.len()]))?;
                left -= n;
            }
        }
        if contains(b"QUARANTINE") {
            unless_unavailable(ctx.quarantine("conformance quarantine"))?;
        }
        self.verdict("continue at eom");
        Ok(Status::Continue)
    }

    fn abort(&mut self, _ctx: &mut Context<'_>) {
        if !self.msg.sender.is_empty() {
            self.verdict("aborted");
        }
    }

    fn close(&mut self, _ctx: &mut Context<'_>) {
        self.client = None;
    }

    fn unknown(&mut self, _ctx: &mut Context<'_>, _line: &[u8]) -> HandlerResult {
        Ok(Status::reply(
            500,
            Some("5.5.1"),
            "command not recognised by conformance milter",
        )?)
    }
}

fn main() {
    milter_examples::run("conformance", "inet:7357@127.0.0.1", Conformance::default);
}
