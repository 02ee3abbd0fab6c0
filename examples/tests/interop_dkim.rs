//! The `dkim` example behind a real, private Postfix and Sendmail (loopback
//! only, keys pinned in the configuration, no DNS): mail from an internal
//! client is signed with the signature as its first line, the signed message
//! sent again from an external client verifies, a forged
//! Authentication-Results naming us is removed while another host's stays,
//! and a tampered body fails.
//!
//! Needs root and the Debian package `postfix` (and, for Sendmail, what
//! `interop_sendmail.rs` needs). Without them the tests print a skip line, or
//! fail under `CI=true`.

// A failed unwrap in a test is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use support::milter_process::{
    free_port, missing_prerequisite, spawn_milter, MilterGuard, TempDir,
};
use support::postfix::{self, Postfix, PostfixConfig};
use support::sendmail::{self, Sendmail, SendmailConfig};
use support::smtp::{Delivery, SmtpClient, SmtpSink};

const BIN: &str = env!("CARGO_BIN_EXE_dkim");
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/dkim");

/// One MTA at a time: they are heavy, and the machine is shared.
static SERIAL: Mutex<()> = Mutex::new(());

const MESSAGE: &str = "From: Alice <alice@example.com>\r\nTo: bob@example.org\r\n\
Subject: behind a real MTA\r\n  folded\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\
Message-ID: <mta@example.com>\r\n\r\nHello  world  \r\n\r\n";

/// The dkim milter with the test keys; `internal` is its `internal-hosts`.
fn start_milter(dir: &Path, internal: &str) -> (MilterGuard, String) {
    let rsa = std::fs::read_to_string(Path::new(DATA).join("rsa2048.pub.b64")).unwrap();
    let ed = std::fs::read_to_string(Path::new(DATA).join("ed25519.pub.b64")).unwrap();
    let conf = dir.join(format!("dkim-{}.conf", internal.replace(['/', ':'], "_")));
    std::fs::write(
        &conf,
        format!(
            "authserv-id mx.example.net\nkey-table {DATA}/keys\ninternal-hosts {internal}\n\
             dns-record rsa._domainkey.example.com v=DKIM1; k=rsa; p={}\n\
             dns-record ed._domainkey.example.com v=DKIM1; k=ed25519; p={}\n",
            rsa.trim(),
            ed.trim()
        ),
    )
    .unwrap();
    let port = free_port();
    let spec = format!("inet:{port}@127.0.0.1");
    let milter = spawn_milter(Path::new(BIN), &["--config", conf.to_str().unwrap()], &spec);
    (milter, spec)
}

/// An MTA in front of a milter: sends messages, returns what reached the sink.
trait Mta {
    fn smtp_addr(&self) -> SocketAddr;
    fn log(&self) -> String;
}

impl Mta for Postfix {
    fn smtp_addr(&self) -> SocketAddr {
        Postfix::smtp_addr(self)
    }
    fn log(&self) -> String {
        Postfix::log(self)
    }
}

impl Mta for Sendmail {
    fn smtp_addr(&self) -> SocketAddr {
        Sendmail::smtp_addr(self)
    }
    fn log(&self) -> String {
        Sendmail::log(self)
    }
}

fn deliver(mta: &dyn Mta, sink: &SmtpSink, message: &[u8]) -> Delivery {
    let before = sink.count();
    let mut smtp = SmtpClient::connect(mta.smtp_addr()).unwrap();
    smtp.ehlo("client.example.test").unwrap();
    smtp.mail_from("<alice@example.com>", &[]).unwrap();
    smtp.rcpt_to("<bob@example.org>", &[]).unwrap();
    let replies = smtp.data(message).unwrap();
    let _ = smtp.quit();
    assert!(
        replies.final_reply().is_positive(),
        "{:?}\n{}",
        replies.final_reply(),
        mta.log()
    );
    sink.wait_for_count(before + 1, Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("nothing delivered\n{}", mta.log()))[before]
        .clone()
}

