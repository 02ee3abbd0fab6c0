//! The milter end to end on a port-0 server, driven by the MTA-side client:
//! golden signatures, verification of messages signed by OpenDKIM, sign then
//! verify, tampering, forged results, DNS failure. No test queries DNS: the
//! keys are pinned records.
#![allow(clippy::unwrap_used)]

use super::*;
use milter_blocking::client::{
    ApplyRules, Client, ClientAddress, Envelope, EomResult, Message, Modification, Profile,
    Transcript, Verdict,
};
use milter_blocking::{Server, ServerHandle};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

pub(crate) const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/dkim");
/// The signing time of the golden signatures.
const NOW: u64 = 1_700_000_000;
pub(crate) const LOCAL: &str = "127.0.0.1:40000";
pub(crate) const REMOTE: &str = "192.0.2.1:40000";

pub(crate) fn data(name: &str) -> PathBuf {
    PathBuf::from(DATA).join(name)
}

/// The public key records of the test keys, as `dns-record` settings.
pub(crate) fn records() -> String {
    let rsa = std::fs::read_to_string(data("rsa2048.pub.b64")).unwrap();
    let ed = std::fs::read_to_string(data("ed25519.pub.b64")).unwrap();
    format!(
        "dns-record rsa._domainkey.example.com v=DKIM1; k=rsa; p={}\n\
         dns-record ed._domainkey.example.com v=DKIM1; k=ed25519; p={}\n",
        rsa.trim(),
        ed.trim()
    )
}

/// A configuration with the test keys and records, plus `extra` settings.
pub(crate) fn config(extra: &str) -> Config {
    let text = format!(
        "authserv-id mx.example.net\nkey-table keys\n{}{extra}",
        records()
    );
    Config::parse(&text, "test", Path::new(DATA)).unwrap()
}

