//! The client's MTA profiles imitate the real MTAs: the same negotiation offer, the
//! same commands, and macro packets with the same names at the same stages. A tap
//! between the sender and our milter records both conversations; the milter handles
//! every stage and asks for no macros, so each MTA sends its defaults.
//!
//! Needs root and the Debian package `postfix` (and, for the Sendmail half, what
//! the Sendmail interop suite needs); skipped (or failing under `CI=true`) without.

mod support;

use milter_blocking::client::{ApplyRules, Client, ClientAddress, Envelope, Message, Profile};
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
    smtp.mail_from("a@example.test", &[]).expect("mail");
    smtp.rcpt_to("b@example.test", &[]).expect("rcpt");
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

/// A milter that answers by a script chosen by the envelope sender of each
/// connection, for replies no milter library sends: `skip@` gets progress and
/// then continue at each RCPT and skip at the first header; `hold@` gets
/// quarantine and then continue at the first RCPT; `shutdown@` gets `4` at MAIL;
/// `insert@` gets a header inserted at index 1 at end of message; `lines@` gets a
/// two-line reply with two codes at RCPT; anything else continues.
fn start_scripted_milter() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || scripted_session(stream));
        }
    });
    addr
}

fn scripted_session(mut stream: std::net::TcpStream) {
    use milter_blocking::milter_core::frame::{encode_frame, FrameDecoder};
    use std::io::{Read, Write};
    let mut frames = FrameDecoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    let (mut sender, mut rcpts, mut headers) = (String::new(), 0, 0);
    loop {
        let mut out = Vec::new();
        while let Ok(Some(f)) = frames.next_frame() {
            let (code, payload) = (f.code, f.payload.to_vec());
            let mut reply = |code: u8, data: &[u8]| encode_frame(&mut out, code, &[data]);
            match code {
                b'O' => {
                    let mut o = 6u32.to_be_bytes().to_vec();
                    o.extend_from_slice(&0x1FFu32.to_be_bytes());
                    o.extend_from_slice(&milter_blocking::ProtocolOpts::SKIP.bits().to_be_bytes());
                    reply(b'O', &o);
                }
                b'D' | b'A' => {}
                b'Q' => return,
                b'M' => {
                    sender = String::from_utf8_lossy(&payload).into_owned();
                    reply(
                        if sender.starts_with("<shutdown@") {
                            b'4'
                        } else {
                            b'c'
                        },
                        b"",
                    );
                }
                b'R' if sender.starts_with("<lines@") => {
                    let text = MIXED_REPLY_LINES.join("\r\n") + "\0";
                    reply(b'y', text.as_bytes());
                }
                b'R' => {
                    rcpts += 1;
                    if sender.starts_with("<skip@") {
                        reply(b'p', b"");
                    } else if sender.starts_with("<hold@") && rcpts == 1 {
                        reply(b'q', b"held by script\0");
                    }
                    reply(b'c', b"");
                }
                b'L' => {
                    headers += 1;
                    let skip = sender.starts_with("<skip@") && headers == 1;
                    reply(if skip { b's' } else { b'c' }, b"");
                }
                b'E' if sender.starts_with("<insert@") => {
                    reply(b'i', b"\0\0\0\x01X-Inserted\0at one\0");
                    reply(b'c', b"");
                }
                _ => reply(b'c', b""),
            }
        }
        if !out.is_empty() && stream.write_all(&out).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => frames.push(&buf[..n]),
        }
    }
}

/// The reply `lines@` gets at RCPT: two lines with different codes.
const MIXED_REPLY_LINES: [&str; 2] = ["550-5.7.1 first line", "551 5.7.1 second line"];

