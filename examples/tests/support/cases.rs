//! The message cases of the interop tests, written once and run behind every MTA.
//!
//! A suite ([`run_postfix_suite`], [`run_sendmail_suite`]) starts the milter binary it is
//! given (the C reference on libmilter or our Rust example: any program taking a libmilter
//! socket spec), a recording [`MilterTap`] in front of it, a capturing [`SmtpSink`] and
//! one private MTA relaying to that sink, and then runs every case of [`CASES`] in order
//! against that one instance. A case sends real SMTP messages and checks, message by
//! message, the replies the client saw and what arrived at the sink (or sits in the
//! quarantine), against the behaviour fixed in `docs/CONFORMANCE.md`.
//!
//! Most checks go through one oracle, [`expect_filtered`]: from the message that was sent
//! and its envelope it computes the header block, envelope and body the conformance
//! milter must produce, and compares the delivered message with it exactly (header
//! order, folding and white space included).
//!
//! A failed case does not stop the suite: every case runs, each failure is printed with
//! the MTA, the case, the SMTP transcript, the milter conversation the tap recorded, the
//! MTA's log and the milter's log, and the suite fails at the end listing the failed
//! cases. Set `INTEROP_CASES=name,name` to run only some cases.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::milter_process::{
    build_c_milter, c_toolchain_available, free_port, missing_prerequisite, spawn_milter,
    MilterGuard,
};
use super::milter_tap::{MilterTap, TapSession};
use super::postfix::{self, Postfix, PostfixConfig};
use super::sendmail::{self, Sendmail, SendmailConfig};
use super::smtp::{DataReplies, Delivery, Reply, SmtpClient, SmtpSink};

/// How long a case waits for an accepted message to reach the sink.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// After the marker message of a "nothing delivered" check has arrived, how much longer
/// to wait for a message that should not come.
pub const ABSENCE_GRACE: Duration = Duration::from_millis(300);

/// The EHLO name the test client uses.
pub const CLIENT_NAME: &str = "client.interop.test";

/// The body of REPLACE-BODY.
pub const REPLACED_BODY: &[u8] = b"REPLACED BODY\r\n";

/// One line of the BIG-BODY replacement, and how many of them.
pub const BIG_BODY_LINE: &[u8] = b"0123456789abcdef\r\n";
/// Number of [`BIG_BODY_LINE`]s in the BIG-BODY replacement (3,600,000 bytes).
pub const BIG_BODY_LINES: usize = 200_000;

/// Which MTA a suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtaKind {
    /// A private Postfix (see `postfix.rs`).
    Postfix,
    /// A private Sendmail (see `sendmail.rs`).
    Sendmail,
}

impl MtaKind {
    /// Lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            MtaKind::Postfix => "postfix",
            MtaKind::Sendmail => "sendmail",
        }
    }

    /// The queue id in the reply to the final dot: Postfix `250 2.0.0 Ok: queued as ID`,
    /// Sendmail `250 2.0.0 ID Message accepted for delivery`.
    pub fn queue_id(self, reply: &Reply) -> Option<String> {
        let text = reply.last_text();
        match self {
            MtaKind::Postfix => text
                .split_once("queued as ")
                .map(|(_, id)| id.trim().to_owned()),
            MtaKind::Sendmail => text
                .strip_prefix("2.0.0 ")
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned),
        }
    }
}

/// The running MTA a suite talks to.
pub trait Mta {
    /// Which MTA this is.
    fn kind(&self) -> MtaKind;
    /// Where its SMTP server listens.
    fn smtp_addr(&self) -> SocketAddr;
    /// `Ok(Some(queue file))` if message `queue_id` is quarantined, `Ok(None)` if not.
    /// Postfix: the message is in the hold queue; the text is `postcat -q` of it.
    /// Sendmail: the queue file is `hf<id>` (not `qf<id>`); the text is that file, whose
    /// `q` line holds the reason.
    fn quarantined(&self, queue_id: &str) -> Result<Option<String>, String>;
    /// A mark for [`Mta::log_since`].
    fn log_mark(&self) -> usize;
    /// The MTA's log lines written since `mark`.
    fn log_since(&self, mark: usize) -> String;
}

impl Mta for Postfix {
    fn kind(&self) -> MtaKind {
        MtaKind::Postfix
    }

    fn smtp_addr(&self) -> SocketAddr {
        Postfix::smtp_addr(self)
    }

    fn quarantined(&self, queue_id: &str) -> Result<Option<String>, String> {
        match self.queue_of(queue_id)? {
            Some(queue) if queue == "hold" => self.postcat(queue_id).map(Some),
            _ => Ok(None),
        }
    }

    fn log_mark(&self) -> usize {
        self.log_len()
    }

    fn log_since(&self, mark: usize) -> String {
        Postfix::log_since(self, mark)
    }
}

impl Mta for Sendmail {
    fn kind(&self) -> MtaKind {
        MtaKind::Sendmail
    }

    fn smtp_addr(&self) -> SocketAddr {
        Sendmail::smtp_addr(self)
    }

    fn quarantined(&self, queue_id: &str) -> Result<Option<String>, String> {
        Ok(self.queue_file("hf", queue_id))
    }

    fn log_mark(&self) -> usize {
        self.log_lines().len()
    }

    fn log_since(&self, mark: usize) -> String {
        self.log_lines()
            .get(mark..)
            .map(|lines| lines.join("\n"))
            .unwrap_or_default()
    }
}

/// What a case runs against.
pub struct Env<'a> {
    /// The MTA.
    pub mta: &'a dyn Mta,
    /// The relay host of the MTA.
    pub sink: &'a SmtpSink,
    /// The recorder between MTA and milter.
    pub tap: &'a MilterTap,
    /// The milter process.
    pub milter: &'a MilterGuard,
}

/// One case: a name and the function that runs it.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Printed in every message about the case.
    pub name: &'static str,
    /// Runs the case; `Err` (or a panic) fails it.
    pub run: fn(&Ctx<'_>) -> Result<(), String>,
}

/// The per-case context handed to a case.
pub struct Ctx<'a> {
    env: &'a Env<'a>,
    case: &'static str,
    counter: Cell<u32>,
    transcripts: RefCell<Vec<String>>,
    tap_mark: usize,
}

impl<'a> Ctx<'a> {
    /// The MTA under test.
    pub fn kind(&self) -> MtaKind {
        self.env.mta.kind()
    }

    /// The MTA.
    pub fn mta(&self) -> &dyn Mta {
        self.env.mta
    }

    /// The sink.
    pub fn sink(&self) -> &SmtpSink {
        self.env.sink
    }

    /// The tap.
    pub fn tap(&self) -> &MilterTap {
        self.env.tap
    }

    /// A new message with the standard headers (From, To, Date, Message-ID) and a unique
    /// Message-ID naming this case.
    pub fn message(&self) -> Msg {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        let id = format!(
            "<{}.{}.{}.{}@interop.test>",
            self.case,
            n,
            std::process::id(),
            self.kind().name()
        );
        Msg {
            headers: vec![
                "From: Interop Sender <sender@example.test>".into(),
                "To: Interop Rcpt <rcpt@example.test>".into(),
                "Date: Tue, 01 Dec 2026 12:00:00 +0000".into(),
                format!("Message-ID: {id}"),
            ],
            id,
            body: b"Hello from the interop tests.\r\n".to_vec(),
        }
    }

    /// Connects to the MTA and says EHLO, expecting 220 and 250.
    pub fn session(&self) -> Result<Session<'_, 'a>, String> {
        self.session_as(CLIENT_NAME)
    }

    /// Connects and says `EHLO name`; the greeting must be 220, the EHLO reply 250.
    pub fn session_as(&self, name: &str) -> Result<Session<'_, 'a>, String> {
        let client = SmtpClient::connect(self.env.mta.smtp_addr())
            .map_err(|error| format!("connecting to the MTA: {error}"))?;
        let mut session = Session {
            ctx: self,
            client: Some(client),
        };
        let greeting = session.client()?.greeting().clone();
        session.expect(&greeting, 220, None, "greeting")?;
        let ehlo = session.cmd(|client| client.ehlo(name))?;
        session.expect(&ehlo, 250, None, "EHLO")?;
        Ok(session)
    }

    /// Waits for the message with `msg`'s Message-ID at the sink; when the MTA split it
    /// into several deliveries, they are merged (recipients appended).
    pub fn delivered(&self, msg: &Msg) -> Result<Delivery, String> {
        let matches = |deliveries: &[Delivery]| -> Vec<Delivery> {
            deliveries
                .iter()
                .filter(|delivery| delivery_has_id(delivery, &msg.id))
                .cloned()
                .collect()
        };
        let found = self.env.sink.wait_until(DELIVERY_TIMEOUT, |deliveries| {
            !matches(deliveries).is_empty()
        });
        if let Err(all) = found {
            return Err(format!(
                "message {} did not reach the sink within {DELIVERY_TIMEOUT:?} ({} other \
                 deliveries there)",
                msg.id,
                all.len()
            ));
        }
        // Give a split delivery a moment to complete.
        std::thread::sleep(Duration::from_millis(50));
        let mut deliveries = matches(&self.env.sink.deliveries());
        if deliveries.is_empty() {
            return Err(format!("message {} vanished from the sink", msg.id));
        }
        let mut first = deliveries.remove(0);
        for other in deliveries {
            first.rcpts.extend(other.rcpts);
        }
        Ok(first)
    }