pub(crate) struct Running {
    pub(crate) spec: String,
    handle: Option<ServerHandle>,
    thread: Option<JoinHandle<Result<(), milter_blocking::ServerError>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(h) = &self.handle {
            h.shutdown(Duration::from_secs(5));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Running {
    /// A milter already running elsewhere, at `spec`.
    pub(crate) fn at(spec: &str) -> Running {
        Running {
            spec: spec.to_string(),
            handle: None,
            thread: None,
        }
    }
}

pub(crate) fn start_with(config: Config, shadow: bool) -> Running {
    let mut shared = shared(config).unwrap();
    shared.clock = || NOW;
    let shared = Arc::new(shared);
    let server = Server::builder()
        .listen("inet:0@127.0.0.1")
        .unwrap()
        .shadow(shadow)
        .build(move || Dkim::new(Arc::clone(&shared)))
        .unwrap();
    let spec = server.local_spec().to_string();
    let handle = server.handle();
    let thread = Some(std::thread::spawn(move || server.run()));
    Running {
        spec,
        handle: Some(handle),
        thread,
    }
}

pub(crate) fn start(config: Config) -> Running {
    start_with(config, false)
}

pub(crate) struct Sent {
    pub(crate) transcript: Transcript,
    /// The message as the MTA would queue it.
    pub(crate) delivered: Vec<u8>,
}

impl Sent {
    pub(crate) fn eom(&self) -> &EomResult {
        self.transcript.eom.as_ref().unwrap()
    }

    /// The values of the headers the milter inserted called `name`.
    pub(crate) fn inserted(&self, name: &str) -> Vec<String> {
        self.eom()
            .modifications
            .iter()
            .filter_map(|m| match m {
                Modification::InsertHeader { name: n, value, .. }
                    if n.eq_ignore_ascii_case(name.as_bytes()) =>
                {
                    Some(String::from_utf8_lossy(value).into_owned())
                }
                _ => None,
            })
            .collect()
    }
}

/// Sends `message` from a client at `from` (`{auth_authen}` set when
/// `auth`), as `profile`'s MTA would.
pub(crate) fn send_as(
    r: &Running,
    profile: Profile,
    message: &[u8],
    from: &str,
    auth: bool,
) -> Sent {
    let mut builder = Client::builder().profile(profile);
    if auth {
        builder = builder.macro_value("{auth_authen}", "alice");
    }
    let mut client = builder.open(r.spec.as_str()).unwrap();
    let addr: SocketAddr = from.parse().unwrap();
    let envelope = Envelope::new("<alice@example.com>")
        .rcpt("<bob@example.org>")
        .client("client.example.net", ClientAddress::Ip(addr));
    let message = Message::parse(message);
    let transcript = client.send_message(&envelope, &message).unwrap();
    let _ = client.quit();
    let rules = match profile {
        Profile::Sendmail => ApplyRules::Sendmail,
        _ => ApplyRules::Postfix,
    };
    let delivered = match &transcript.eom {
        Some(eom) => eom
            .apply_with(rules, &message, &envelope)
            .message
            .to_bytes(),
        None => Vec::new(),
    };
    Sent {
        transcript,
        delivered,
    }
}

pub(crate) fn send(r: &Running, message: &[u8], from: &str) -> Sent {
    send_as(r, Profile::Postfix, message, from, false)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(data(name)).unwrap()
}

/// The dkim= results of our Authentication-Results, in order.
fn results(sent: &Sent) -> Vec<String> {
    let ar = sent.inserted("Authentication-Results");
    assert_eq!(ar.len(), 1, "{ar:?}");
    ar[0]
        .split(';')
        .skip(1)
        .map(|r| r.trim().to_string())
        .collect()
}

fn replace(message: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(message);
    assert!(text.contains(from), "{from:?} not in the message");
    text.replacen(from, to, 1).into_bytes()
}

#[test]
fn golden_signatures_are_byte_equal_to_the_reference() {
    for canon in ["relaxed", "simple"] {
        let r = start(config(&format!("canonicalization {canon}/{canon}\n")));
        for name in ["folded", "8bit", "empty-body", "spacing-crlf"] {
            let sent = send(&r, &read(&format!("messages/{name}.eml")), LOCAL);
            let signatures = sent.inserted("DKIM-Signature");
            assert_eq!(signatures.len(), 2, "{name}: {signatures:?}");
            let actual = signatures.join("\n--\n") + "\n";
            let golden = data(&format!("golden/{name}.{canon}.txt"));
            if std::env::var_os("DKIM_RECORD_GOLDEN").is_some() {
                std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
                std::fs::write(&golden, &actual).unwrap();
            }
            let expected = std::fs::read_to_string(&golden).unwrap();
            assert_eq!(actual, expected, "{name} {canon}");
            // Inserted at the very top, where a signature belongs.
            assert!(sent
                .eom()
                .modifications
                .iter()
                .all(|m| matches!(m, Modification::InsertHeader { index: 0, .. })));
        }
    }
}

#[test]
fn signatures_cover_the_configured_headers_and_oversign() {
    let r = start(config(""));
    let sent = send(&r, &read("messages/folded.eml"), LOCAL);
    for sig in sent.inserted("DKIM-Signature") {
        let unfolded: String = sig.split_whitespace().collect();
        // One From, one Subject, one Date in the message: each listed twice.
        assert!(
            unfolded.contains("h=From:From:Subject:Subject:Date:Date:To:Message-ID;"),
            "{sig}"
        );
        assert!(unfolded.contains("c=relaxed/relaxed;"), "{sig}");
        assert!(unfolded.contains("t=1700000000;"), "{sig}");
    }
}

#[test]
fn verifies_messages_signed_by_opendkim() {
    let r = start(config("mode verify\n"));
    for name in ["folded", "8bit", "empty-body", "spacing-crlf"] {
        for canon in ["relaxed", "simple"] {
            let sent = send(&r, &read(&format!("signed/{name}.{canon}.eml")), REMOTE);
            let res = results(&sent);
            assert_eq!(res.len(), 1, "{name}.{canon}: {res:?}");
            assert!(
                res[0].starts_with("dkim=pass header.d=example.com header.s=rsa"),
                "{name}.{canon}: {res:?}"
            );
        }
    }
}

#[test]
fn line_ends_do_not_matter_once_the_mta_has_the_message() {
    // The same message with LF and with CRLF line ends reaches the milter the
    // same way (the MTA sends CRLF) and verifies.
    let r = start(config("mode verify\n"));
    let crlf = read("signed/folded.relaxed.eml");
    let lf: Vec<u8> = crlf.iter().copied().filter(|&b| b != b'\r').collect();
    for message in [crlf, lf] {
        let res = results(&send(&r, &message, REMOTE));
        assert!(res[0].starts_with("dkim=pass"), "{res:?}");
    }
}

#[test]
fn relaxed_and_simple_canonicalization_differ_on_white_space() {
    let r = start(config("mode verify\n"));
    // Changes of white space a relaxed signature survives and a simple one
    // does not: inside the Subject, and at the end of a body line.
    for (canon, want) in [("relaxed", "dkim=pass"), ("simple", "dkim=fail")] {
        let signed = read(&format!("signed/spacing-crlf.{canon}.eml"));
        let respaced = replace(
            &replace(&signed, "Subject:   spaced    out  ", "Subject: spaced out"),
            "trailing spaces   \r\n",
            "trailing spaces\r\n",
        );
        let res = results(&send(&r, &respaced, REMOTE));
        assert!(res[0].starts_with(want), "{canon}: {res:?}");
    }
}

#[test]
fn signed_mail_verifies_and_a_tampered_body_fails() {
    let signer = start(config(""));
    let verifier = start(config("on-fail reject\n"));
    for message in [
        "messages/folded.eml",
        "messages/8bit.eml",
        "messages/empty-body.eml",
    ] {
        let signed = send(&signer, &read(message), LOCAL).delivered;
        let sent = send(&verifier, &signed, REMOTE);
        let res = results(&sent);
        assert_eq!(res.len(), 2, "{message}: {res:?}");
        assert!(
            res.iter().all(|r| r.starts_with("dkim=pass")),
            "{message}: {res:?}"
        );
        assert!(res.iter().any(|r| r.contains("header.s=ed")), "{res:?}");
        assert!(res.iter().any(|r| r.contains("header.s=rsa")), "{res:?}");
        assert_eq!(sent.transcript.verdict, Verdict::Accept);
        // header.b= names each signature by the first 8 characters of its b= value.
        let text = String::from_utf8_lossy(&signed)
            .replace("\r\n\t", "")
            .replace("\r\n ", "");
        for line in text.lines().filter(|l| l.starts_with("DKIM-Signature:")) {
            let b = line
                .split(';')
                .map(str::trim)
                .find_map(|tag| tag.strip_prefix("b="))
                .expect("a b= tag");
            let b: String = b.chars().filter(|c| !c.is_whitespace()).take(8).collect();
            assert!(
                res.iter().any(|r| r.contains(&format!("header.b={b}"))),
                "{message}: no header.b={b} in {res:?}"
            );
        }

        let mut tampered = signed.clone();
        tampered.extend_from_slice(b"appended by a forwarder\r\n");
        let sent = send(&verifier, &tampered, REMOTE);
        let res = results(&sent);
        assert!(
            res.iter()
                .all(|r| r.starts_with("dkim=fail reason=\"body hash did not verify\"")),
            "{message}: {res:?}"
        );
        assert!(
            matches!(sent.transcript.verdict, Verdict::Reject { .. }),
            "{:?}",
            sent.transcript.verdict
        );
    }
}

#[test]
fn a_changed_signed_header_fails_and_quarantine_holds_it() {
    let signer = start(config(""));
    let verifier = start(config("on-fail quarantine\n"));
    let signed = send(&signer, &read("messages/folded.eml"), LOCAL).delivered;
    // Over-signing: an added second Subject breaks the signature too.
    for tampered in [
        replace(&signed, "To: bob@example.org", "To: eve@example.org"),
        replace(&signed, "Date:", "Subject: added later\r\nDate:"),
    ] {
        let sent = send(&verifier, &tampered, REMOTE);
        let res = results(&sent);
        assert!(res.iter().all(|r| r.starts_with("dkim=fail")), "{res:?}");
        assert!(matches!(sent.transcript.verdict, Verdict::Quarantine(_)));
    }
}

#[test]
fn authenticated_senders_are_signed_and_other_remote_mail_verified() {
    let r = start(config(""));
    let message = read("messages/folded.eml");
    let authenticated = send_as(&r, Profile::Postfix, &message, REMOTE, true);
    assert_eq!(authenticated.inserted("DKIM-Signature").len(), 2);
    let remote = send(&r, &message, REMOTE);
    assert!(remote.inserted("DKIM-Signature").is_empty());
    assert_eq!(results(&remote), ["dkim=none"]);
    // A domain without keys is not signed, even from inside.
    let other = replace(&message, "alice@example.com", "alice@example.org");
    let local = send(&r, &other, LOCAL);
    assert!(local.eom().modifications.is_empty(), "{:?}", local.eom());
}

#[test]
fn forged_results_naming_us_are_removed_with_either_mta() {
    let r = start(config("mode verify\n"));
    let signed = read("signed/folded.relaxed.eml");
    let forged = [
        b"Authentication-Results: mx.example.net; dkim=pass header.d=bank.example\r\n".as_slice(),
        b"Authentication-Results: other.example; dkim=pass\r\n",
        b"Authentication-Results: (comment) MX.Example.NET 1;\r\n\tdkim=pass\r\n",
    ]
    .concat();
    let message = [forged.as_slice(), &signed].concat();
    for profile in [Profile::Postfix, Profile::Sendmail] {
        let sent = send_as(&r, profile, &message, REMOTE, false);
        let deletes: Vec<u32> = sent
            .eom()
            .modifications
            .iter()
            .filter_map(|m| match m {
                Modification::ChangeHeader { index, value, .. } if value.is_empty() => Some(*index),
                _ => None,
            })
            .collect();
        assert_eq!(deletes, [3, 1], "{profile:?}: highest first");
        let text = String::from_utf8_lossy(&sent.delivered).into_owned();
        let ar: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("Authentication-Results:"))
            .collect();
        assert_eq!(ar.len(), 2, "{profile:?}: {text}");
        assert!(
            ar[0].starts_with("Authentication-Results: mx.example.net;"),
            "{ar:?}"
        );
        assert!(
            ar[1].starts_with("Authentication-Results: other.example;"),
            "{ar:?}"
        );
        assert!(
            text.contains("dkim=pass header.d=example.com header.s=rsa"),
            "{text}"
        );
    }
}

#[test]
fn a_dns_server_that_does_not_answer_gives_temperror() {
    // A loopback socket that never answers: the lookup runs out of time.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let text = format!(
        "authserv-id mx.example.net\nmode verify\ndns-server 127.0.0.1:{port}\ndns-timeout 0.5\n"
    );
    let r = start(Config::parse(&text, "test", Path::new(DATA)).unwrap());
    let res = results(&send(&r, &read("signed/folded.relaxed.eml"), REMOTE));
    assert_eq!(res.len(), 1);
    assert!(res[0].starts_with("dkim=temperror"), "{res:?}");
    drop(silent);
}

