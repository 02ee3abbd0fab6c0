//! Interoperation with the two verifiers and signers operators compare us
//! with, on this machine only: OpenDKIM (Debian's `opendkim`, run as a milter
//! on a loopback port and driven by the same client, keys from its
//! `TestPublicKeys` file, no DNS) and dkimpy (Debian's `python3-dkim`, called
//! with a `dnsfunc` that answers from the test records).
//!
//! The test keys are readable by anyone (they are in the repository), so
//! OpenDKIM runs with `RequireSafeKeys false`.
//!
//! Without the packages these tests say so and pass, except under `CI=true`,
//! where the packages are installed and their absence is a failure.
#![allow(clippy::unwrap_used)]

use super::tests::{config, data, records, send, start, LOCAL, REMOTE};
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const OPENDKIM: &str = "/usr/sbin/opendkim";
const PYTHON: &str = "/usr/bin/python3";

/// Whether the prerequisite is there; panics under CI when it is not.
fn available(test: &str, what: &str, ok: bool) -> bool {
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: {what} is missing (CI=true, so this is a failure, not a skip)");
        }
        eprintln!("skipping {test}: {what} is missing");
    }
    ok
}

fn dkimpy_available() -> bool {
    Command::new(PYTHON)
        .args(["-c", "import dkim, nacl"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A directory of its own under the system's temporary directory.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("dkim-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// OpenDKIM running as a milter on a loopback port.
struct OpenDkim {
    child: Child,
    spec: String,
    _dir: Scratch,
}

impl Drop for OpenDkim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OpenDkim {
    /// Signs mail from 127.0.0.1 with both test keys and verifies the rest,
    /// in `canon`, naming itself `opendkim.test`.
    fn start(canon: &str) -> OpenDkim {
        let dir = Scratch::new(&format!("opendkim-{canon}"));
        let d = &dir.0;
        let keys = Path::new(super::tests::DATA);
        std::fs::write(
            d.join("keytable"),
            format!(
                "rsa._domainkey.example.com example.com:rsa:{}\n\
                 ed._domainkey.example.com example.com:ed:{}\n",
                keys.join("rsa2048.pem").display(),
                keys.join("ed25519.pem").display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("signingtable"),
            "example.com rsa._domainkey.example.com\n",
        )
        .unwrap();
        let test_keys: String = records()
            .lines()
            .map(|l| l.trim_start_matches("dns-record ").to_string() + "\n")
            .collect();
        std::fs::write(d.join("testkeys"), test_keys).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let spec = format!("inet:{port}@127.0.0.1");
        std::fs::write(
            d.join("opendkim.conf"),
            format!(
                "Mode sv\nCanonicalization {canon}/{canon}\nKeyTable {0}/keytable\n\
                 SigningTable {0}/signingtable\nInternalHosts 127.0.0.1\n\
                 TestPublicKeys {0}/testkeys\nAuthservID opendkim.test\n\
                 RequireSafeKeys false\n\
                 Socket {spec}\nBackground no\nSyslog no\n",
                d.display()
            ),
        )
        .unwrap();
        let child = Command::new(OPENDKIM)
            .args(["-f", "-x"])
            .arg(d.join("opendkim.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "opendkim did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        OpenDkim {
            child,
            spec,
            _dir: dir,
        }
    }
}

/// OpenDKIM's dkim= results for `message` (sent from a remote client).
fn opendkim_results(od: &OpenDkim, message: &[u8]) -> String {
    let r = super::tests::Running::at(&od.spec);
    let sent = send(&r, message, REMOTE);
    sent.inserted("Authentication-Results").join("\n")
}

/// dkimpy's verdict for each signature of `message`: `true` when it verifies.
fn dkimpy(message: &[u8]) -> Vec<bool> {
    let script = r#"
import sys, dkim
records = {}
for line in open(sys.argv[1]):
    if line.startswith("dns-record "):
        name, record = line[len("dns-record "):].strip().split(" ", 1)
        records[name.encode() + b"."] = record.encode()
def dnsfunc(name, timeout=5):
    return records.get(name)
message = sys.stdin.buffer.read()
d = dkim.DKIM(message)
count = len([h for h in d.headers if h[0].lower() == b"dkim-signature"])
def check(i):
    try:
        return "pass" if d.verify(idx=i, dnsfunc=dnsfunc) else "fail"
    except dkim.ValidationError as e:
        print(f"dkimpy: signature {i}: {e}", file=sys.stderr)
        return "fail"
print(" ".join(check(i) for i in range(count)))
"#;
    let dir = Scratch::new("dkimpy");
    let recs = dir.0.join("records");
    std::fs::write(&recs, records()).unwrap();
    let mut child = Command::new(PYTHON)
        .args(["-c", script])
        .arg(&recs)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "dkimpy failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|w| w == "pass")
        .collect()
}

fn message(name: &str) -> Vec<u8> {
    std::fs::read(data(&format!("messages/{name}.eml"))).unwrap()
}

#[test]
fn our_signatures_verify_with_opendkim_and_a_tampered_body_fails() {
    const TEST: &str = "our_signatures_verify_with_opendkim_and_a_tampered_body_fails";
    if !available(TEST, OPENDKIM, Path::new(OPENDKIM).exists()) {
        return;
    }
    for canon in ["relaxed", "simple"] {
        let ours = start(config(&format!("canonicalization {canon}/{canon}\n")));
        let od = OpenDkim::start(canon);
        for name in ["folded", "8bit", "empty-body", "spacing-crlf"] {
            let signed = send(&ours, &message(name), LOCAL).delivered;
            let results = opendkim_results(&od, &signed);
            // OpenDKIM reports one result per signature it checked.
            assert!(
                results.contains("dkim=pass") && !results.contains("dkim=fail"),
                "{name} {canon}: {results}"
            );
            let mut tampered = signed.clone();
            tampered.extend_from_slice(b"tampered\r\n");
            let results = opendkim_results(&od, &tampered);
            assert!(
                !results.contains("dkim=pass") && results.contains("dkim=fail"),
                "{name} {canon} tampered: {results}"
            );
        }
    }
}

#[test]
fn opendkim_signatures_verify_with_ours() {
    const TEST: &str = "opendkim_signatures_verify_with_ours";
    if !available(TEST, OPENDKIM, Path::new(OPENDKIM).exists()) {
        return;
    }
    let ours = start(config("mode verify\n"));
    for canon in ["relaxed", "simple"] {
        let od = OpenDkim::start(canon);
        let r = super::tests::Running::at(&od.spec);
        for name in ["folded", "8bit", "empty-body", "spacing-crlf"] {
            let signed = send(&r, &message(name), LOCAL);
            assert_eq!(signed.inserted("DKIM-Signature").len(), 1, "{name}");
            let verified = send(&ours, &signed.delivered, REMOTE);
            let ar = verified.inserted("Authentication-Results").join("");
            assert!(
                ar.contains("dkim=pass header.d=example.com header.s=rsa"),
                "{name} {canon}: {ar}"
            );
            let mut tampered = signed.delivered.clone();
            tampered.extend_from_slice(b"tampered\r\n");
            let ar = send(&ours, &tampered, REMOTE)
                .inserted("Authentication-Results")
                .join("");
            assert!(ar.contains("dkim=fail"), "{name} {canon} tampered: {ar}");
        }
    }
}

#[test]
fn our_signatures_verify_with_dkimpy_and_a_tampered_body_fails() {
    const TEST: &str = "our_signatures_verify_with_dkimpy_and_a_tampered_body_fails";
    if !available(TEST, "python3-dkim and python3-nacl", dkimpy_available()) {
        return;
    }
    for canon in ["relaxed", "simple"] {
        let ours = start(config(&format!("canonicalization {canon}/{canon}\n")));
        for name in ["folded", "8bit", "empty-body", "spacing-crlf"] {
            let signed = send(&ours, &message(name), LOCAL).delivered;
            if let Some(dir) = std::env::var_os("DKIM_DUMP") {
                std::fs::write(Path::new(&dir).join(format!("{name}.{canon}.eml")), &signed)
                    .unwrap();
            }
            assert_eq!(dkimpy(&signed), [true, true], "{name} {canon}");
            let mut tampered = signed.clone();
            tampered.extend_from_slice(b"tampered\r\n");
            assert_eq!(dkimpy(&tampered), [false, false], "{name} {canon} tampered");
        }
    }
}