    /// The milter conversation (recorded by the tap during this case) of the SMTP session
    /// that said `EHLO helo`; waits until the MTA has closed it.
    pub fn milter_session(&self, helo: &str) -> Result<TapSession, String> {
        let sessions = self
            .env
            .tap
            .wait_closed_from(self.tap_mark, Duration::from_secs(10));
        sessions
            .into_iter()
            .find(|session| {
                session.commands().any(|frame| {
                    frame.code == b'H' && frame.strings().first().map(String::as_str) == Some(helo)
                })
            })
            .ok_or_else(|| format!("the tap saw no milter session with HELO {helo}"))
    }

    /// Checks that none of `absent` reaches the sink: sends `marker` (a plain message) in
    /// a new session, waits for it, then waits [`ABSENCE_GRACE`] more.
    pub fn expect_not_delivered(&self, absent: &[&Msg]) -> Result<(), String> {
        let marker = self.message().header("Subject: marker");
        let mut session = self.session()?;
        let sent = session.send(&Envelope::to("marker@example.test"), &marker)?;
        session.quit()?;
        sent.expect_queued()?;
        self.delivered(&marker)?;
        std::thread::sleep(ABSENCE_GRACE);
        let deliveries = self.env.sink.deliveries();
        for msg in absent {
            if deliveries
                .iter()
                .any(|delivery| delivery_has_id(delivery, &msg.id))
            {
                return Err(format!(
                    "message {} was delivered but should not have been",
                    msg.id
                ));
            }
        }
        Ok(())
    }
}

fn delivery_has_id(delivery: &Delivery, id: &str) -> bool {
    delivery
        .header_values("Message-ID")
        .iter()
        .any(|value| value.trim() == id)
}

/// An SMTP session of a case; its transcript is kept for the failure report.
pub struct Session<'c, 'a> {
    ctx: &'c Ctx<'a>,
    client: Option<SmtpClient>,
}

impl Session<'_, '_> {
    fn client(&mut self) -> Result<&mut SmtpClient, String> {
        self.client
            .as_mut()
            .ok_or_else(|| "session already closed".to_owned())
    }

    fn cmd(
        &mut self,
        f: impl FnOnce(&mut SmtpClient) -> std::io::Result<Reply>,
    ) -> Result<Reply, String> {
        let client = self.client()?;
        f(client).map_err(|error| format!("SMTP I/O error: {error}"))
    }

    /// Checks `reply` has `code` and, if given, exactly the last line `line`.
    pub fn expect(
        &self,
        reply: &Reply,
        code: u16,
        line: Option<&str>,
        what: &str,
    ) -> Result<(), String> {
        if reply.code != code || line.is_some_and(|line| reply.last_line() != line) {
            let wanted = line.map_or_else(|| code.to_string(), str::to_owned);
            return Err(format!(
                "{what}: expected {wanted:?}, got {:?}",
                reply.to_string()
            ));
        }
        Ok(())
    }

    /// A raw command line.
    pub fn command(&mut self, line: &str) -> Result<Reply, String> {
        self.cmd(|client| client.command(line))
    }

    /// `MAIL FROM:<address> params`.
    pub fn mail(&mut self, address: &str, params: &[&str]) -> Result<Reply, String> {
        self.cmd(|client| client.mail_from(address, params))
    }

    /// `RCPT TO:<address>`.
    pub fn rcpt(&mut self, address: &str) -> Result<Reply, String> {
        self.cmd(|client| client.rcpt_to(address, &[]))
    }

    /// `DATA` + message.
    pub fn data(&mut self, msg: &Msg) -> Result<DataReplies, String> {
        let bytes = msg.bytes();
        let client = self.client()?;
        client
            .data(&bytes)
            .map_err(|error| format!("SMTP I/O error during DATA: {error}"))
    }

    /// `RSET`, expecting 250.
    pub fn rset(&mut self) -> Result<(), String> {
        let reply = self.cmd(SmtpClient::rset)?;
        self.expect(&reply, 250, None, "RSET")
    }

    /// A whole transaction: MAIL, every RCPT, and DATA if a recipient was accepted (else
    /// RSET). Replies are returned, not judged; see [`Sent`].
    pub fn send(&mut self, envelope: &Envelope, msg: &Msg) -> Result<Sent, String> {
        let params: Vec<&str> = envelope.params.iter().map(String::as_str).collect();
        let mail = self.mail(&envelope.from, &params)?;
        let mut sent = Sent {
            kind: self.ctx.kind(),
            envelope: envelope.clone(),
            msg: msg.clone(),
            mail,
            rcpts: Vec::new(),
            data: None,
        };
        if !sent.mail.is_positive() {
            return Ok(sent);
        }
        for rcpt in &envelope.rcpts {
            let reply = self.rcpt(rcpt)?;
            sent.rcpts.push((rcpt.clone(), reply));
        }
        if sent.accepted_rcpts().is_empty() {
            self.rset()?;
            return Ok(sent);
        }
        sent.data = Some(self.data(msg)?);
        Ok(sent)
    }

    /// `QUIT`, expecting 221.
    pub fn quit(mut self) -> Result<(), String> {
        let client = self.client.take().ok_or("session already closed")?;
        let transcript_before = client.transcript();
        let reply = client.quit();
        self.ctx
            .transcripts
            .borrow_mut()
            .push(format!("{transcript_before}\nC: QUIT\nS: {reply:?}"));
        let reply = reply.map_err(|error| format!("QUIT: {error}"))?;
        self.expect(&reply, 221, None, "QUIT")
    }
}

impl Drop for Session<'_, '_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            self.ctx.transcripts.borrow_mut().push(client.transcript());
        }
    }
}

/// Envelope of one transaction.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// MAIL FROM address (without brackets).
    pub from: String,
    /// MAIL FROM ESMTP parameters.
    pub params: Vec<String>,
    /// RCPT TO addresses (without brackets), exactly as sent.
    pub rcpts: Vec<String>,
}

impl Envelope {
    /// From `sender@example.test` to `rcpt`.
    pub fn to(rcpt: &str) -> Envelope {
        Envelope {
            from: "sender@example.test".into(),
            params: Vec::new(),
            rcpts: vec![rcpt.into()],
        }
    }

    /// Replaces the sender.
    pub fn from(mut self, from: &str) -> Envelope {
        self.from = from.into();
        self
    }

    /// Adds a recipient.
    pub fn rcpt(mut self, rcpt: &str) -> Envelope {
        self.rcpts.push(rcpt.into());
        self
    }

    /// Adds a MAIL parameter.
    pub fn param(mut self, param: &str) -> Envelope {
        self.params.push(param.into());
        self
    }

    fn eight_bit(&self) -> bool {
        self.params
            .iter()
            .any(|param| param.eq_ignore_ascii_case("BODY=8BITMIME"))
    }
}

/// A message to send: header fields (raw, folds as CRLF + white space) and body.
#[derive(Debug, Clone)]
pub struct Msg {
    /// The Message-ID value, used to find the message at the sink.
    pub id: String,
    /// Raw header fields without their final CRLF, e.g. `Subject: hi`.
    pub headers: Vec<String>,
    /// The body, CRLF line ends.
    pub body: Vec<u8>,
}

impl Msg {
    /// Adds a raw header field (`Name: value`; use `\r\n\t` to fold).
    pub fn header(mut self, raw: &str) -> Msg {
        self.headers.push(raw.into());
        self
    }

    /// Replaces the body (a final CRLF is added when missing and the body is not empty).
    pub fn body(mut self, body: &[u8]) -> Msg {
        self.body = body.to_vec();
        if !self.body.is_empty() && !self.body.ends_with(b"\r\n") {
            self.body.extend_from_slice(b"\r\n");
        }
        self
    }

    /// The message as sent (before dot-stuffing).
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 1024);
        for header in &self.headers {
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    fn name_value(raw: &str) -> (&str, &str) {
        raw.split_once(':').unwrap_or((raw, ""))
    }

    /// The number of headers the milter counts.
    pub fn counted_headers(&self) -> usize {
        self.headers
            .iter()
            .map(|raw| Msg::name_value(raw))
            .filter(|(name, value)| {
                !(name.eq_ignore_ascii_case("X-Conformance-Action")
                    && known_action(value).is_some())
            })
            .count()
    }

    /// The first Subject's raw value (after the colon).
    pub fn subject(&self) -> Option<String> {
        self.headers
            .iter()
            .map(|raw| Msg::name_value(raw))
            .find(|(name, _)| name.eq_ignore_ascii_case("Subject"))
            .map(|(_, value)| value.to_owned())
    }
}

fn known_action(value: &str) -> Option<String> {
    let value = value.trim().to_ascii_lowercase();
    matches!(value.as_str(), "discard" | "reject" | "accept").then_some(value)
}