#[test]
fn shadow_mode_changes_nothing() {
    let r = start_with(config("on-fail reject\n"), true);
    let signed = send(&r, &read("messages/folded.eml"), LOCAL);
    assert!(signed.eom().modifications.is_empty());
    let mut tampered = read("signed/folded.relaxed.eml");
    tampered.extend_from_slice(b"more\r\n");
    let sent = send(&r, &tampered, REMOTE);
    assert!(sent.eom().modifications.is_empty());
    assert_eq!(sent.transcript.verdict, Verdict::Accept);
}

#[test]
fn forged_results_are_removed_even_from_a_message_too_large_to_capture() {
    let r = start(config("mode verify\n"));
    // Over the capture's 1 MiB of headers.
    let pad = "x".repeat(60_000);
    let mut message = b"Authentication-Results: mx.example.net; dkim=pass\r\n".to_vec();
    for i in 0..20 {
        message.extend_from_slice(format!("X-Pad-{i}: {pad}\r\n").as_bytes());
    }
    message.extend_from_slice(&read("signed/folded.relaxed.eml"));
    let sent = send(&r, &message, REMOTE);
    assert_eq!(
        sent.eom().modifications,
        [Modification::ChangeHeader {
            name: b"Authentication-Results".to_vec(),
            index: 1,
            value: Vec::new()
        }]
    );
}