/// The test message for `sender`: for `long@`, with a 150,000-byte header line.
fn message_for(sender: &str) -> Vec<u8> {
    let mut m = Vec::new();
    if sender.starts_with("long@") {
        m.extend_from_slice(b"X-Long: ");
        m.resize(m.len() + 150_000, b'x');
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(MESSAGE.as_bytes());
    m
}

/// The same unusual replies through Postfix and through the client: progress
/// before end of message (ignored), skip at a header (the other headers are not
/// sent), quarantine at RCPT (no more envelope commands), shutdown at MAIL (the
/// connection is closed at once), the queue id at the second RCPT, and where a
/// header inserted at index 1 lands (above `From:`: Postfix counts its own
/// `Received:`), a 150,000-byte header (cut to 60,000 bytes), and a reply with
/// two codes (passed on).
#[test]
fn postfix_profile_matches_postfix_on_unusual_replies() {
    const TEST: &str = "postfix_profile_matches_postfix_on_unusual_replies";
    if let Some(reason) = postfix::unavailable() {
        missing_prerequisite(TEST, &reason);
        return;
    }
    let tap = MilterTap::start(start_scripted_milter()).expect("tap");
    let sink = SmtpSink::start().expect("sink");
    let config = PostfixConfig {
        milter: format!("inet:127.0.0.1:{}", tap.addr().port()),
        relay: sink.addr(),
        extra_main_cf: Vec::new(),
    };
    let mta = Postfix::start(&config).unwrap_or_else(|e| panic!("{e}"));
    let senders = [
        "skip@example.test",
        "hold@example.test",
        "shutdown@example.test",
        "insert@example.test",
        "long@example.test",
        "lines@example.test",
    ];
    let mut real = Vec::new();
    for sender in senders {
        let before = tap.session_count();
        let mut smtp = SmtpClient::connect(mta.smtp_addr()).expect("smtp connect");
        smtp.ehlo("client.example.test").expect("ehlo");
        let r = smtp.mail_from(sender, &[]).expect("mail");
        if sender.starts_with("lines@") {
            // Postfix 3.7 passes on a reply whose lines carry different codes.
            let r = smtp.rcpt_to("b1@example.test", &[]).expect("rcpt");
            assert_eq!(r.lines, MIXED_REPLY_LINES, "{r}");
            let _ = smtp.quit();
        } else if r.is_positive() {
            for rcpt in ["b1@example.test", "b2@example.test"] {
                smtp.rcpt_to(rcpt, &[]).expect("rcpt");
            }
            let r = smtp.data(&message_for(sender)).expect("data");
            assert!(r.final_reply().is_positive(), "{:?}", r.final_reply());
            let _ = smtp.quit();
        }
        if sender.starts_with("insert@") {
            // The skip@ message went through too; the hold@ one is held.
            let delivered = sink
                .wait_for_count(2, Duration::from_secs(30))
                .unwrap_or_else(|d| panic!("deliveries: {}", d.len()));
            let names: Vec<String> = delivered
                .iter()
                .find(|d| !d.header_values("X-Inserted").is_empty())
                .expect("the delivery with the inserted header")
                .headers()
                .into_iter()
                .map(|h| h.name)
                .collect();
            assert_eq!(names[..3], ["Received", "X-Inserted", "From"], "{names:?}");
        }
        let sessions = tap.wait_closed_from(before, Duration::from_secs(30));
        let session = sessions
            .into_iter()
            .find(|s| s.command_codes().contains('M'))
            .expect("the MTA session with the message");
        real.push(session);
    }
    drop(mta);
    for (sender, real) in senders.into_iter().zip(real) {
        let before = tap.session_count();
        let mut c = Client::builder()
            .profile(Profile::Postfix)
            .open(milter_blocking::SocketSpec::Inet(tap.addr()))
            .expect("client");
        let envelope = Envelope::new(sender)
            .rcpt("b1@example.test")
            .rcpt("b2@example.test")
            .helo("client.example.test")
            .client(
                "localhost",
                ClientAddress::Ip(([127, 0, 0, 1], 40000).into()),
            );
        let message = Message::parse(&message_for(sender));
        let envelope = if sender.starts_with("lines@") {
            Envelope {
                recipients: envelope.recipients[..1].to_vec(),
                ..envelope
            }
        } else {
            envelope
        };
        let t = c.send_message(&envelope, &message).expect("send_message");
        if sender.starts_with("lines@") {
            let want = MIXED_REPLY_LINES.join("\r\n").into_bytes();
            assert_eq!(t.steps[3].response.reply_text(), Some(&want[..]));
        }
        c.quit().expect("quit");
        if sender.starts_with("insert@") {
            let applied = t
                .delivered(ApplyRules::Postfix, &message, &envelope)
                .expect("delivered");
            let names: Vec<&[u8]> = applied
                .message
                .headers
                .iter()
                .map(|h| &h.name[..])
                .collect();
            assert_eq!(names[..2], [&b"X-Inserted"[..], b"From"]);
        }
        let ours = tap
            .wait_closed_from(before, Duration::from_secs(10))
            .into_iter()
            .find(|s| s.command_codes().contains('M'))
            .expect("the client session");
        compare(&format!("Postfix, {sender}"), &real, &ours);
        // What the script provoked: one header only after the skip (`shape` counts
        // a run of headers as one; Postfix adds headers of its own).
        let (want, codes): (&str, fn(&TapSession) -> String) = match sender {
            "skip@example.test" => ("OCHMRRTLNBEAAQ", TapSession::command_codes),
            "hold@example.test" => ("OCHMRLNBEAAQ", |s| shape(s).1),
            "insert@example.test" | "long@example.test" => ("OCHMRRTLNBEAAQ", |s| shape(s).1),
            "lines@example.test" => ("OCHMRAAQ", TapSession::command_codes),
            _ => ("OCHM", TapSession::command_codes),
        };
        for (who, s) in [("Postfix", &real), ("client", &ours)] {
            assert_eq!(codes(s), want, "{who}, {sender}:\n{}", s.describe());
        }
        if sender.starts_with("long@") {
            let long = |s: &TapSession| {
                s.commands()
                    .find(|f| f.code == b'L' && f.data.starts_with(b"X-Long\0"))
                    .map(|f| f.len)
            };
            assert_eq!(long(&real), long(&ours), "the long header's packet");
        }
    }
}