/// The header block of a delivered message as lines (folds joined).
fn header_lines(d: &Delivery) -> Vec<String> {
    d.headers().iter().map(|h| h.raw()).collect()
}

/// Signs with one milter, verifies with another, through `start`'s MTA.
fn sign_and_verify(name: &str, start: &dyn Fn(&str, SocketAddr) -> Box<dyn Mta>) {
    let dir = TempDir::new("interop-dkim").unwrap();
    let sink = SmtpSink::start().unwrap();

    // Signing: the loopback client is internal.
    let (signer, spec) = start_milter(dir.path(), "127.0.0.1");
    let mta = start(&spec, sink.addr());
    let signed = deliver(&*mta, &sink, MESSAGE.as_bytes());
    drop(mta);
    let lines = header_lines(&signed);
    assert!(
        lines[0].starts_with("DKIM-Signature:") && lines[1].starts_with("DKIM-Signature:"),
        "{name}: the signatures are not the first headers: {lines:#?}\n{}",
        signer.log()
    );
    drop(signer);

    // Verifying: the loopback client is external now.
    let (verifier, spec) = start_milter(dir.path(), "192.0.2.0/24");
    let mta = start(&spec, sink.addr());
    let forged = [
        b"Authentication-Results: mx.example.net; dkim=pass header.d=bank.example\r\n".as_slice(),
        b"Authentication-Results: other.example; dkim=pass\r\n",
        b"Authentication-Results: mx.example.net; dkim=pass\r\n",
    ]
    .concat();
    let resent = [forged.as_slice(), &signed.data].concat();
    let verified = deliver(&*mta, &sink, &resent);
    let mut tampered = resent.clone();
    tampered.extend_from_slice(b"tampered\r\n");
    let failed = deliver(&*mta, &sink, &tampered);
    let log = format!("{}\n{}", mta.log(), verifier.log());
    drop(mta);
    drop(verifier);

    let lines = header_lines(&verified);
    let ar: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("Authentication-Results:"))
        .collect();
    assert_eq!(ar.len(), 2, "{name}: {lines:#?}\n{log}");
    assert!(
        lines[0].starts_with("Authentication-Results: mx.example.net;"),
        "{name}: ours is not first: {lines:#?}"
    );
    assert_eq!(
        lines[0].matches("dkim=pass").count(),
        2,
        "{name}: {}",
        lines[0]
    );
    assert!(
        ar[1].starts_with("Authentication-Results: other.example;"),
        "{name}: {ar:?}"
    );

    let lines = header_lines(&failed);
    assert!(
        lines[0].starts_with("Authentication-Results: mx.example.net;")
            && lines[0].matches("dkim=fail").count() == 2,
        "{name}: {}\n{log}",
        lines[0]
    );
}

#[test]
fn signs_and_verifies_behind_postfix() {
    const TEST: &str = "signs_and_verifies_behind_postfix";
    if let Some(reason) = postfix::unavailable() {
        missing_prerequisite(TEST, &reason);
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    sign_and_verify("postfix", &|spec, relay| {
        let port = spec
            .strip_prefix("inet:")
            .and_then(|s| s.split('@').next())
            .unwrap();
        let config = PostfixConfig {
            milter: format!("inet:127.0.0.1:{port}"),
            relay,
            extra_main_cf: Vec::new(),
        };
        Box::new(Postfix::start(&config).unwrap_or_else(|e| panic!("{e}")))
    });
}

#[test]
fn signs_and_verifies_behind_sendmail() {
    const TEST: &str = "signs_and_verifies_behind_sendmail";
    if let Some(reason) = sendmail::unavailable() {
        missing_prerequisite(TEST, &reason);
        return;
    }
    let root: PathBuf = match sendmail::sendmail_root() {
        Ok(root) => root,
        Err(reason) => {
            missing_prerequisite(TEST, &reason);
            return;
        }
    };
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    sign_and_verify("sendmail", &|spec, relay| {
        let config = SendmailConfig {
            milter: spec.to_string(),
            relay,
        };
        Box::new(Sendmail::start(&root, &config).unwrap_or_else(|e| panic!("{e}")))
    });
}