/// The replies of one transaction.
#[derive(Debug, Clone)]
pub struct Sent {
    kind: MtaKind,
    /// The envelope used.
    pub envelope: Envelope,
    /// The message sent.
    pub msg: Msg,
    /// Reply to MAIL.
    pub mail: Reply,
    /// Replies to each RCPT.
    pub rcpts: Vec<(String, Reply)>,
    /// Replies to DATA and the final dot, if DATA was sent.
    pub data: Option<DataReplies>,
}

impl Sent {
    /// The recipients the MTA accepted (2xx), as sent.
    pub fn accepted_rcpts(&self) -> Vec<String> {
        self.rcpts
            .iter()
            .filter(|(_, reply)| reply.is_positive())
            .map(|(rcpt, _)| rcpt.clone())
            .collect()
    }

    /// The reply to the final dot.
    pub fn end_reply(&self) -> Result<&Reply, String> {
        match &self.data {
            Some(DataReplies { end: Some(end), .. }) => Ok(end),
            Some(DataReplies { data, end: None }) => Err(format!("DATA was refused: {data}")),
            None => Err(format!(
                "no DATA: MAIL {} / RCPT {:?}",
                self.mail,
                self.rcpts
                    .iter()
                    .map(|(rcpt, reply)| format!("{rcpt}: {reply}"))
                    .collect::<Vec<_>>()
            )),
        }
    }

    /// Checks the message was accepted (250 after the final dot) and returns its queue
    /// id from that reply.
    pub fn expect_queued(&self) -> Result<String, String> {
        let end = self.end_reply()?;
        if end.code != 250 {
            return Err(format!("message {} not accepted: {end}", self.msg.id));
        }
        self.kind
            .queue_id(end)
            .ok_or_else(|| format!("no queue id in {end}"))
    }

    /// Checks the reply after the final dot is exactly `line`.
    pub fn expect_end(&self, line: &str) -> Result<(), String> {
        let end = self.end_reply()?;
        if end.last_line() != line || end.lines.len() != 1 {
            return Err(format!("after the final dot: expected {line:?}, got {end}"));
        }
        Ok(())
    }
}

/// What the conformance milter does to a message that reaches end of message.
#[derive(Debug, Clone)]
pub struct Expected {
    /// Header fields after `X-Conformance-First` and the MTA's own `Received:`.
    pub headers: Vec<String>,
    /// Envelope sender at the sink.
    pub sender: String,
    /// Envelope recipients at the sink, sorted.
    pub rcpts: Vec<String>,
    /// The body at the sink.
    pub body: Vec<u8>,
}

/// The oracle: what docs/CONFORMANCE.md says arrives for `sent` (accepted with `queue_id`).
pub fn expected_delivery(sent: &Sent, queue_id: &str) -> Expected {
    let msg = &sent.msg;
    let accepted = sent.accepted_rcpts();
    let subject = msg.subject();
    let mut headers = Vec::new();
    let mut subject_done = false;
    let mut delete_done = false;
    for raw in &msg.headers {
        let (name, value) = Msg::name_value(raw);
        if name.eq_ignore_ascii_case("Subject") && !subject_done {
            subject_done = true;
            let stripped = value.trim_start_matches([' ', '\t', '\r', '\n']);
            headers.push(format!("{name}: [filtered] {stripped}"));
        } else if name.eq_ignore_ascii_case("X-Delete-Me") && !delete_done {
            delete_done = true;
        } else {
            headers.push(raw.clone());
        }
    }
    headers.push("X-Conformance: seen".into());
    headers.push(format!("X-Conformance-Queue-Id: {queue_id}"));
    headers.push(format!("X-Conformance-Body-Bytes: {}", msg.body.len()));
    headers.push(format!("X-Conformance-Rcpts: {}", accepted.len()));
    headers.push(format!("X-Conformance-Headers: {}", msg.counted_headers()));

    let mut rcpts: Vec<String> = accepted
        .iter()
        .filter(|rcpt| !rcpt.eq_ignore_ascii_case("removed@example.test"))
        .cloned()
        .collect();
    rcpts.push("added@example.test".into());
    if sent.envelope.eight_bit() {
        rcpts.push("added-args@example.test".into());
    }
    rcpts.sort();

    let sender = if sent
        .envelope
        .from
        .eq_ignore_ascii_case("change-from@example.test")
    {
        "changed-from@example.test".to_owned()
    } else {
        sent.envelope.from.clone()
    };

    let subject = subject.unwrap_or_default();
    let body = if subject.contains("BIG-BODY") {
        big_body()
    } else if subject.contains("REPLACE-BODY") {
        REPLACED_BODY.to_vec()
    } else {
        msg.body.clone()
    };
    Expected {
        headers,
        sender,
        rcpts,
        body,
    }
}

/// The 3,600,000-byte BIG-BODY replacement.
pub fn big_body() -> Vec<u8> {
    BIG_BODY_LINE.repeat(BIG_BODY_LINES)
}

/// The delivered header fields after the first one (`X-Conformance-First`) and the MTA's
/// own leading `Received:` fields.
fn headers_after_trace(delivery: &Delivery, skip_first: bool) -> Vec<String> {
    let raw: Vec<String> = delivery
        .headers()
        .iter()
        .map(|header| header.raw())
        .collect();
    let rest = if skip_first {
        &raw[1.min(raw.len())..]
    } else {
        &raw[..]
    };
    rest.iter()
        .skip_while(|raw| raw.to_ascii_lowercase().starts_with("received:"))
        .cloned()
        .collect()
}

/// Compares two lists of header fields and describes the first difference.
fn diff_headers(got: &[String], want: &[String]) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    let mut out = String::from("header block differs:\n");
    let n = got.len().max(want.len());
    for i in 0..n {
        let g = got.get(i).map_or("<none>", String::as_str);
        let w = want.get(i).map_or("<none>", String::as_str);
        let mark = if g == w { "  " } else { "!!" };
        let _ = writeln!(out, "{mark} got  {g:?}");
        if g != w {
            let _ = writeln!(out, "   want {w:?}");
        }
    }
    Err(out)
}

fn short(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
    if bytes.len() > 200 {
        format!("{text:?}... ({} bytes)", bytes.len())
    } else {
        format!("{text:?}")
    }
}

/// The main check: `sent` was accepted and arrived exactly as the oracle
/// ([`expected_delivery`]) says. Returns the delivery for further checks.
pub fn expect_filtered(ctx: &Ctx<'_>, sent: &Sent) -> Result<Delivery, String> {
    let queue_id = sent.expect_queued()?;
    let delivery = ctx.delivered(&sent.msg)?;
    let want = expected_delivery(sent, &queue_id);
    let first = delivery.first_line();
    if first != "X-Conformance-First: 1" {
        return Err(format!(
            "first line of the delivered message is {first:?}, not X-Conformance-First: 1"
        ));
    }
    diff_headers(&headers_after_trace(&delivery, true), &want.headers)?;
    check_envelope(&delivery, &want)?;
    if delivery.body() != want.body.as_slice() {
        return Err(format!(
            "body differs: got {}, want {}",
            short(delivery.body()),
            short(&want.body)
        ));
    }
    Ok(delivery)
}

fn check_envelope(delivery: &Delivery, want: &Expected) -> Result<(), String> {
    if delivery.mail_from != want.sender {
        return Err(format!(
            "envelope sender at the sink is {:?}, want {:?}",
            delivery.mail_from, want.sender
        ));
    }
    let mut rcpts: Vec<String> = delivery
        .rcpt_addresses()
        .into_iter()
        .map(str::to_owned)
        .collect();
    rcpts.sort();
    if rcpts != want.rcpts {
        return Err(format!(
            "envelope recipients at the sink are {rcpts:?}, want {:?}",
            want.rcpts
        ));
    }
    Ok(())
}

/// `sent` was accepted and arrived without any change by the milter (accept at eoh).
pub fn expect_unmodified(ctx: &Ctx<'_>, sent: &Sent) -> Result<Delivery, String> {
    sent.expect_queued()?;
    let delivery = ctx.delivered(&sent.msg)?;
    diff_headers(&headers_after_trace(&delivery, false), &sent.msg.headers)?;
    let mut want: Vec<String> = sent.accepted_rcpts();
    want.sort();
    let mut got: Vec<String> = delivery
        .rcpt_addresses()
        .into_iter()
        .map(str::to_owned)
        .collect();
    got.sort();
    if got != want || delivery.mail_from != sent.envelope.from {
        return Err(format!(
            "envelope changed: from {:?} to {got:?}, sent from {:?} to {want:?}",
            delivery.mail_from, sent.envelope.from
        ));
    }
    if delivery.body() != sent.msg.body.as_slice() {
        return Err(format!("body changed: {}", short(delivery.body())));
    }
    Ok(delivery)
}

/// The reply line the client sees when the milter rejects or tempfails MAIL or RCPT of
/// `address` with `line` (`550 5.7.1 text`). Sendmail puts `<address>... ` (the address
/// as the client wrote it) in front of the text of a 5xx reply, not of a 4xx one;
/// Postfix passes the milter's reply unchanged.
pub fn envelope_reply_line(kind: MtaKind, line: &str, address: &str) -> String {
    match (kind, line.split_once(' ')) {
        (MtaKind::Sendmail, Some((code, rest))) if code.starts_with('5') => {
            let (enhanced, text) = rest.split_once(' ').unwrap_or((rest, ""));
            format!("{code} {enhanced} <{address}>... {text}")
        }
        _ => line.to_owned(),
    }
}

