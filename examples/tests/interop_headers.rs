//! The header helpers (`set_header`, `delete_all_headers`, `prepend_header`) behind a
//! real, private Postfix: the delivered message must have exactly the headers the
//! helper promises, also when the header edited is the first of the message.
//!
//! Needs root and the Debian package `postfix`; without it the test prints a skip line
//! (or fails under `CI=true`).

mod support;

use milter_blocking::{Context, EomContext, HandlerResult, Header, Milter, Server, Status};
use std::time::Duration;
use support::milter_process::missing_prerequisite;
use support::postfix::{self, Postfix, PostfixConfig};
use support::smtp::{SmtpClient, SmtpSink};

/// Edits headers as the message's `X-Op` header says.
#[derive(Milter, Default)]
#[milter(actions(add_header, change_header))]
struct HeaderOps {
    #[milter(per_message)]
    op: Vec<u8>,
}

#[milter_blocking::handlers]
impl Milter for HeaderOps {
    fn header(&mut self, _ctx: &mut Context<'_>, h: &Header<'_>) {
        if h.is("X-Op") {
            self.op = h.value.to_vec();
        }
    }

    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        match self.op.as_slice() {
            b"set-subject" => ctx.set_header("Subject", "fixed")?,
            b"set-new" => ctx.set_header("X-New", "added")?,
            b"delete-drop" => {
                ctx.delete_all_headers("X-Drop")?;
            }
            b"prepend" => ctx.prepend_header("X-Top", "first")?,
            other => return Err(format!("unknown op {:?}", String::from_utf8_lossy(other)).into()),
        }
        Ok(Status::Continue)
    }
}

struct Case {
    name: &'static str,
    message: &'static str,
    /// Header lines expected in the delivered message, in order, among those named
    /// Subject, From, X-New, X-Drop and X-Top (the MTA adds headers of its own).
    want: &'static [&'static str],
    /// Whether the first line of the delivered message is checked too.
    first_line: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case {
        name: "set_header replaces the first header and removes its twins",
        message: "Subject: one\r\nX-Op: set-subject\r\nFrom: a@example.test\r\nSubject: two\r\nSubject: three\r\n\r\nbody\r\n",
        want: &["Subject: fixed", "From: a@example.test"],
        first_line: None,
    },
    Case {
        name: "set_header adds a header the message lacks",
        message: "X-Op: set-new\r\nFrom: a@example.test\r\n\r\nbody\r\n",
        want: &["From: a@example.test", "X-New: added"],
        first_line: None,
    },
    Case {
        name: "delete_all_headers removes every occurrence, the first header too",
        message: "X-Drop: 1\r\nX-Op: delete-drop\r\nX-Drop: 2\r\nFrom: a@example.test\r\nX-Drop: 3\r\n\r\nbody\r\n",
        want: &["From: a@example.test"],
        first_line: None,
    },
    Case {
        name: "prepend_header puts the header on the first line",
        message: "X-Op: prepend\r\nFrom: a@example.test\r\n\r\nbody\r\n",
        want: &["X-Top: first", "From: a@example.test"],
        first_line: Some("X-Top: first"),
    },
];

