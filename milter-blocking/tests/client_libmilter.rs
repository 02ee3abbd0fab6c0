//! The client against a milter nobody here wrote: `tests/data/stamp.c` on the C
//! reference library libmilter, side by side with an equivalent Rust milter behind
//! our server. Both must give the same negotiation, the same replies and the same
//! modifications for the same inputs, under the Postfix and the Sendmail profile.
//!
//! Needs `cc` and libmilter (Debian: `libmilter-dev`). Without them the test prints
//! a skip line, or fails when `CI=true`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers outside #[test] fns.

#[path = "data/harness.rs"]
mod harness;

use harness::{watchdog, ServerGuard};
use milter_blocking::client::{Client, Envelope, Message, Profile, Timeouts, Transcript, Verdict};
use milter_blocking::{
    Actions, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, SocketSpec, Spec,
    Stages, Status,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the C milter may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(20);

/// The Rust twin of `stamp.c` (see the comment at the top of that file).
#[derive(Default)]
struct Stamp {
    sender: Vec<u8>,
    removed: Option<Vec<u8>>,
    subject: Option<Vec<u8>>,
    replace: bool,
    quarantine: bool,
    headers: usize,
}

impl milter_blocking::Declaration for Stamp {
    const ACTIONS: milter_blocking::Actions = Actions::ADD_HEADER
        .union(Actions::CHANGE_HEADER)
        .union(Actions::ADD_RCPT)
        .union(Actions::DELETE_RCPT)
        .union(Actions::CHANGE_BODY)
        .union(Actions::QUARANTINE)
        .union(Actions::CHANGE_FROM);
    fn reset_message(&mut self) {
        *self = Stamp::default();
    }
}
impl milter_blocking::action::AddHeader for Stamp {}
impl milter_blocking::action::ChangeBody for Stamp {}
impl milter_blocking::action::AddRcpt for Stamp {}
impl milter_blocking::action::DeleteRcpt for Stamp {}
impl milter_blocking::action::ChangeHeader for Stamp {}
impl milter_blocking::action::Quarantine for Stamp {}
impl milter_blocking::action::ChangeFrom for Stamp {}

#[milter_blocking::handlers]
impl Milter for Stamp {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        // libmilter (8.17.1, a milter built with the current SMFI_VERSION) asks to
        // skip every stage without a callback, DATA and unknown commands included.
        *spec = Spec {
            handled: Stages::MAIL
                .union(Stages::RCPT)
                .union(Stages::HEADER)
                .union(Stages::EOM),
            actions: Actions::ADD_HEADER
                .union(Actions::CHANGE_HEADER)
                .union(Actions::ADD_RCPT)
                .union(Actions::DELETE_RCPT)
                .union(Actions::CHANGE_BODY)
                .union(Actions::QUARANTINE)
                .union(Actions::CHANGE_FROM),
            ..Spec::NONE
        };
    }

    fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
        milter_blocking::Declaration::reset_message(self);
        let addr = from.bare();
        if addr.eq_ignore_ascii_case(b"blocked@example.org") {
            return Ok(Status::reply(
                550,
                Some("5.7.1"),
                "sender blocked by stamp",
            )?);
        }
        if addr.eq_ignore_ascii_case(b"tempfail@example.org") {
            return Ok(Status::Tempfail);
        }
        self.sender = addr.to_vec();
        Ok(Status::Continue)
    }

    fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> HandlerResult {
        let addr = rcpt.bare();
        if addr.eq_ignore_ascii_case(b"nobody@example.com") {
            return Ok(Status::Reject);
        }
        if addr.eq_ignore_ascii_case(b"remove@example.com") {
            self.removed = Some(rcpt.address.to_vec());
        }
        Ok(Status::Continue)
    }

    fn header(&mut self, _: &mut Context<'_>, h: &Header<'_>) -> HandlerResult {
        if h.is("X-Stamp-Discard") {
            return Ok(Status::Discard);
        }
        self.headers += 1;
        self.replace |= h.is("X-Stamp-Replace");
        self.quarantine |= h.is("X-Stamp-Quarantine");
        if h.is("Subject") && self.subject.is_none() {
            self.subject = Some(h.value.to_vec());
        }
        Ok(Status::Continue)
    }

    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        ctx.add_header("X-Stamp", "stamped")?;
        if let Some(s) = &self.subject {
            ctx.change_header("Subject", 1, [&b"[stamp] "[..], s].concat())?;
        }
        ctx.add_rcpt("<copy@example.net>")?;
        if let Some(r) = &self.removed {
            ctx.delete_rcpt(r)?;
        }
        if self.sender.eq_ignore_ascii_case(b"change@example.org") {
            ctx.change_from("<changed@example.org>", None)?;
        }
        if self.replace {
            ctx.replace_body(b"replaced\r\n")?;
        }
        if self.quarantine {
            ctx.quarantine("stamp quarantine")?;
        }
        ctx.insert_header(0, "X-Stamp-Top", "1")?;
        ctx.add_header("X-Stamp-Headers", self.headers.to_string())?;
        milter_blocking::Declaration::reset_message(self);
        Ok(Status::Continue)
    }

    fn abort(&mut self, _: &mut Context<'_>) -> HandlerResult<()> {
        milter_blocking::Declaration::reset_message(self);
        Ok(())
    }
}