fn ensure(condition: bool, message: impl FnOnce() -> String) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(message())
    }
}

// ---------------------------------------------------------------------------------------
// The cases.

/// Every case, in the order they run.
pub const CASES: &[Case] = &[
    Case {
        name: "headers_added",
        run: headers_added,
    },
    Case {
        name: "insert_header_is_first_line",
        run: insert_header_is_first_line,
    },
    Case {
        name: "subject_changed",
        run: subject_changed,
    },
    Case {
        name: "subject_folded",
        run: subject_folded,
    },
    Case {
        name: "subject_leading_white_space",
        run: subject_leading_white_space,
    },
    Case {
        name: "only_first_subject_changed",
        run: only_first_subject_changed,
    },
    Case {
        name: "no_subject",
        run: no_subject,
    },
    Case {
        name: "first_x_delete_me_deleted",
        run: first_x_delete_me_deleted,
    },
    Case {
        name: "recipient_added",
        run: recipient_added,
    },
    Case {
        name: "recipient_with_args_added_for_8bitmime",
        run: recipient_with_args_added,
    },
    Case {
        name: "recipient_removed_case_preserved",
        run: recipient_removed_case_preserved,
    },
    Case {
        name: "recipient_removed_lower_case",
        run: recipient_removed_lower_case,
    },
    Case {
        name: "sender_changed",
        run: sender_changed,
    },
    Case {
        name: "body_replaced",
        run: body_replaced,
    },
    Case {
        name: "big_body_replaced",
        run: big_body_replaced,
    },
    Case {
        name: "big_incoming_body_counted",
        run: big_incoming_body_counted,
    },
    Case {
        name: "empty_body",
        run: empty_body,
    },
    Case {
        name: "dot_stuffed_body",
        run: dot_stuffed_body,
    },
    Case {
        name: "quarantine",
        run: quarantine,
    },
    Case {
        name: "helo_rejected",
        run: helo_rejected,
    },
    Case {
        name: "mail_rejected",
        run: mail_rejected,
    },
    Case {
        name: "mail_tempfailed",
        run: mail_tempfailed,
    },
    Case {
        name: "rcpt_rejected_and_tempfailed",
        run: rcpt_rejected_and_tempfailed,
    },
    Case {
        name: "discard_at_rcpt",
        run: discard_at_rcpt,
    },
    Case {
        name: "reject_at_eoh",
        run: reject_at_eoh,
    },
    Case {
        name: "discard_at_eoh",
        run: discard_at_eoh,
    },
    Case {
        name: "accept_at_eoh",
        run: accept_at_eoh,
    },
    Case {
        name: "action_header_last_wins",
        run: action_header_last_wins,
    },
    Case {
        name: "action_header_other_value_counted",
        run: action_header_other_value,
    },
    Case {
        name: "several_messages_per_session",
        run: several_messages_per_session,
    },
    Case {
        name: "eight_bit_content",
        run: eight_bit_content,
    },
    Case {
        name: "many_headers",
        run: many_headers,
    },
    Case {
        name: "folded_headers",
        run: folded_headers,
    },
    Case {
        name: "leading_spaces_in_header_values",
        run: leading_spaces,
    },
    Case {
        name: "unknown_command",
        run: unknown_command,
    },
    // Regression tests of what the real MTAs send the milter (see MTA-OBSERVATIONS.md).
    Case {
        name: "mta_offer_and_macros",
        run: mta_offer_and_macros,
    },
    Case {
        name: "mta_command_sequence_and_aborts",
        run: mta_command_sequence,
    },
    Case {
        name: "mta_session_end_after_helo_reject",
        run: mta_helo_reject_session,
    },
    Case {
        name: "mta_header_values_as_sent_to_milter",
        run: mta_header_values,
    },
];

/// Sends `msg` in a new session with `envelope` and checks it with the oracle.
fn send_filtered(ctx: &Ctx<'_>, envelope: &Envelope, msg: &Msg) -> Result<Delivery, String> {
    let mut session = ctx.session()?;
    let sent = session.send(envelope, msg)?;
    session.quit()?;
    expect_filtered(ctx, &sent)
}

fn headers_added(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx.message().header("Subject: hello");
    let delivery = send_filtered(ctx, &Envelope::to("rcpt@example.test"), &msg)?;
    ensure(delivery.single_header("X-Conformance")? == "seen", || {
        "X-Conformance is not `seen`".into()
    })
}

fn insert_header_is_first_line(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx.message().header("Subject: first line");
    let delivery = send_filtered(ctx, &Envelope::to("rcpt@example.test"), &msg)?;
    let headers = delivery.headers();
    let second = headers
        .get(1)
        .map(|header| header.name.clone())
        .unwrap_or_default();
    ensure(second.eq_ignore_ascii_case("Received"), || {
        format!("the MTA's Received: should follow X-Conformance-First, found {second:?}")
    })
}

fn subject_changed(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx.message().header("Subject: a plain subject");
    let delivery = send_filtered(ctx, &Envelope::to("rcpt@example.test"), &msg)?;
    ensure(
        delivery.single_header("Subject")? == "[filtered] a plain subject",
        || "Subject not changed".into(),
    )
}

fn subject_folded(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx
        .message()
        .header("Subject: first part\r\n\tsecond part\r\n  third part");
    send_filtered(ctx, &Envelope::to("rcpt@example.test"), &msg).map(drop)
}

fn subject_leading_white_space(ctx: &Ctx<'_>) -> Result<(), String> {
    let spaces = ctx.message().header("Subject:    three spaces more");
    send_filtered(ctx, &Envelope::to("rcpt@example.test"), &spaces)?;
    let tab = ctx.message().header("Subject:\t\ttabbed");
    send_filtered(ctx, &Envelope::to("rcpt@example.test"), &tab)?;
    let none = ctx.message().header("Subject:no space");
    send_filtered(ctx, &Envelope::to("rcpt@example.test"), &none).map(drop)
}

fn only_first_subject_changed(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx
        .message()
        .header("Subject: the first")
        .header("Subject: the second");
    send_filtered(ctx, &Envelope::to("rcpt@example.test"), &msg).map(drop)
}

fn no_subject(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx.message();
    let delivery = send_filtered(ctx, &Envelope::to("rcpt@example.test"), &msg)?;
    ensure(delivery.header_values("Subject").is_empty(), || {
        "a Subject appeared".into()
    })
}

fn first_x_delete_me_deleted(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx
        .message()
        .header("X-Delete-Me: one")
        .header("Subject: delete me")
        .header("x-delete-me: two")
        .header("X-Delete-Me: three");
    let delivery = send_filtered(ctx, &Envelope::to("rcpt@example.test"), &msg)?;
    let left = delivery.header_values("X-Delete-Me");
    ensure(left == [" two", " three"], || {
        format!("X-Delete-Me left: {left:?}")
    })
}

fn recipient_added(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx.message().header("Subject: add a recipient");
    let delivery = send_filtered(ctx, &Envelope::to("rcpt@example.test"), &msg)?;
    ensure(
        !delivery
            .rcpt_addresses()
            .contains(&"added-args@example.test"),
        || "added-args@example.test added without BODY=8BITMIME".into(),
    )
}

fn recipient_with_args_added(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx.message().header("Subject: add with args");
    let envelope = Envelope::to("rcpt@example.test").param("BODY=8BITMIME");
    let delivery = send_filtered(ctx, &envelope, &msg)?;
    let rcpt = delivery
        .rcpts
        .iter()
        .find(|rcpt| rcpt.address == "added-args@example.test")
        .ok_or("added-args@example.test missing")?;
    ensure(
        rcpt.params.iter().any(|param| param == "NOTIFY=NEVER"),
        || {
            format!(
                "added-args@example.test arrived with {:?}, not NOTIFY=NEVER",
                rcpt.params
            )
        },
    )
}

fn recipient_removed_case_preserved(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx.message().header("Subject: remove a recipient");
    let envelope = Envelope::to("keep@example.test").rcpt("REMOVED@Example.TEST");
    send_filtered(ctx, &envelope, &msg).map(drop)
}

fn recipient_removed_lower_case(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx.message().header("Subject: remove a recipient");
    let envelope = Envelope::to("removed@example.test").rcpt("keep@example.test");
    send_filtered(ctx, &envelope, &msg).map(drop)
}

fn sender_changed(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx.message().header("Subject: change the sender");
    let envelope = Envelope::to("rcpt@example.test").from("change-from@example.test");
    send_filtered(ctx, &envelope, &msg).map(drop)
}

fn body_replaced(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx
        .message()
        .header("Subject: please REPLACE-BODY now")
        .body(b"original body\r\nsecond line\r\n");
    send_filtered(ctx, &Envelope::to("rcpt@example.test"), &msg).map(drop)
}