#[test]
fn header_helpers_behind_postfix() {
    const TEST: &str = "header_helpers_behind_postfix";
    if let Some(reason) = postfix::unavailable() {
        missing_prerequisite(TEST, &reason);
        return;
    }
    let server = Server::builder()
        .listen("inet:0@127.0.0.1")
        .expect("bind")
        .build(HeaderOps::default)
        .expect("server");
    let milter_port = match server.local_spec() {
        milter_blocking::SocketSpec::Inet(a) => a.port(),
        other => panic!("{other}"),
    };
    let handle = server.handle();
    let server_thread = std::thread::spawn(move || server.run());
    let sink = SmtpSink::start().expect("sink");
    let config = PostfixConfig {
        milter: format!("inet:127.0.0.1:{milter_port}"),
        relay: sink.addr(),
        extra_main_cf: Vec::new(),
    };
    let mta = Postfix::start(&config).unwrap_or_else(|e| panic!("{e}"));
    let mut failures = Vec::new();
    for (n, case) in CASES.iter().enumerate() {
        let mut smtp = SmtpClient::connect(mta.smtp_addr()).expect("smtp connect");
        smtp.ehlo("client.example.test").expect("ehlo");
        smtp.mail_from("<a@example.test>", &[]).expect("mail");
        smtp.rcpt_to("<b@example.test>", &[]).expect("rcpt");
        let replies = smtp.data(case.message.as_bytes()).expect("data");
        let _ = smtp.quit();
        if !replies.final_reply().is_positive() {
            failures.push(format!(
                "{}: Postfix answered {:?}",
                case.name,
                replies.final_reply()
            ));
            continue;
        }
        let delivered = match sink.wait_for_count(n + 1, Duration::from_secs(30)) {
            Ok(d) => d[n].clone(),
            Err(_) => {
                failures.push(format!("{}: nothing delivered\n{}", case.name, mta.log()));
                continue;
            }
        };
        let got: Vec<String> = delivered
            .headers()
            .iter()
            .map(|h| h.raw().trim_end().to_string())
            .filter(|h| {
                // Only the headers the cases are about (the MTA adds its own).
                ["Subject:", "From:", "X-New:", "X-Drop:", "X-Top:"]
                    .iter()
                    .any(|n| h.starts_with(n))
            })
            .collect();
        if got != case.want {
            failures.push(format!(
                "{}: headers {got:?}, want {:?}",
                case.name, case.want
            ));
        }
        if let Some(first) = case.first_line {
            if delivered.first_line() != first {
                failures.push(format!(
                    "{}: first line {:?}",
                    case.name,
                    delivered.first_line()
                ));
            }
        }
    }
    drop(mta);
    handle.shutdown(Duration::from_secs(5));
    server_thread
        .join()
        .expect("server thread")
        .expect("server run");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// With HDR_LEADSPC negotiated, header values reach the milter and leave it exactly
/// as on the wire: no space stripped, none added (what DKIM "simple" needs).
#[derive(Milter, Default)]
#[milter(actions(add_header), options(header_leading_space))]
struct Verbatim {
    #[milter(per_message)]
    seen: Option<Vec<u8>>,
}

#[milter_blocking::handlers]
impl Milter for Verbatim {
    fn header(&mut self, _ctx: &mut Context<'_>, h: &Header<'_>) -> Status {
        if h.is("X-Lead") {
            self.seen = Some(h.value.to_vec());
        }
        Status::Continue
    }

    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        let seen = self.seen.take().unwrap_or_default();
        // Echo what arrived, in brackets, and add a value with two leading spaces.
        ctx.add_header("X-Seen", [b" [".as_slice(), &seen, b"]"].concat())?;
        ctx.add_header("X-Added", "  two leading spaces")?;
        Ok(Status::Continue)
    }
}

#[test]
fn leading_space_is_kept_both_ways_behind_postfix() {
    const TEST: &str = "leading_space_is_kept_both_ways_behind_postfix";
    if let Some(reason) = postfix::unavailable() {
        missing_prerequisite(TEST, &reason);
        return;
    }
    let server = Server::builder()
        .listen("inet:0@127.0.0.1")
        .expect("bind")
        .build(Verbatim::default)
        .expect("server");
    let milter_port = match server.local_spec() {
        milter_blocking::SocketSpec::Inet(a) => a.port(),
        other => panic!("{other}"),
    };
    let handle = server.handle();
    let server_thread = std::thread::spawn(move || server.run());
    let sink = SmtpSink::start().expect("sink");
    let config = PostfixConfig {
        milter: format!("inet:127.0.0.1:{milter_port}"),
        relay: sink.addr(),
        extra_main_cf: Vec::new(),
    };
    let mta = Postfix::start(&config).unwrap_or_else(|e| panic!("{e}"));
    let mut smtp = SmtpClient::connect(mta.smtp_addr()).expect("smtp connect");
    smtp.ehlo("client.example.test").expect("ehlo");
    smtp.mail_from("<a@example.test>", &[]).expect("mail");
    smtp.rcpt_to("<b@example.test>", &[]).expect("rcpt");
    let message = "X-Lead:   three spaces\r\nFrom: a@example.test\r\n\r\nbody\r\n";
    let replies = smtp.data(message.as_bytes()).expect("data");
    let _ = smtp.quit();
    assert!(
        replies.final_reply().is_positive(),
        "{:?}",
        replies.final_reply()
    );
    let delivered = sink
        .wait_for_count(1, Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("nothing delivered\n{}", mta.log()))[0]
        .clone();
    let raw: Vec<String> = delivered.headers().iter().map(|h| h.raw()).collect();
    drop(mta);
    handle.shutdown(Duration::from_secs(5));
    server_thread
        .join()
        .expect("server thread")
        .expect("server run");
    assert!(raw.iter().any(|h| h == "X-Lead:   three spaces"), "{raw:?}");
    assert!(
        raw.iter().any(|h| h == "X-Seen: [   three spaces]"),
        "{raw:?}"
    );
    assert!(
        raw.iter().any(|h| h == "X-Added:  two leading spaces"),
        "{raw:?}"
    );
}
