//! The code of docs/TESTING.md, kept here so that it compiles and passes: unit
//! tests of a milter run in-process, the server on a port-0 or temporary Unix
//! socket listener, driven by `milter_blocking::client`.
//!
//! Keep this file and the page in step: the page shows this code, unchanged.

// The milter under test: refuses one sender, stamps every message it accepts.
use milter_blocking::{
    bare_address, handlers, Context, EnvelopeAddr, EomContext, HandlerResult, Milter, Server,
    ServerHandle, SocketSpec, Status,
};

#[derive(Milter, Default)]
#[milter(actions(add_header))]
struct Stamp {
    #[milter(per_message)]
    rcpts: usize,
}

#[handlers]
impl Milter for Stamp {
    fn mail(&mut self, _ctx: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
        if bare_address(from.address) == b"spammer@example.org" {
            return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
        }
        Ok(Status::Continue)
    }

    fn rcpt(&mut self, _ctx: &mut Context<'_>, _rcpt: &EnvelopeAddr<'_>) {
        self.rcpts += 1;
    }

    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        ctx.add_header("X-Rcpts", self.rcpts.to_string())?;
        Ok(Status::Continue)
    }
}

// --- The test server: started on a free port, stopped when dropped. ---

/// A milter server running on its own thread for the length of a test.
struct TestServer {
    spec: SocketSpec,
    handle: ServerHandle,
    thread: Option<std::thread::JoinHandle<Result<(), milter_blocking::ServerError>>>,
}

impl TestServer {
    /// Starts `factory`'s milter on `spec`: `inet:0@127.0.0.1` picks a free port.
    fn start<M, F>(spec: &str, factory: F) -> TestServer
    where
        M: Milter + 'static,
        F: Fn() -> M + Send + Sync + 'static,
    {
        let server = Server::builder()
            .listen(spec)
            .expect("listen")
            .build(factory)
            .expect("build");
        // The address actually bound: the port the system chose.
        let spec = server.local_spec();
        let handle = server.handle();
        let thread = std::thread::spawn(move || server.run());
        TestServer {
            spec,
            handle,
            thread: Some(thread),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.shutdown(std::time::Duration::ZERO);
        if let Some(thread) = self.thread.take() {
            let result = thread.join().expect("the server thread panicked");
            // Do not panic while a failed test is already unwinding.
            if !std::thread::panicking() {
                result.expect("the server failed");
            }
        }
    }
}

// --- The tests. ---

use milter_blocking::client::{ApplyRules, Client, Envelope, Message, Verdict};

#[test]
fn stamps_the_recipient_count() {
    let server = TestServer::start("inet:0@127.0.0.1", Stamp::default);
    let mut client = Client::open(&server.spec).expect("connect to the milter");

    let envelope = Envelope::new("alice@example.org")
        .rcpt("bob@example.com")
        .rcpt("carol@example.com");
    let message = Message::parse(b"Subject: hi\r\n\r\nHello.\r\n");
    let transcript = client
        .send_message(&envelope, &message)
        .expect("send the message");

    assert_eq!(transcript.verdict, Verdict::Accept);
    let eom = transcript.eom.as_ref().expect("end of message was reached");
    assert!(eom.has_added_header("X-Rcpts", "2"));

    // What the MTA would queue: the message with the modifications applied.
    let queued = transcript
        .delivered(ApplyRules::Postfix, &message, &envelope)
        .expect("the message is delivered");
    assert_eq!(queued.message.header("X-Rcpts"), Some(&b"2"[..]));
    client.quit().expect("quit");
}

#[test]
fn refuses_the_blocked_sender_at_mail() {
    let server = TestServer::start("inet:0@127.0.0.1", Stamp::default);
    let mut client = Client::open(&server.spec).expect("connect to the milter");

    let envelope = Envelope::new("spammer@example.org").rcpt("bob@example.com");
    let transcript = client
        .send_message(&envelope, &Message::parse(b"Subject: buy\r\n\r\nnow\r\n"))
        .expect("send the message");

    assert_eq!(
        transcript.verdict,
        Verdict::Reject {
            stage: milter_blocking::Stage::Mail,
            reply: Some(b"550 5.7.1 Sender blocked".to_vec()),
        }
    );
    assert!(transcript.eom.is_none());
    client.quit().expect("quit");
}

#[test]
fn stage_by_stage_over_a_unix_socket() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("milter.sock");
    let server = TestServer::start(&format!("unix:{}", path.display()), Stamp::default);
    let mut client = Client::open(&server.spec).expect("connect to the milter");

    // The milter asked the MTA to skip the stages it has no handler for.
    let negotiated = client.negotiated();
    assert!(negotiated
        .skipped
        .contains(milter_blocking::Stages::HELO | milter_blocking::Stages::BODY));

    // One call per stage, as an MTA sends them; a skipped stage is not sent.
    use milter_blocking::client::{ClientAddress, Decision, Response};
    client
        .connect("client.example.net", &ClientAddress::default())
        .expect("connect");
    let mail = client.mail("<spammer@example.org>").expect("mail");
    assert_eq!(mail.reply_code(), Some(550));
    client.abort().expect("abort");

    client.mail("<alice@example.org>").expect("mail");
    // RCPT returns nothing in this milter: the MTA does not wait for a reply.
    assert_eq!(
        client.rcpt("<bob@example.com>").expect("rcpt"),
        Response::NoReply
    );
    client.data().expect("data");
    client.header("Subject", "hi").expect("header");
    client.eoh().expect("eoh");
    client.body(b"Hello.\r\n").expect("body");
    let eom = client.eom().expect("eom");
    assert_eq!(eom.decision, Decision::Continue);
    assert_eq!(eom.added_header("X-Rcpts"), Some(&b"1"[..]));
    client.quit().expect("quit");
}

// --- Not on the page: the check that the page shows this file's code. ---

#[test]
fn the_testing_page_shows_this_code() {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/TESTING.md"))
        .expect("read docs/TESTING.md");
    let this_file = include_str!("testing_guide.rs");
    let blocks: Vec<&str> = page
        .split("```rust\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap_or_default())
        .collect();
    assert!(blocks.len() >= 3, "docs/TESTING.md lost its code blocks");
    for block in blocks {
        assert!(
            this_file.contains(block),
            "docs/TESTING.md shows code that is not in tests/testing_guide.rs:\n{block}"
        );
    }
}