fn big_body_replaced(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx.message().header("Subject: BIG-BODY please");
    send_filtered(ctx, &Envelope::to("rcpt@example.test"), &msg).map(drop)
}

fn big_incoming_body_counted(ctx: &Ctx<'_>) -> Result<(), String> {
    // 4 MiB and a bit, with lines that need dot-stuffing, so several body chunks.
    let mut body = Vec::with_capacity(4_300_000);
    let mut i = 0u32;
    while body.len() < 4 * 1024 * 1024 {
        if i.is_multiple_of(97) {
            body.extend_from_slice(b".a line starting with a dot\r\n");
        }
        let _ = write!(
            ByteWriter(&mut body),
            "line {i:07} of a multi-megabyte body\r\n"
        );
        i += 1;
    }
    let msg = ctx.message().header("Subject: big incoming").body(&body);
    send_filtered(ctx, &Envelope::to("rcpt@example.test"), &msg).map(drop)
}

/// `fmt::Write` into a byte vector.
struct ByteWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn empty_body(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx.message().header("Subject: nothing below").body(b"");
    send_filtered(ctx, &Envelope::to("rcpt@example.test"), &msg).map(drop)
}

fn dot_stuffed_body(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx
        .message()
        .header("Subject: dots")
        .body(b".\r\n..\r\n.leading dot\r\nmiddle . dot\r\n. \r\n");
    send_filtered(ctx, &Envelope::to("rcpt@example.test"), &msg).map(drop)
}

fn quarantine(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx.message().header("Subject: QUARANTINE this");
    let mut session = ctx.session()?;
    let sent = session.send(&Envelope::to("rcpt@example.test"), &msg)?;
    session.quit()?;
    let queue_id = sent.expect_queued()?;
    ctx.expect_not_delivered(&[&msg])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ctx.mta().quarantined(&queue_id)? {
            Some(file) => {
                // The held message is this one, with the milter's other edits applied.
                ensure(
                    file.contains(&msg.id) && file.contains("X-Conformance: seen"),
                    || format!("the quarantined queue file is not the filtered message:\n{file}"),
                )?;
                // Sendmail keeps the reason in the queue file's `q` line; Postfix only
                // logs that the milter triggered HOLD.
                return ensure(
                    ctx.kind() == MtaKind::Postfix
                        || file.lines().any(|line| line == "qconformance quarantine"),
                    || format!("no `q` line with the milter's reason in:\n{file}"),
                );
            }
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            None => return Err(format!("message {queue_id} is not quarantined")),
        }
    }
}

fn helo_rejected(ctx: &Ctx<'_>) -> Result<(), String> {
    for name in ["reject.helo.test", "Reject.HELO.Test"] {
        let mut session = ctx.session_as(name)?;
        let mail = session.mail("sender@example.test", &[])?;
        session.expect(
            &mail,
            550,
            Some("550 5.7.0 helo rejected by conformance milter"),
            "MAIL after a rejected HELO",
        )?;
        session.quit()?;
    }
    // The rejection stays with that session: a new one works.
    let msg = ctx.message().header("Subject: after helo reject");
    send_filtered(ctx, &Envelope::to("rcpt@example.test"), &msg).map(drop)
}

fn mail_rejected(ctx: &Ctx<'_>) -> Result<(), String> {
    let mut session = ctx.session()?;
    for sender in ["reject-mail@example.test", "Reject-Mail@EXAMPLE.test"] {
        let mail = session.mail(sender, &[])?;
        let want = envelope_reply_line(
            ctx.kind(),
            "550 5.7.1 mail rejected by conformance milter",
            sender,
        );
        session.expect(&mail, 550, Some(&want), "MAIL")?;
    }
    // The next transaction of the same session is not affected.
    let msg = ctx.message().header("Subject: after mail reject");
    let sent = session.send(&Envelope::to("rcpt@example.test"), &msg)?;
    session.quit()?;
    expect_filtered(ctx, &sent).map(drop)
}

fn mail_tempfailed(ctx: &Ctx<'_>) -> Result<(), String> {
    let mut session = ctx.session()?;
    let mail = session.mail("tempfail-mail@example.test", &[])?;
    session.expect(
        &mail,
        451,
        Some("451 4.7.1 mail tempfailed by conformance milter"),
        "MAIL",
    )?;
    let msg = ctx.message().header("Subject: after mail tempfail");
    let sent = session.send(&Envelope::to("rcpt@example.test"), &msg)?;
    session.quit()?;
    expect_filtered(ctx, &sent).map(drop)
}

fn rcpt_rejected_and_tempfailed(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx.message().header("Subject: some recipients refused");
    let envelope = Envelope::to("reject-rcpt@example.test")
        .rcpt("ok-one@example.test")
        .rcpt("Tempfail-Rcpt@Example.Test")
        .rcpt("ok-two@example.test");
    let mut session = ctx.session()?;
    let sent = session.send(&envelope, &msg)?;
    session.quit()?;
    let expect = [
        Some("550 5.1.1 rcpt rejected by conformance milter"),
        None,
        Some("451 4.7.1 rcpt tempfailed by conformance milter"),
        None,
    ];
    for ((rcpt, reply), want) in sent.rcpts.iter().zip(expect) {
        let want = want.map(|line| envelope_reply_line(ctx.kind(), line, rcpt));
        match want {
            Some(line) if reply.last_line() != line => {
                return Err(format!("RCPT {rcpt}: expected {line:?}, got {reply}"))
            }
            None if reply.code != 250 => return Err(format!("RCPT {rcpt}: got {reply}")),
            _ => {}
        }
    }
    expect_filtered(ctx, &sent).map(drop)
}

fn discard_at_rcpt(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx.message().header("Subject: discarded at rcpt");
    let envelope = Envelope::to("rcpt@example.test").rcpt("discard-rcpt@example.test");
    let mut session = ctx.session()?;
    let sent = session.send(&envelope, &msg)?;
    session.quit()?;
    ensure(
        sent.rcpts.iter().all(|(_, reply)| reply.code == 250),
        || format!("RCPT replies: {:?}", sent.rcpts),
    )?;
    sent.expect_queued()?;
    ctx.expect_not_delivered(&[&msg])
}

fn reject_at_eoh(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx
        .message()
        .header("Subject: rejected at eoh")
        .header("X-Conformance-Action:  Reject ");
    let mut session = ctx.session()?;
    let sent = session.send(&Envelope::to("rcpt@example.test"), &msg)?;
    session.quit()?;
    sent.expect_end("554 5.7.1 message rejected by conformance milter")?;
    ctx.expect_not_delivered(&[&msg])
}

fn discard_at_eoh(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx
        .message()
        .header("X-Conformance-Action: discard")
        .header("Subject: discarded at eoh");
    let mut session = ctx.session()?;
    let sent = session.send(&Envelope::to("rcpt@example.test"), &msg)?;
    session.quit()?;
    sent.expect_queued()?;
    ctx.expect_not_delivered(&[&msg])
}

fn accept_at_eoh(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx
        .message()
        .header("Subject: accepted REPLACE-BODY QUARANTINE")
        .header("X-Delete-Me: stays")
        .header("X-Conformance-Action: ACCEPT");
    let envelope = Envelope::to("removed@example.test")
        .rcpt("rcpt@example.test")
        .from("change-from@example.test")
        .param("BODY=8BITMIME");
    let mut session = ctx.session()?;
    let sent = session.send(&envelope, &msg)?;
    session.quit()?;
    expect_unmodified(ctx, &sent).map(drop)
}

fn action_header_last_wins(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx
        .message()
        .header("X-Conformance-Action: reject")
        .header("Subject: accept wins")
        .header("X-Conformance-Action: accept");
    let mut session = ctx.session()?;
    let sent = session.send(&Envelope::to("rcpt@example.test"), &msg)?;
    session.quit()?;
    expect_unmodified(ctx, &sent).map(drop)
}

fn action_header_other_value(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx
        .message()
        .header("X-Conformance-Action: reject-not")
        .header("Subject: an unknown action is a counted header");
    send_filtered(ctx, &Envelope::to("rcpt@example.test"), &msg).map(drop)
}