/// Compiles `stamp.c`, or returns `None` (after a skip line) when there is no C
/// compiler or no libmilter; with `CI=true` that is a failure.
fn build_stamp(dir: &Path) -> Option<PathBuf> {
    let probe = dir.join("probe.c");
    std::fs::write(
        &probe,
        "#include <libmilter/mfapi.h>\nint main(void) { return smfi_version(0, 0, 0) == 0 ? 0 : 0; }\n",
    )
    .unwrap();
    let probe_ok = Command::new("cc")
        .arg(&probe)
        .arg("-o")
        .arg(dir.join("probe"))
        .args(["-lmilter", "-lpthread"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !probe_ok {
        let why = "cc or libmilter (libmilter-dev) is missing";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why}: CI must provide them");
        }
        eprintln!("SKIP client_libmilter: {why}");
        return None;
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/stamp.c");
    let bin = dir.join("stamp");
    let out = Command::new("cc")
        .args(["-Wall", "-Werror", "-O1"])
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .args(["-lmilter", "-lpthread"])
        .output()
        .expect("running cc");
    assert!(
        out.status.success(),
        "stamp.c does not compile:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(bin)
}

/// The C milter process, killed on drop.
struct CMilter {
    child: Child,
    spec: SocketSpec,
}

impl CMilter {
    fn start(bin: &Path, dir: &Path) -> CMilter {
        let path = dir.join("stamp.sock");
        let spec = SocketSpec::Unix(path.clone());
        let log = std::fs::File::create(dir.join("stamp.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("unix:{}", path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting stamp");
        let mut m = CMilter { child, spec };
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(&path).is_err() {
            if let Ok(Some(status)) = m.child.try_wait() {
                panic!(
                    "stamp exited with {status}: {}",
                    std::fs::read_to_string(dir.join("stamp.log")).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < START_LIMIT,
                "stamp did not listen within {START_LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }
}

impl Drop for CMilter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scenarios() -> Vec<(&'static str, Envelope, Message)> {
    let full = Message::parse(
        b"Subject: Hello\r\nX-Stamp-Replace: yes\r\nX-Stamp-Quarantine: yes\r\nTo: a@b\r\n\r\nold body\r\n",
    );
    let plain = Message::parse(b"From: x@y\nTo: a@b\n\nbody\nmore\n");
    let discard = Message::parse(b"Subject: bye\nX-Stamp-Discard: 1\nTo: a@b\n\nbody\n");
    vec![
        (
            "every modification",
            Envelope::new("change@example.org")
                .rcpt("keep@example.com NOTIFY=NEVER")
                .rcpt("nobody@example.com")
                .rcpt("<Remove@Example.COM>"),
            full,
        ),
        (
            "state is reset",
            Envelope::new("someone@example.org").rcpt("keep@example.com"),
            plain.clone(),
        ),
        (
            "blocked sender",
            Envelope::new("Blocked@Example.org").rcpt("keep@example.com"),
            plain.clone(),
        ),
        (
            "tempfailed sender",
            Envelope::new("tempfail@example.org").rcpt("keep@example.com"),
            plain.clone(),
        ),
        (
            "every recipient refused",
            Envelope::new("a@example.org").rcpt("nobody@example.com"),
            plain,
        ),
        (
            "discard at a header",
            Envelope::new("a@example.org").rcpt("keep@example.com"),
            discard,
        ),
    ]
}

fn run(spec: &SocketSpec, profile: Profile) -> (String, Vec<Transcript>) {
    let mut c = Client::builder()
        .profile(profile)
        .timeouts(Timeouts::uniform(Duration::from_secs(10)))
        .open(spec)
        .unwrap();
    let n = c.negotiated();
    let negotiated = format!(
        "version {} actions {:?} protocol {:?} skipped {:?} no_reply {:?}",
        n.version, n.actions, n.protocol, n.skipped, n.no_reply
    );
    let transcripts = scenarios()
        .iter()
        .map(|(_, env, msg)| c.send_message(env, msg).unwrap())
        .collect();
    c.quit().unwrap();
    (negotiated, transcripts)
}

#[test]
fn libmilter_and_our_server_agree() {
    watchdog(Duration::from_secs(90), || {
        let dir = tempfile::tempdir().unwrap();
        let Some(bin) = build_stamp(dir.path()) else {
            return;
        };
        let c_milter = CMilter::start(&bin, dir.path());
        let listen = format!("unix:{}", dir.path().join("rust.sock").display());
        let server = ServerGuard::start(&listen, Stamp::default);
        for profile in [Profile::Postfix, Profile::Sendmail] {
            let (c_neg, c_runs) = run(&c_milter.spec, profile);
            let (r_neg, r_runs) = run(&server.spec, profile);
            assert_eq!(c_neg, r_neg, "negotiation ({profile})");
            for (((name, _, _), c), r) in scenarios().iter().zip(&c_runs).zip(&r_runs) {
                assert_eq!(c.steps, r.steps, "{name} ({profile}): replies");
                assert_eq!(c.eom, r.eom, "{name} ({profile}): end of message");
                assert_eq!(c.verdict, r.verdict, "{name} ({profile}): verdict");
                assert_eq!(c.aborted, r.aborted, "{name} ({profile}): abort");
            }
            // And they are what stamp.c's comment says.
            let full = c_runs[0].eom.as_ref().unwrap();
            assert!(full.has_added_header("X-Stamp", "stamped"));
            assert!(full.has_added_header("X-Stamp-Headers", "4"));
            assert_eq!(full.header_changes("Subject"), [(1, &b"[stamp] Hello"[..])]);
            assert_eq!(full.deleted_rcpts(), [&b"<Remove@Example.COM>"[..]]);
            assert_eq!(full.new_sender(), Some(&b"<changed@example.org>"[..]));
            assert_eq!(full.new_body().as_deref(), Some(&b"replaced\r\n"[..]));
            assert_eq!(
                c_runs[0].verdict,
                Verdict::Quarantine(b"stamp quarantine".to_vec())
            );
            let plain = c_runs[1].eom.as_ref().unwrap();
            assert_eq!(plain.modifications.len(), 4, "{:?}", plain.modifications);
            assert_eq!(
                c_runs[2].verdict.to_string(),
                "reject at mail: 550 5.7.1 sender blocked by stamp"
            );
            assert_eq!(c_runs[3].verdict.to_string(), "tempfail at mail");
            assert_eq!(c_runs[4].verdict.to_string(), "reject at rcpt");
            assert_eq!(c_runs[5].verdict.to_string(), "discard at header");
        }
    });
}
