//! The client's MTA profiles imitate the real MTAs: the same negotiation offer, the
//! same commands, and macro packets with the same names at the same stages. A tap
//! between the sender and our milter records both conversations; the milter handles
//! every stage and asks for no macros, so each MTA sends its defaults.
//!
//! Needs root and the Debian package `postfix` (and, for the Sendmail half, what
//! the Sendmail interop suite needs); skipped (or failing under `CI=true`) without.

mod support;

use milter_blocking::client::{Client, ClientAddress, Envelope, Message, Profile};
use milter_blocking::{
    ConnectAddr, Context, EnvelopeAddr, EomContext, Header, Milter, Server, ServerHandle, Status,
};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;
use support::milter_process::missing_prerequisite;
use support::milter_tap::{MilterTap, TapSession};
use support::postfix::{self, Postfix, PostfixConfig};
use support::sendmail::{self, Sendmail, SendmailConfig};
use support::smtp::{SmtpClient, SmtpSink};

#[derive(Milter, Default)]
struct EveryStage;

#[milter_blocking::handlers]
impl Milter for EveryStage {
    fn connect(&mut self, _: &mut Context<'_>, _: &[u8], _: ConnectAddr<'_>) -> Status {
        Status::Continue
    }
    fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status {
        Status::Continue
    }
    fn mail(&mut self, _: &mut Context<'_>, _: &EnvelopeAddr<'_>) -> Status {
        Status::Continue
    }
    fn rcpt(&mut self, _: &mut Context<'_>, _: &EnvelopeAddr<'_>) -> Status {
        Status::Continue
    }
    fn data(&mut self, _: &mut Context<'_>) -> Status {
        Status::Continue
    }
    fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status {
        Status::Continue
    }
    fn eoh(&mut self, _: &mut Context<'_>) -> Status {
        Status::Continue
    }
    fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status {
        Status::Continue
    }
    fn eom(&mut self, _: &mut EomContext<'_, Self>) -> Status {
        Status::Continue
    }
}

const MESSAGE: &str =
    "From: a@example.test\r\nTo: b@example.test\r\nSubject: profile\r\n\r\nbody line\r\n";

struct Milter_ {
    handle: ServerHandle,
    thread: Option<std::thread::JoinHandle<Result<(), milter_blocking::ServerError>>>,
    tap: MilterTap,
}