/// Several transactions in one session; every verdict and every piece of per-message
/// state stays with its message.
fn several_messages_per_session(ctx: &Ctx<'_>) -> Result<(), String> {
    let mut session = ctx.session()?;
    let mut filtered = Vec::new();
    let mut absent = Vec::new();
    let mut queue_ids = Vec::new();

    // 1: everything at once.
    let msg = ctx
        .message()
        .header("Subject: REPLACE-BODY first")
        .header("X-Delete-Me: first");
    let envelope = Envelope::to("REMOVED@Example.TEST")
        .rcpt("one@example.test")
        .from("change-from@example.test")
        .param("BODY=8BITMIME");
    filtered.push(session.send(&envelope, &msg)?);
    // 2: plain; nothing of 1 may leak (sender, removal, body, args recipient, counts).
    let msg = ctx.message();
    filtered.push(session.send(&Envelope::to("two@example.test"), &msg)?);
    // 3: rejected at eoh, then 4 plain.
    let rejected = ctx
        .message()
        .header("Subject: rejected")
        .header("X-Conformance-Action: reject");
    let sent = session.send(&Envelope::to("three@example.test"), &rejected)?;
    sent.expect_end("554 5.7.1 message rejected by conformance milter")?;
    absent.push(rejected);
    filtered.push(session.send(
        &Envelope::to("four@example.test"),
        &ctx.message().header("Subject: after a reject"),
    )?);
    // 5: accepted at eoh (no modifications), then 6 plain.
    let accepted = ctx
        .message()
        .header("Subject: accepted")
        .header("X-Conformance-Action: accept");
    let accepted_sent = session.send(&Envelope::to("five@example.test"), &accepted)?;
    filtered.push(session.send(
        &Envelope::to("six@example.test"),
        &ctx.message().header("Subject: after an accept"),
    )?);
    // 7: discarded at rcpt, then 8 plain.
    let discarded = ctx.message().header("Subject: discarded");
    let sent = session.send(
        &Envelope::to("seven@example.test").rcpt("discard-rcpt@example.test"),
        &discarded,
    )?;
    sent.expect_queued()?;
    absent.push(discarded);
    filtered.push(session.send(
        &Envelope::to("eight@example.test"),
        &ctx.message().header("Subject: after a discard"),
    )?);
    // 9: MAIL rejected, then 10 plain.
    let mail = session.mail("reject-mail@example.test", &[])?;
    let want = envelope_reply_line(
        ctx.kind(),
        "550 5.7.1 mail rejected by conformance milter",
        "reject-mail@example.test",
    );
    session.expect(&mail, 550, Some(&want), "MAIL")?;
    filtered.push(session.send(
        &Envelope::to("ten@example.test"),
        &ctx.message().header("Subject: after a MAIL reject"),
    )?);
    // 11: RSET in the middle of a transaction, then 12 plain.
    let mail = session.mail("change-from@example.test", &["BODY=8BITMIME"])?;
    session.expect(&mail, 250, None, "MAIL")?;
    let rcpt = session.rcpt("removed@example.test")?;
    session.expect(&rcpt, 250, None, "RCPT")?;
    session.rset()?;
    filtered.push(session.send(
        &Envelope::to("twelve@example.test"),
        &ctx.message().header("Subject: after RSET"),
    )?);
    // 13: discarded at eoh, then 14 plain.
    let discarded = ctx
        .message()
        .header("X-Conformance-Action: discard")
        .header("Subject: discarded at eoh");
    let sent = session.send(&Envelope::to("thirteen@example.test"), &discarded)?;
    sent.expect_queued()?;
    absent.push(discarded);
    filtered.push(session.send(
        &Envelope::to("fourteen@example.test"),
        &ctx.message().header("Subject: after an eoh discard"),
    )?);
    session.quit()?;

    for sent in &filtered {
        expect_filtered(ctx, sent).map_err(|error| format!("{}: {error}", sent.msg.id))?;
        queue_ids.push(sent.expect_queued()?);
    }
    expect_unmodified(ctx, &accepted_sent)?;
    let mut unique = queue_ids.clone();
    unique.sort();
    unique.dedup();
    ensure(unique.len() == queue_ids.len(), || {
        format!("queue ids repeat: {queue_ids:?}")
    })?;
    ctx.expect_not_delivered(&absent.iter().collect::<Vec<_>>())
}

fn eight_bit_content(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx
        .message()
        .header("Subject: Grüße aus Köln – 8-bit")
        .header("X-Eight-Bit: café ñ 日本語")
        .body("Ünïcödé body: Grüße, naïve café, 日本語テキスト\r\nbytes ÿþ\r\n".as_bytes());
    let envelope = Envelope::to("rcpt@example.test").param("BODY=8BITMIME");
    send_filtered(ctx, &envelope, &msg).map(drop)
}

fn many_headers(ctx: &Ctx<'_>) -> Result<(), String> {
    let mut msg = ctx.message().header("Subject: many headers");
    for i in 0..300 {
        msg = msg.header(&format!("X-Many-{i:03}: value number {i}"));
    }
    let delivery = send_filtered(ctx, &Envelope::to("rcpt@example.test"), &msg)?;
    ensure(
        delivery.single_header("X-Conformance-Headers")? == "305",
        || "header count is not 305".into(),
    )
}

fn folded_headers(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx
        .message()
        .header("Subject: folded too\r\n  REPLACE-BODY on the second line")
        .header("X-Folded: one\r\n two\r\n\tthree")
        .header("X-Folded-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    send_filtered(ctx, &Envelope::to("rcpt@example.test"), &msg).map(drop)
}

fn leading_spaces(ctx: &Ctx<'_>) -> Result<(), String> {
    let msg = ctx
        .message()
        .header("Subject:  two spaces")
        .header("X-Spaces:   three spaces")
        .header("X-Tab:\ttab")
        .header("X-None:none")
        .header("X-Empty:");
    send_filtered(ctx, &Envelope::to("rcpt@example.test"), &msg).map(drop)
}

fn unknown_command(ctx: &Ctx<'_>) -> Result<(), String> {
    let helo = "unknown.interop.test";
    let mut session = ctx.session_as(helo)?;
    let reply = session.command("XYZZY plugh")?;
    // Both MTAs pass the unknown command to the milter (`U`) and answer with its reply
    // (Sendmail 8.17 too, as long as the milter did not negotiate NOUNKNOWN).
    let want = "500 5.5.1 command not recognised by conformance milter";
    session.expect(&reply, 500, Some(want), "unknown command")?;
    let msg = ctx.message().header("Subject: after an unknown command");
    let sent = session.send(&Envelope::to("rcpt@example.test"), &msg)?;
    session.quit()?;
    expect_filtered(ctx, &sent)?;
    // Postfix passes only the verb, Sendmail the whole line.
    let tap = ctx.milter_session(helo)?;
    let unknown: Vec<Vec<String>> = tap
        .commands()
        .filter(|frame| frame.code == b'U')
        .map(|frame| frame.strings())
        .collect();
    let want = match ctx.kind() {
        MtaKind::Postfix => "XYZZY",
        MtaKind::Sendmail => "XYZZY plugh",
    };
    ensure(unknown == [vec![want.to_owned()]], || {
        format!("U commands: {unknown:?}, want [[{want:?}]]")
    })
}

// ---------------------------------------------------------------------------------------
// Running a suite.

/// Suites of one test binary run one after the other (each has its own MTA and milter;
/// running them together would only compete for the two cores).
static SUITE_LOCK: Mutex<()> = Mutex::new(());

/// The result of one case.
#[derive(Debug)]
pub struct CaseResult {
    /// The case.
    pub name: &'static str,
    /// `Err` with the report when it failed.
    pub outcome: Result<(), String>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Runs the selected cases against `env`, printing one line per case and a full report
/// for each failure; returns the results.
pub fn run_cases(label: &str, env: &Env<'_>) -> Vec<CaseResult> {
    let only: Option<Vec<String>> = std::env::var("INTEROP_CASES")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .map(|value| {
            value
                .split(',')
                .map(|name| name.trim().to_owned())
                .collect()
        });
    let mut results = Vec::new();
    for case in CASES {
        if only
            .as_ref()
            .is_some_and(|only| !only.iter().any(|name| name == case.name))
        {
            continue;
        }
        let tap_mark = env.tap.session_count();
        let ctx = Ctx {
            env,
            case: case.name,
            counter: Cell::new(0),
            transcripts: RefCell::new(Vec::new()),
            tap_mark,
        };
        let log_mark = env.mta.log_mark();
        let milter_log_mark = env.milter.log().len();
        let started = Instant::now();
        let outcome = match panic::catch_unwind(AssertUnwindSafe(|| (case.run)(&ctx))) {
            Ok(outcome) => outcome,
            Err(panic) => Err(format!(
                "panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default()
            )),
        };
        let elapsed = started.elapsed();
        let marks = Marks {
            tap: tap_mark,
            log: log_mark,
            milter_log: milter_log_mark,
        };
        if let Some(dir) = std::env::var_os("INTEROP_DUMP_DIR") {
            let sessions = env.tap.wait_closed_from(tap_mark, Duration::from_secs(2));
            let heading = match &outcome {
                Ok(()) => "ok".to_owned(),
                Err(error) => format!("FAILED\n  {error}"),
            };
            let report = case_report(
                label, case.name, &heading, &ctx, &sessions, env, &marks, None,
            );
            let file = Path::new(&dir).join(format!("{}-{}.txt", env.mta.kind().name(), case.name));
            if let Err(error) = std::fs::write(&file, report) {
                eprintln!("cannot write {}: {error}", file.display());
            }
        }
        let outcome = outcome.map_err(|error| {
            let sessions = env.tap.wait_closed_from(tap_mark, Duration::from_secs(2));
            let heading = format!("FAILED\n  {error}");
            case_report(
                label,
                case.name,
                &heading,
                &ctx,
                &sessions,
                env,
                &marks,
                Some(80),
            )
        });
        match &outcome {
            Ok(()) => eprintln!(
                "[{label}] {} ... ok ({} ms)",
                case.name,
                elapsed.as_millis()
            ),
            Err(report) => eprintln!("{report}"),
        }
        results.push(CaseResult {
            name: case.name,
            outcome,
            elapsed,
        });
    }
    results
}

/// Where a case's records start.
struct Marks {
    tap: usize,
    log: usize,
    milter_log: usize,
}

/// Everything recorded during a case: SMTP transcripts, the milter conversations, the
/// MTA's and the milter's log and (for dumps) the delivered messages. Long parts are
/// clipped to about `clip_lines` lines.
#[allow(clippy::too_many_arguments)]
fn case_report(
    label: &str,
    case: &str,
    heading: &str,
    ctx: &Ctx<'_>,
    sessions: &[TapSession],
    env: &Env<'_>,
    marks: &Marks,
    clip_lines: Option<usize>,
) -> String {
    let cut = |text: &str, lines: usize| match clip_lines {
        Some(max) => clip(text, max * lines / 80),
        None => clip(text, 4000),
    };
    let mut out = format!("[{label}] {case} ... {heading}\n");
    let _ = writeln!(out, "--- SMTP transcripts of {case} ---");
    for transcript in ctx.transcripts.borrow().iter() {
        let _ = writeln!(out, "{}\n", cut(transcript, 80));
    }
    let _ = writeln!(out, "--- milter conversations of {case} (via the tap) ---");
    for session in sessions.iter().filter(|session| session.id >= marks.tap) {
        let _ = writeln!(out, "{}", cut(&session.describe(), 120));
    }
    let _ = writeln!(out, "--- {} log during {case} ---", env.mta.kind().name());
    let _ = writeln!(out, "{}", cut(&env.mta.log_since(marks.log), 80));
    let milter_log = env.milter.log();
    let _ = writeln!(out, "--- milter log during {case} ---");
    let _ = writeln!(
        out,
        "{}",
        cut(milter_log.get(marks.milter_log..).unwrap_or(""), 40)
    );
    if clip_lines.is_none() {
        let prefix = format!("<{case}.");
        let _ = writeln!(out, "--- messages of {case} at the sink ---");
        for delivery in env.sink.deliveries() {
            if delivery
                .header_values("Message-ID")
                .iter()
                .any(|id| id.trim().starts_with(&prefix))
            {
                let _ = writeln!(
                    out,
                    "MAIL FROM:<{}> {:?}\nRCPT {:?}\n{}\n<body: {} bytes> {}\n",
                    delivery.mail_from,
                    delivery.mail_params,
                    delivery.rcpts,
                    String::from_utf8_lossy(delivery.header_block()),
                    delivery.body().len(),
                    short(delivery.body())
                );
            }
        }
    }
    out
}

/// The first and last lines of `text` when it is longer than `max` lines.
fn clip(text: &str, max: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= max {
        return text.to_owned();
    }
    let head = &lines[..max / 2];
    let tail = &lines[lines.len() - max / 2..];
    format!(
        "{}\n  [... {} lines ...]\n{}",
        head.join("\n"),
        lines.len() - max,
        tail.join("\n")
    )
}

/// Checks the MTA's whole log (no attempt to reach beyond loopback, no milter trouble)
/// and panics listing the failed cases, if any. With `INTEROP_DUMP_DIR` the log is
/// written there too.
fn conclude(label: &str, kind: MtaKind, log: &str, results: &[CaseResult], started: Instant) {
    if let Some(dir) = std::env::var_os("INTEROP_DUMP_DIR") {
        let file = Path::new(&dir).join(format!("{}-log.txt", kind.name()));
        if let Err(error) = std::fs::write(&file, log) {
            eprintln!("cannot write {}: {error}", file.display());
        }
    }
    let network = outside_attempts(log);
    assert!(
        network.is_empty(),
        "[{label}] the MTA tried to reach beyond loopback:\n{network}"
    );
    let trouble = milter_trouble(log);
    assert!(
        trouble.is_empty(),
        "[{label}] the MTA logged trouble with the milter:\n{trouble}"
    );
    let failed: Vec<&str> = results
        .iter()
        .filter(|result| result.outcome.is_err())
        .map(|result| result.name)
        .collect();
    eprintln!(
        "[{label}] {} cases, {} failed, {:.1} s",
        results.len(),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "[{label}] {} of {} cases failed: {}",
        failed.len(),
        results.len(),
        failed.join(", ")
    );
}

/// Builds the C reference milter (`c/conformance.c`, libmilter) into Cargo's temporary
/// directory, or reports a missing toolchain through [`missing_prerequisite`] (a skip,
/// or a failure under `CI=true`) and returns `None`.
pub fn c_reference_milter(test: &str) -> Option<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("c/conformance.c");
    if !source.is_file() {
        missing_prerequisite(test, &format!("{} does not exist", source.display()));
        return None;
    }
    if let Err(reason) = c_toolchain_available() {
        missing_prerequisite(test, &reason);
        return None;
    }
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("interop-c-{test}"));
    match build_c_milter(&source, &out_dir) {
        Ok(binary) => Some(binary),
        Err(error) => panic!("{test}: building the C reference milter: {error}"),
    }
}

