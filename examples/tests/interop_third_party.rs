//! The client against real third-party milters, compared with a real Postfix: the
//! same message goes through a private Postfix (with a recording proxy in front of
//! the milter, to see what the milter answered) and through
//! `milter_blocking::client` with the Postfix profile, to the same milter; what the
//! milter did (its modifications and its verdict) must be the same.
//!
//! OpenDKIM signs (one private instance, mode `s`, a key made for the test) and
//! verifies (another instance, mode `v`, the public key read from a local file with
//! `TestPublicKeys`, so no DNS). rspamd's proxy worker runs in milter mode and
//! scans by itself with two rules of the test's own (add-header and reject
//! actions), without the packaged modules. Each daemon runs on loopback with
//! private configuration files, is started once for this test binary (one test
//! function each), and has its resolver pointed at 127.0.0.1 so that nothing could
//! leave the machine; the rspamd test also checks its log shows no DNS request.
//!
//! Needs root and the Debian packages `postfix`, `opendkim`, `opendkim-tools` and
//! `rspamd`; skipped (or failing under `CI=true`) without.

mod support;

use milter_blocking::client::{Client, ClientAddress, Decision, Envelope, Message, Profile};
use milter_blocking::milter_core::{Modification, Reply};
use milter_blocking::SocketSpec;
use std::path::Path;
use std::time::Duration;
use support::milter_process::{
    free_port, missing_prerequisite, run_with_timeout, try_spawn_milter, MilterGuard, TempDir,
    START_TIMEOUT,
};
use support::postfix;
use support::recordings::{eom_answer, through_postfix};

const OPENDKIM: &str = "/usr/sbin/opendkim";
const OPENDKIM_GENKEY: &str = "/usr/sbin/opendkim-genkey";

/// Carries its own Date and Message-Id, so that Postfix adds no header the milter
/// would see (its Received header it hides from milters).
const MESSAGE: &str = "From: a@example.test\r\nTo: b@example.test\r\nSubject: third party\r\n\
Date: Sun, 06 Dec 2026 07:00:00 +0000\r\nMessage-Id: <interop-1@example.test>\r\n\r\n\
body line\r\nand another\r\n";

/// What a milter did with a message, comparable across the two paths.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// The verdict's code letter (`a`, `c`, `r`, `y`, ...).
    verdict: char,
    /// The text of a `y` verdict.
    reply: Option<String>,
    /// The modifications, with what varies by the second (a DKIM signature's `t=`
    /// and `b=`) left out.
    modifications: Vec<String>,
}

fn decision_code(d: &Decision) -> char {
    match d {
        Decision::Continue => 'c',
        Decision::Accept => 'a',
        Decision::Reject => 'r',
        Decision::Tempfail => 't',
        Decision::Discard => 'd',
        Decision::Skip => 's',
        Decision::Reply(_) => 'y',
        Decision::Shutdown => '4',
    }
}

/// A DKIM-Signature value without its timestamp and signature (tags `t=`, `b=`)
/// and without folding white space.
fn stable_value(name: &[u8], value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    if !name.eq_ignore_ascii_case(b"DKIM-Signature") {
        return text.into_owned();
    }
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    compact
        .split(';')
        .filter(|tag| !tag.starts_with("t=") && !tag.starts_with("b="))
        .collect::<Vec<_>>()
        .join(";")
}

fn describe(m: &Modification) -> String {
    match m {
        Modification::AddHeader { name, value } => format!(
            "add {}: {}",
            String::from_utf8_lossy(name),
            stable_value(name, value)
        ),
        Modification::InsertHeader { index, name, value } => format!(
            "insert [{index}] {}: {}",
            String::from_utf8_lossy(name),
            stable_value(name, value)
        ),
        Modification::ChangeHeader { index, name, value } => format!(
            "change {}[{index}]: {}",
            String::from_utf8_lossy(name),
            stable_value(name, value)
        ),
        other => format!("{other:?}"),
    }
}