impl Drop for Milter_ {
    fn drop(&mut self) {
        self.handle.shutdown(Duration::from_secs(2));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_milter() -> Milter_ {
    let server = Server::builder()
        .listen("inet:0@127.0.0.1")
        .expect("bind")
        .build(EveryStage::default)
        .expect("server");
    let addr: SocketAddr = match server.local_spec() {
        milter_blocking::SocketSpec::Inet(a) => a,
        other => panic!("{other}"),
    };
    let handle = server.handle();
    let thread = Some(std::thread::spawn(move || server.run()));
    let tap = MilterTap::start(addr).expect("tap");
    Milter_ {
        handle,
        thread,
        tap,
    }
}

/// (stage, macro names) for each macro packet, and the command codes. Runs of
/// headers count as one: the MTA adds headers of its own (Postfix: Message-Id and
/// Date for a local client), which is content, not protocol.
fn shape(s: &TapSession) -> (Vec<(char, BTreeSet<String>)>, String) {
    let mut macros: Vec<(char, BTreeSet<String>)> = Vec::new();
    for (stage, pairs) in s.macros() {
        let names: BTreeSet<String> = pairs.into_iter().map(|(n, _)| n).collect();
        if stage == 'L' && macros.last() == Some(&(stage, names.clone())) {
            continue;
        }
        macros.push((stage, names));
    }
    let mut codes = String::new();
    for c in s.command_codes().chars() {
        if !(c == 'L' && codes.ends_with('L')) {
            codes.push(c);
        }
    }
    (macros, codes)
}

fn via_client(profile: Profile, milter: &Milter_) -> TapSession {
    let before = milter.tap.session_count();
    let mut c = Client::builder()
        .profile(profile)
        .open(milter_blocking::SocketSpec::Inet(milter.tap.addr()))
        .expect("client");
    let envelope = Envelope::new("<a@example.test>")
        .rcpt("<b@example.test>")
        .helo("client.example.test")
        .client(
            "localhost",
            ClientAddress::Ip(([127, 0, 0, 1], 40000).into()),
        );
    let message = Message::parse(MESSAGE.as_bytes());
    c.send_message(&envelope, &message).expect("send_message");
    c.quit().expect("quit");
    let sessions = milter.tap.wait_closed_from(before, Duration::from_secs(10));
    sessions
        .into_iter()
        .find(|s| s.command_codes().contains('M'))
        .expect("the client session with the message")
}

fn via_smtp(smtp_addr: SocketAddr, milter: &Milter_, sink: &SmtpSink) -> TapSession {
    let before = milter.tap.session_count();
    let mut smtp = SmtpClient::connect(smtp_addr).expect("smtp connect");
    smtp.ehlo("client.example.test").expect("ehlo");
    smtp.mail_from("<a@example.test>", &[]).expect("mail");
    smtp.rcpt_to("<b@example.test>", &[]).expect("rcpt");
    let r = smtp.data(MESSAGE.as_bytes()).expect("data");
    assert!(r.final_reply().is_positive(), "{:?}", r.final_reply());
    let _ = smtp.quit();
    let _ = sink.wait_for_count(1, Duration::from_secs(30));
    // The harness's readiness probe opens an SMTP connection too (a milter session
    // with only O C Q): take the session that carried the message.
    let sessions = milter.tap.wait_closed_from(before, Duration::from_secs(30));
    sessions
        .into_iter()
        .find(|s| s.command_codes().contains('M'))
        .expect("the MTA session with the message")
}

fn compare(mta: &str, real: &TapSession, ours: &TapSession) {
    assert_eq!(real.offer(), ours.offer(), "{mta}: offer");
    let (real_macros, real_codes) = shape(real);
    let (our_macros, our_codes) = shape(ours);
    assert_eq!(
        real_codes,
        our_codes,
        "{mta}: command sequence\nreal:\n{}\nours:\n{}",
        real.describe(),
        ours.describe()
    );
    assert_eq!(
        real_macros,
        our_macros,
        "{mta}: macro packets\nreal:\n{}\nours:\n{}",
        real.describe(),
        ours.describe()
    );
}

#[test]
fn postfix_profile_matches_postfix() {
    const TEST: &str = "postfix_profile_matches_postfix";
    if let Some(reason) = postfix::unavailable() {
        missing_prerequisite(TEST, &reason);
        return;
    }
    let milter = start_milter();
    let sink = SmtpSink::start().expect("sink");
    let config = PostfixConfig {
        milter: format!("inet:127.0.0.1:{}", milter.tap.addr().port()),
        relay: sink.addr(),
        extra_main_cf: Vec::new(),
    };
    let mta = Postfix::start(&config).unwrap_or_else(|e| panic!("{e}"));
    let real = via_smtp(mta.smtp_addr(), &milter, &sink);
    drop(mta);
    let ours = via_client(Profile::Postfix, &milter);
    compare("Postfix", &real, &ours);
}

#[test]
fn sendmail_profile_matches_sendmail() {
    const TEST: &str = "sendmail_profile_matches_sendmail";
    if let Some(reason) = sendmail::unavailable() {
        missing_prerequisite(TEST, &reason);
        return;
    }
    let root = sendmail::sendmail_root().unwrap_or_else(|e| panic!("{e}"));
    let milter = start_milter();
    let sink = SmtpSink::start().expect("sink");
    let config = SendmailConfig {
        milter: format!("inet:{}@127.0.0.1", milter.tap.addr().port()),
        relay: sink.addr(),
    };
    let mta = Sendmail::start(&root, &config).unwrap_or_else(|e| panic!("{e}"));
    let real = via_smtp(mta.smtp_addr(), &milter, &sink);
    drop(mta);
    let ours = via_client(Profile::Sendmail, &milter);
    compare("Sendmail", &real, &ours);
}