/// Starts `milter` on a free loopback port with a tap in front of it.
fn start_milter(milter: &Path) -> (MilterGuard, MilterTap) {
    let port = free_port();
    let guard = spawn_milter(milter, &[], &format!("inet:{port}@127.0.0.1"));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let tap = MilterTap::start(addr).expect("starting the milter tap");
    (guard, tap)
}

fn label(mta: MtaKind, milter: &Path) -> String {
    let name = milter
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = milter
        .parent()
        .and_then(Path::file_name)
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{} + {parent}/{name}", mta.name())
}

/// Runs every case behind a private Postfix with `milter` (a binary taking a libmilter
/// socket spec). `test` names the calling test for skip messages.
pub fn run_postfix_suite(test: &str, milter: &Path) {
    if let Some(reason) = postfix::unavailable() {
        missing_prerequisite(test, &reason);
        return;
    }
    let _serial = SUITE_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let started = Instant::now();
    let label = label(MtaKind::Postfix, milter);
    let sink = SmtpSink::start().expect("starting the SMTP sink");
    let (guard, tap) = start_milter(milter);
    let config = PostfixConfig {
        milter: format!("inet:127.0.0.1:{}", tap.addr().port()),
        relay: sink.addr(),
        extra_main_cf: Vec::new(),
    };
    let mut mta = Postfix::start(&config).unwrap_or_else(|error| panic!("[{label}] {error}"));
    eprintln!(
        "[{label}] Postfix on {}, milter via tap {}, sink {} (start {:.1} s)",
        mta.smtp_addr(),
        tap.addr(),
        sink.addr(),
        started.elapsed().as_secs_f64()
    );
    let env = Env {
        mta: &mta,
        sink: &sink,
        tap: &tap,
        milter: &guard,
    };
    let results = run_cases(&label, &env);
    if let Err(error) = mta.stop() {
        eprintln!("[{label}] {error}");
    }
    conclude(&label, MtaKind::Postfix, &mta.log(), &results, started);
}

/// Runs every case behind a private Sendmail with `milter`.
pub fn run_sendmail_suite(test: &str, milter: &Path) {
    if let Some(reason) = sendmail::unavailable() {
        missing_prerequisite(test, &reason);
        return;
    }
    let root = match sendmail::sendmail_root() {
        Ok(root) => root,
        Err(reason) => {
            missing_prerequisite(test, &reason);
            return;
        }
    };
    let _serial = SUITE_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let started = Instant::now();
    let label = label(MtaKind::Sendmail, milter);
    let sink = SmtpSink::start().expect("starting the SMTP sink");
    let (guard, tap) = start_milter(milter);
    let config = SendmailConfig {
        milter: format!("inet:{}@127.0.0.1", tap.addr().port()),
        relay: sink.addr(),
    };
    let mut mta =
        Sendmail::start(&root, &config).unwrap_or_else(|error| panic!("[{label}] {error}"));
    eprintln!(
        "[{label}] Sendmail on {}, milter via tap {}, sink {} (start {:.1} s)",
        mta.smtp_addr(),
        tap.addr(),
        sink.addr(),
        started.elapsed().as_secs_f64()
    );
    let env = Env {
        mta: &mta,
        sink: &sink,
        tap: &tap,
        milter: &guard,
    };
    let results = run_cases(&label, &env);
    if let Err(error) = mta.stop() {
        eprintln!("[{label}] {error}");
    }
    conclude(&label, MtaKind::Sendmail, &mta.log(), &results, started);
}

