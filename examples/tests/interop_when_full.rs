//! `ServerBuilder::when_full` behind a real, private Postfix: with every thread
//! busy and no queue, the milter's answer decides the SMTP session, whatever
//! Postfix's own failure policy (set to `accept` here, so that only the
//! milter's answer can tempfail the session).
//!
//! Needs root and the Debian package `postfix`; without it the test prints a skip
//! line (or fails under `CI=true`).

mod support;

use milter_blocking::{Milter, Server, ServerHandle, Spec, WhenFull};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::milter_process::missing_prerequisite;
use support::postfix::{self, Postfix, PostfixConfig};
use support::smtp::{SmtpClient, SmtpSink};

/// Asks for every stage and answers each with continue.
#[derive(Default)]
struct Plain;

impl milter_blocking::Declaration for Plain {}

#[milter_blocking::handlers]
impl Milter for Plain {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut Spec) {
        *spec = Spec::ALL_STAGES;
    }
}

/// A server with one thread, no queue, and `when_full`; its only thread is
/// held by a silent connection.
fn full_server(when_full: WhenFull) -> (u16, ServerHandle, std::thread::JoinHandle<()>, TcpStream) {
    let server = Server::builder()
        .listen("inet:0@127.0.0.1")
        .expect("bind")
        .max_connections(1)
        .queue(0)
        .when_full(when_full)
        .build(Plain::default)
        .expect("server");
    let addr = match server.local_spec() {
        milter_blocking::SocketSpec::Inet(a) => a,
        other => panic!("{other}"),
    };
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run().expect("server run"));
    let holder = TcpStream::connect(addr).expect("connect");
    let until = Instant::now() + Duration::from_secs(20);
    while handle.stats().open != 1 {
        assert!(
            Instant::now() < until,
            "the holding connection was not served"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (addr.port(), handle, thread, holder)
}

#[test]
fn when_full_decides_the_session_behind_postfix() {
    const TEST: &str = "when_full_decides_the_session_behind_postfix";
    if let Some(reason) = postfix::unavailable() {
        missing_prerequisite(TEST, &reason);
        return;
    }
    let sink = SmtpSink::start().expect("sink");
    let mut failures = Vec::new();
    let mut delivered = 0;
    // One Postfix for the three cases; each case points it at its own server.
    let mut mta: Option<Postfix> = None;
    for (when_full, want_tempfail) in [
        (WhenFull::Tempfail, true),
        (WhenFull::Accept, false),
        (WhenFull::Close, false),
    ] {
        let (port, handle, thread, holder) = full_server(when_full);
        let milter = format!("inet:127.0.0.1:{port}");
        let mta = match &mut mta {
            Some(mta) => {
                mta.reconfigure(&[&format!("smtpd_milters = {milter}")])
                    .unwrap_or_else(|e| panic!("{e}"));
                mta
            }
            None => mta.insert(
                Postfix::start(&PostfixConfig {
                    milter,
                    relay: sink.addr(),
                    extra_main_cf: vec!["milter_default_action = accept".into()],
                })
                .unwrap_or_else(|e| panic!("{e}")),
            ),
        };
        let mut smtp = SmtpClient::connect(mta.smtp_addr()).expect("smtp connect");
        smtp.ehlo("client.example.test").expect("ehlo");
        let mail = smtp.mail_from("<a@example.test>", &[]).expect("mail");
        if want_tempfail {
            if mail.code != 451 || !mail.last_line().starts_with("451 4.7.1") {
                failures.push(format!(
                    "{when_full:?}: MAIL answered {mail}\n{}",
                    mta.log()
                ));
            }
        } else {
            let rcpt = smtp.rcpt_to("<b@example.test>", &[]).expect("rcpt");
            let replies = smtp
                .data(b"From: a@example.test\r\nSubject: full\r\n\r\nbody\r\n")
                .expect("data");
            if !mail.is_positive() || !rcpt.is_positive() || !replies.final_reply().is_positive() {
                failures.push(format!(
                    "{when_full:?}: MAIL {mail}, RCPT {rcpt}, DATA {:?}\n{}",
                    replies.final_reply(),
                    mta.log()
                ));
            } else {
                delivered += 1;
                if sink
                    .wait_for_count(delivered, Duration::from_secs(30))
                    .is_err()
                {
                    failures.push(format!("{when_full:?}: nothing delivered\n{}", mta.log()));
                }
            }
        }
        let _ = smtp.quit();
        drop(holder);
        handle.shutdown(Duration::from_secs(5));
        thread.join().expect("server thread");
    }
    drop(mta);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