/// The envelope both paths use.
fn envelope() -> Envelope {
    Envelope::new("<a@example.test>")
        .rcpt("<b@example.test>")
        .helo("client.example.test")
        .client(
            "localhost",
            ClientAddress::Ip(([127, 0, 0, 1], 40000).into()),
        )
}

/// The message through a private Postfix to `milter`; what the milter answered at
/// end of message, read from the recording.
fn via_postfix(milter: &SocketSpec, message: &str) -> Outcome {
    let rec = through_postfix(milter, message.as_bytes()).recording;
    let answer = eom_answer(&rec);
    let (verdict, mods) = answer.split_last().expect("an answer");
    Outcome {
        verdict: char::from(verdict.code()),
        reply: match verdict {
            Reply::ReplyCode(t) => Some(String::from_utf8_lossy(t).into_owned()),
            _ => None,
        },
        modifications: mods
            .iter()
            .filter(|r| !matches!(r, Reply::Progress))
            .map(|r| describe(&Modification::from_reply(r.clone()).expect("a modification")))
            .collect(),
    }
}

/// The message through the client with the Postfix profile; the outcome and the
/// raw modifications.
fn via_client(milter: &SocketSpec, message: &str) -> (Outcome, Vec<Modification>) {
    let mut c = Client::builder()
        .profile(Profile::Postfix)
        .open(milter)
        .expect("client");
    let t = c
        .send_message(&envelope(), &Message::parse(message.as_bytes()))
        .expect("send_message");
    let _ = c.quit();
    let eom = t.eom.expect("end of message reached");
    let outcome = Outcome {
        verdict: decision_code(&eom.decision),
        reply: match &eom.decision {
            Decision::Reply(t) => Some(String::from_utf8_lossy(t).into_owned()),
            _ => None,
        },
        modifications: eom.modifications.iter().map(describe).collect(),
    };
    (outcome, eom.modifications)
}

/// Makes a key pair with `opendkim-genkey`; returns the public key record text
/// (`v=DKIM1; ...; p=...`).
fn make_key(dir: &Path) -> String {
    let out = run_with_timeout(
        std::process::Command::new(OPENDKIM_GENKEY)
            .arg("-D")
            .arg(dir)
            .args(["-d", "example.test", "-s", "sel", "-b", "1024"]),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("opendkim-genkey: {e}"));
    assert!(out.status.success(), "opendkim-genkey: {out:?}");
    let txt = std::fs::read_to_string(dir.join("sel.txt")).expect("sel.txt");
    // sel._domainkey IN TXT ( "v=DKIM1; h=sha256; k=rsa; " "p=..." ) ; comment
    txt.split('"')
        .skip(1)
        .step_by(2)
        .collect::<String>()
        .trim()
        .to_owned()
}