/// Log lines that report a failed conversation with the milter (timeouts, protocol
/// errors, actions it did not negotiate), which a passing case could otherwise hide.
pub fn milter_trouble(log: &str) -> String {
    log.lines()
        .filter(|line| {
            let lower = line.to_ascii_lowercase();
            lower.contains("milter")
                && [
                    "error",
                    "timeout",
                    "timed out",
                    "lied",
                    "unexpected",
                    "can't",
                    "cannot",
                ]
                .iter()
                .any(|word| lower.contains(word))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Log lines that show an attempt to reach a host other than loopback: a connection or
/// lookup naming a non-loopback address or a DNS failure.
pub fn outside_attempts(log: &str) -> String {
    log.lines()
        .filter(|line| {
            let lower = line.to_ascii_lowercase();
            lower.contains("host not found")
                || lower.contains("name service error")
                || lower.contains("unqualified host name")
                || lower.contains("unknown host")
                // As a word: queue ids are random letters ("6B21dNsP…").
                || lower
                    .split(|c: char| !c.is_ascii_alphanumeric())
                    .any(|word| word == "dns")
                || lower.contains("connect to ") && !lower.contains("127.0.0.1")
                || lower.contains("relay=")
                    && !lower.contains("127.0.0.1")
                    && !lower.contains("relay=none")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------
// What the MTAs send the milter (checked through the tap).

/// Command codes with every run of `L` collapsed to one `L` and macros left out.
fn collapsed_codes(session: &TapSession) -> String {
    let mut out = String::new();
    for code in session.command_codes().chars() {
        if !(code == 'L' && out.ends_with('L')) {
            out.push(code);
        }
    }
    out
}

/// The macro names (sorted) the MTA sent before the command of `stage`, per occurrence.
fn macro_names(session: &TapSession, stage: char) -> Vec<Vec<String>> {
    session
        .macros()
        .into_iter()
        .filter(|(at, _)| *at == stage)
        .map(|(_, pairs)| {
            let mut names: Vec<String> = pairs.into_iter().map(|(name, _)| name).collect();
            names.sort();
            names
        })
        .collect()
}

/// The negotiation offer, and which macros arrive at which stage, for the milter's symbol
/// lists (connect `{j} {daemon_name} {client_addr}`, mail `{i} {auth_authen}
/// {mail_addr}`, rcpt `{rcpt_addr}`, end of message `{i} {msg_id}`).
fn mta_offer_and_macros(ctx: &Ctx<'_>) -> Result<(), String> {
    let helo = "macros.interop.test";
    let msg = ctx.message().header("Subject: macros");
    let mut session = ctx.session_as(helo)?;
    let sent = session.send(&Envelope::to("rcpt@example.test"), &msg)?;
    session.quit()?;
    let queue_id = sent.expect_queued()?;
    let tap = ctx.milter_session(helo)?;
    let offer = tap.offer().ok_or("no negotiation recorded")?;
    ensure(offer == (6, 0x1ff, 0x1f_ffff), || {
        format!("offer (version, actions, protocol) = {offer:x?}, want (6, 0x1ff, 0x1fffff)")
    })?;
    let names = |list: &[&str]| {
        vec![list
            .iter()
            .map(|name| (*name).to_owned())
            .collect::<Vec<_>>()]
    };
    let queue_id_value = |stage: char| -> Vec<String> {
        tap.macros()
            .into_iter()
            .filter(|(at, _)| *at == stage)
            .flat_map(|(_, pairs)| pairs)
            .filter(|(name, _)| name == "i" || name == "{i}")
            .map(|(_, value)| value)
            .collect()
    };
    let connect = names(&["{client_addr}", "{daemon_name}", "{j}"]);
    let (mail, data, eoh, body, eom, id_stage) = match ctx.kind() {
        // Postfix: no queue id before DATA; `i` (its default lists) at DATA, every header
        // and end of headers; `{i}`, spelled as in the milter's end-of-message list, at
        // body and end of message. It has no `{msg_id}`.
        MtaKind::Postfix => (
            names(&["{mail_addr}"]),
            names(&["i"]),
            names(&["i"]),
            names(&["{i}"]),
            names(&["{i}"]),
            'E',
        ),
        // Sendmail: `{i}` with MAIL only; at end of message its default list
        // (`{msg_id}`), because the milter sent no end-of-headers list.
        MtaKind::Sendmail => (
            names(&["{i}", "{mail_addr}"]),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            names(&["{msg_id}"]),
            'M',
        ),
    };
    let checks = [
        ('C', connect),
        ('H', vec![Vec::new()]),
        ('M', mail),
        ('R', names(&["{rcpt_addr}"])),
        ('T', data),
        ('N', eoh),
        ('B', body),
        ('E', eom),
    ];
    for (stage, want) in checks {
        let got = macro_names(&tap, stage);
        ensure(got == want, || {
            format!("macros at stage {stage}: got {got:?}, want {want:?}")
        })?;
    }
    let ids = queue_id_value(id_stage);
    ensure(ids == [queue_id.clone()], || {
        format!("queue id macro at stage {id_stage}: {ids:?}, want [{queue_id}]")
    })
}

/// Which commands come in which order, in particular where the MTAs send abort.
fn mta_command_sequence(ctx: &Ctx<'_>) -> Result<(), String> {
    let helo = "sequence.interop.test";
    let mut session = ctx.session_as(helo)?;
    let plain = ctx.message().header("Subject: one");
    session
        .send(&Envelope::to("rcpt@example.test"), &plain)?
        .expect_queued()?;
    let rejected = ctx
        .message()
        .header("Subject: two")
        .header("X-Conformance-Action: reject");
    let sent = session.send(&Envelope::to("rcpt@example.test"), &rejected)?;
    sent.expect_end("554 5.7.1 message rejected by conformance milter")?;
    let discarded = ctx.message().header("Subject: three");
    let envelope = Envelope::to("rcpt@example.test").rcpt("discard-rcpt@example.test");
    session.send(&envelope, &discarded)?.expect_queued()?;
    let mail = session.mail("sender@example.test", &[])?;
    session.expect(&mail, 250, None, "MAIL")?;
    let rcpt = session.rcpt("rcpt@example.test")?;
    session.expect(&rcpt, 250, None, "RCPT")?;
    session.rset()?;
    let last = ctx.message().header("Subject: five");
    session
        .send(&Envelope::to("rcpt@example.test"), &last)?
        .expect_queued()?;
    session.quit()?;
    let tap = ctx.milter_session(helo)?;
    let got = collapsed_codes(&tap);
    let want = match ctx.kind() {
        // An abort after every transaction (completed, rejected, discarded, reset) and
        // one more at QUIT.
        MtaKind::Postfix => "OCHMRTLNBEAMRTLNAMRRAMRAMRTLNBEAAQ",
        // Abort only while the milter is inside a message: after the discard at RCPT
        // (the milter is still in the message) and after RSET; not after end of message
        // or the milter's own reject at end of headers.
        MtaKind::Sendmail => "OCHMRTLNBEMRTLNMRRAMRAMRTLNBEQ",
    };
    ensure(got == want, || {
        format!("commands (L runs collapsed): got {got}, want {want}")
    })
}

/// After the milter rejected HELO: the MTA sends nothing more for the session (MAIL is
/// rejected by the MTA itself, with the milter's text); Postfix closes the milter
/// connection without `Q`, Sendmail sends `Q` at the end of the SMTP session.
fn mta_helo_reject_session(ctx: &Ctx<'_>) -> Result<(), String> {
    let helo = "reject.helo.test";
    let mut session = ctx.session_as(helo)?;
    let mail = session.mail("sender@example.test", &[])?;
    session.expect(
        &mail,
        550,
        Some("550 5.7.0 helo rejected by conformance milter"),
        "MAIL",
    )?;
    let rcpt = session.rcpt("rcpt@example.test")?;
    let want = match ctx.kind() {
        MtaKind::Postfix => "503 5.5.1 Error: need MAIL command",
        // Sendmail repeats the milter's HELO reply for RCPT too.
        MtaKind::Sendmail => "550 5.7.0 helo rejected by conformance milter",
    };
    ensure(rcpt.last_line() == want, || {
        format!("RCPT after the rejected MAIL: got {rcpt}, want {want:?}")
    })?;
    session.quit()?;
    let tap = ctx.milter_session(helo)?;
    let got = collapsed_codes(&tap);
    let want = match ctx.kind() {
        MtaKind::Postfix => "OCH",
        MtaKind::Sendmail => "OCHQ",
    };
    ensure(got == want, || format!("commands: got {got}, want {want}"))
}

/// Header values reach the milter with exactly one leading space removed (never a tab),
/// folds as LF + the original white space.
fn mta_header_values(ctx: &Ctx<'_>) -> Result<(), String> {
    let helo = "headers.interop.test";
    let msg = ctx
        .message()
        .header("Subject:  two spaces")
        .header("X-Tab:\ttab")
        .header("X-None:none")
        .header("X-Folded: one\r\n two\r\n\tthree");
    let mut session = ctx.session_as(helo)?;
    let sent = session.send(&Envelope::to("rcpt@example.test"), &msg)?;
    session.quit()?;
    expect_filtered(ctx, &sent)?;
    let tap = ctx.milter_session(helo)?;
    let headers: Vec<Vec<String>> = tap
        .commands()
        .filter(|frame| frame.code == b'L')
        .map(|frame| frame.strings())
        .collect();
    let want = [
        ["Subject", " two spaces"],
        ["X-Tab", "\ttab"],
        ["X-None", "none"],
        ["X-Folded", "one\n two\n\tthree"],
    ];
    for [name, value] in want {
        let found = headers
            .iter()
            .any(|header| header.len() == 2 && header[0] == name && header[1] == value);
        ensure(found, || {
            format!("no L {name:?} {value:?} among {headers:?}")
        })?;
    }
    Ok(())
}
