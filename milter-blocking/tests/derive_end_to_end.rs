//! A derived milter behind the server, driven by the client: stages without a
//! handler are not sent at all, stages whose handler cannot reply get no reply, and
//! the handlers see exactly what the MTA sent.
#![allow(clippy::unwrap_used)]

use milter_blocking::client::{Client, ClientAddress, Response};
use milter_blocking::milter_core::client::Decision;
use milter_blocking::{
    Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Server, Stages, Status,
};
use std::sync::Mutex;
use std::time::Duration;

static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[derive(Milter, Default)]
#[milter(actions(add_header))]
struct Derived {
    #[milter(per_message)]
    headers: usize,
}

#[milter_blocking::handlers]
impl Milter for Derived {
    fn rcpt(&mut self, _ctx: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
        SEEN.lock()
            .unwrap()
            .push(format!("rcpt {}", String::from_utf8_lossy(rcpt.address)));
        if rcpt.address == b"<no@example.org>" {
            Status::Reject
        } else {
            Status::Continue
        }
    }

    // Returns nothing: `#[handlers]` asks for NR_HDR, the MTA waits for no reply.
    fn header(&mut self, _ctx: &mut Context<'_>, h: &Header<'_>) {
        self.headers += 1;
        SEEN.lock()
            .unwrap()
            .push(format!("header {}", String::from_utf8_lossy(h.name)));
    }

    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        ctx.add_header("X-Headers", self.headers.to_string())?;
        Ok(Status::Continue)
    }
}

fn run() {
    let server = Server::builder()
        .listen("inet:0@127.0.0.1")
        .unwrap()
        .build(Derived::default)
        .unwrap();
    let spec = server.local_spec();
    let handle = server.handle();
    let t = std::thread::spawn(move || server.run());

    let mut c = Client::open(spec).unwrap();
    let n = c.negotiated().clone();
    assert_eq!(
        n.skipped,
        Stages::CONNECT
            | Stages::HELO
            | Stages::MAIL
            | Stages::DATA
            | Stages::EOH
            | Stages::BODY
            | Stages::UNKNOWN
    );
    assert_eq!(n.no_reply, Stages::HEADER);
    let addr = ClientAddress::Ip(([192, 0, 2, 1], 25).into());
    assert_eq!(c.connect("h", &addr).unwrap(), Response::Skipped);
    assert_eq!(c.helo("h").unwrap(), Response::Skipped);
    assert_eq!(c.mail("<a@example.org>").unwrap(), Response::Skipped);
    assert_eq!(
        c.rcpt("<no@example.org>").unwrap(),
        Response::Replied(Decision::Reject)
    );
    assert_eq!(
        c.rcpt("<yes@example.org>").unwrap(),
        Response::Replied(Decision::Continue)
    );
    assert_eq!(c.data().unwrap(), Response::Skipped);
    assert_eq!(c.header("Subject", "one").unwrap(), Response::NoReply);
    assert_eq!(
        c.header("From", "a@example.org").unwrap(),
        Response::NoReply
    );
    assert_eq!(c.eoh().unwrap(), Response::Skipped);
    assert_eq!(c.body("text\r\n").unwrap(), Response::Skipped);
    let eom = c.eom().unwrap();
    assert_eq!(eom.decision, Decision::Continue);
    assert!(
        eom.has_added_header("X-Headers", "2"),
        "{:?}",
        eom.modifications
    );
    c.quit().unwrap();
    handle.shutdown(Duration::from_secs(5));
    t.join().unwrap().unwrap();
    assert_eq!(
        *SEEN.lock().unwrap(),
        [
            "rcpt <no@example.org>",
            "rcpt <yes@example.org>",
            "header Subject",
            "header From"
        ]
    );
}

#[test]
fn skipped_stages_are_not_sent_and_no_reply_stages_get_no_reply() {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        run();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(()) => t.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(p) = t.join() {
                std::panic::resume_unwind(p)
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("watchdog: still running after 30 s")
        }
    }
}