fn start_opendkim(dir: &Path, name: &str, settings: &[String]) -> (MilterGuard, SocketSpec) {
    let port = free_port();
    let conf = dir.join(format!("{name}.conf"));
    let mut text = vec![
        "Background no".to_owned(),
        "Syslog no".into(),
        format!("PidFile {}", dir.join(format!("{name}.pid")).display()),
        // Any look-up goes to this machine, where nothing answers.
        "Nameservers 127.0.0.1".into(),
        "Canonicalization relaxed/relaxed".into(),
    ];
    text.extend(settings.iter().cloned());
    std::fs::write(&conf, text.join("\n") + "\n").expect("write conf");
    let spec = format!("inet:{port}@127.0.0.1");
    let conf_arg = conf.to_string_lossy().into_owned();
    let guard = try_spawn_milter(
        Path::new(OPENDKIM),
        &["-f", "-x", &conf_arg, "-p"],
        &spec,
        START_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (guard, spec.parse().expect("spec"))
}

#[test]
fn opendkim_signs_and_verifies_the_same_through_postfix_and_the_client() {
    const TEST: &str = "opendkim_signs_and_verifies_the_same_through_postfix_and_the_client";
    if let Some(reason) = postfix::unavailable() {
        missing_prerequisite(TEST, &reason);
        return;
    }
    for program in [OPENDKIM, OPENDKIM_GENKEY] {
        if !Path::new(program).is_file() {
            missing_prerequisite(
                TEST,
                &format!("{program} not found (Debian packages opendkim, opendkim-tools)"),
            );
            return;
        }
    }
    let dir = TempDir::new("opendkim").expect("temp dir");
    let public = make_key(dir.path());
    std::fs::write(
        dir.path().join("public-keys"),
        format!("sel._domainkey.example.test {public}\n"),
    )
    .expect("public keys");
    // No host is internal to the verifier, so it verifies mail from 127.0.0.1.
    std::fs::write(dir.path().join("internal-hosts"), "192.0.2.250\n").expect("hosts");
    let key = dir.path().join("sel.private");
    let (_signer, signer) = start_opendkim(
        dir.path(),
        "signer",
        &[
            "Mode s".into(),
            "Domain example.test".into(),
            "Selector sel".into(),
            format!("KeyFile {}", key.display()),
            "RequireSafeKeys no".into(),
        ],
    );
    let (_verifier, verifier) = start_opendkim(
        dir.path(),
        "verifier",
        &[
            "Mode v".into(),
            format!(
                "TestPublicKeys {}",
                dir.path().join("public-keys").display()
            ),
            format!(
                "InternalHosts {}",
                dir.path().join("internal-hosts").display()
            ),
            "AuthservID verifier.test".into(),
            "AlwaysAddARHeader yes".into(),
        ],
    );

    // Signing.
    let real = via_postfix(&signer, MESSAGE);
    let (ours, raw) = via_client(&signer, MESSAGE);
    assert_eq!(real, ours, "OpenDKIM signing: Postfix, then the client");
    assert!(
        ours.modifications.iter().any(|m| m
            .starts_with("insert [0] DKIM-Signature: v=1;a=rsa-sha256;")
            && m.contains("d=example.test;s=sel;")),
        "{ours:?}"
    );

    // Verifying the message as signed through the client.
    let Some(Modification::InsertHeader { value, .. }) = raw.first() else {
        panic!("no signature in {raw:?}")
    };
    let signature = String::from_utf8_lossy(value).replace('\n', "\r\n");
    let signed = format!("DKIM-Signature:{signature}\r\n{MESSAGE}");
    let real = via_postfix(&verifier, &signed);
    let (ours, _) = via_client(&verifier, &signed);
    assert_eq!(real, ours, "OpenDKIM verifying: Postfix, then the client");
    assert!(
        ours.modifications
            .iter()
            .any(|m| m.starts_with("insert [0] Authentication-Results:")
                && m.contains(" verifier.test;")
                && m.contains("dkim=pass")),
        "{ours:?}"
    );
}

const RSPAMD: &str = "/usr/bin/rspamd";

/// Two rules of the test's own, on the subject: `spammy` scores 7 (the add-header
/// action), `reject me` scores 20 (reject).
const RSPAMD_RULES: &str = r#"
rspamd_config.TEST_SPAMMY = {
  callback = function(task)
    local s = task:get_subject()
    return s ~= nil and s:find("spammy", 1, true) ~= nil
  end,
  score = 7.0,
  description = "test rule: the subject is spammy",
}
rspamd_config.TEST_REJECT_ME = {
  callback = function(task)
    local s = task:get_subject()
    return s ~= nil and s:find("reject me", 1, true) ~= nil
  end,
  score = 20.0,
  description = "test rule: the subject asks for rejection",
}
"#;

/// A private rspamd: its proxy worker in milter mode scanning by itself
/// (`self_scan`), none of the packaged modules (they fetch maps and query DNS
/// lists), the test's rules, a list of four top-level domains instead of the
/// public suffix list (which takes long to compile), and a resolver on a port of
/// 127.0.0.1 where nothing answers. Stopped on drop.
struct Rspamd {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Rspamd {
    fn start(dir: &Path, port: u16) -> Rspamd {
        let d = dir.display();
        std::fs::write(dir.join("rules.lua"), RSPAMD_RULES).expect("rules");
        std::fs::write(dir.join("tld.dat"), "test\ncom\nnet\norg\n").expect("tld");
        let conf = format!(
            r#"options {{
  pidfile = "{d}/rspamd.pid";
  dbdir = "{d}";
  tempdir = "{d}";
  hs_cache_dir = "{d}";
  url_tld = "{d}/tld.dat";
  lua_path = "/usr/share/rspamd/lualib/?.lua;/usr/share/rspamd/lualib/?/init.lua";
  dns {{
    nameserver = ["127.0.0.1:1"];
    timeout = 0.1s;
    retransmits = 1;
  }}
}}
logging {{
  type = "file";
  filename = "{d}/rspamd.log";
  level = "info";
}}
actions {{
  reject = 15;
  add_header = 6;
}}
lua = "{d}/rules.lua";
worker "rspamd_proxy" {{
  bind_socket = "127.0.0.1:{port}";
  milter = yes;
  timeout = 60s;
  count = 1;
  upstream "local" {{
    default = yes;
    self_scan = yes;
  }}
  spam_header = "X-Spam";
  reject_message = "Spam message rejected";
}}
"#
        );
        let conf_path = dir.join("rspamd.conf");
        std::fs::write(&conf_path, conf).expect("rspamd.conf");
        let out = std::fs::File::create(dir.join("rspamd.out")).expect("rspamd.out");
        // -i: the test runs as root; the workers may too.
        let child = std::process::Command::new(RSPAMD)
            .args(["-f", "-i", "-c"])
            .arg(&conf_path)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting rspamd: {e}"));
        let rspamd = Rspamd {
            child,
            log: dir.join("rspamd.log"),
        };
        if let Err(e) = support::milter_process::wait_for_port(port, Duration::from_secs(60)) {
            panic!("rspamd: {e}\n{}", rspamd.log());
        }
        rspamd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Rspamd {
    fn drop(&mut self) {
        // SIGTERM lets the main process stop its workers; kill it if it lingers.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn with_subject(subject: &str) -> String {
    MESSAGE.replace("Subject: third party", &format!("Subject: {subject}"))
}

#[test]
fn rspamd_proxy_answers_the_same_through_postfix_and_the_client() {
    const TEST: &str = "rspamd_proxy_answers_the_same_through_postfix_and_the_client";
    if let Some(reason) = postfix::unavailable() {
        missing_prerequisite(TEST, &reason);
        return;
    }
    if !Path::new(RSPAMD).is_file() {
        missing_prerequisite(TEST, &format!("{RSPAMD} not found (Debian package rspamd)"));
        return;
    }
    let dir = TempDir::new("rspamd").expect("temp dir");
    let port = free_port();
    let rspamd = Rspamd::start(dir.path(), port);
    let milter: SocketSpec = format!("inet:{port}@127.0.0.1").parse().expect("spec");

    let cases = [
        ("a plain subject", 'a', Vec::<String>::new()),
        (
            "spammy offer",
            'a',
            vec!["change X-Spam[1]: Yes".to_owned()],
        ),
        ("please reject me", 'y', Vec::new()),
    ];
    for (subject, verdict, modifications) in cases {
        let message = with_subject(subject);
        let real = via_postfix(&milter, &message);
        let (ours, _) = via_client(&milter, &message);
        assert_eq!(
            real, ours,
            "rspamd, subject {subject:?}: Postfix, then the client"
        );
        assert_eq!(
            (ours.verdict, &ours.modifications),
            (verdict, &modifications),
            "rspamd, subject {subject:?}"
        );
        if verdict == 'y' {
            assert_eq!(
                ours.reply.as_deref(),
                Some("554 5.7.1 Spam message rejected")
            );
        }
    }
    let log = rspamd.log();
    assert_eq!(log.matches("rspamd_task_write_log").count(), 6, "{log}");
    let dns_requests: Vec<&str> = log
        .split("dns req: ")
        .skip(1)
        .map(|rest| rest.split(',').next().unwrap_or(""))
        .collect();
    assert_eq!(dns_requests, ["0"; 6], "rspamd made DNS requests:\n{log}");
}
