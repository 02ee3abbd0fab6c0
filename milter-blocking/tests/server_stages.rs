//! Every stage reaches the handler with the right arguments, in order.
#![allow(clippy::unwrap_used)]

mod common;

use common::{continue_, watchdog, Mta, TestServer};
use milter_blocking::milter_core::{Command, MacroStage};
use milter_blocking::{
    ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Spec, Status,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Log = Arc<Mutex<Vec<String>>>;

struct Recorder(Log);

impl Recorder {
    fn push(&self, s: String) {
        self.0.lock().unwrap().push(s);
    }
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl milter_blocking::Declaration for Recorder {
    fn reset_message(&mut self) {
        self.push("reset".into());
    }
}

#[milter_blocking::handlers]
impl Milter for Recorder {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec::ALL_STAGES;
    }

    fn connect(
        &mut self,
        ctx: &mut Context<'_>,
        host: &[u8],
        addr: ConnectAddr<'_>,
    ) -> HandlerResult {
        self.push(format!(
            "connect {} {addr} j={:?}",
            s(host),
            ctx.macro_str("j")
        ));
        Ok(Status::Continue)
    }
    fn helo(&mut self, _: &mut Context<'_>, name: &[u8]) -> HandlerResult {
        self.push(format!("helo {}", s(name)));
        Ok(Status::Continue)
    }
    fn mail(&mut self, ctx: &mut Context<'_>, a: &EnvelopeAddr<'_>) -> HandlerResult {
        let args: Vec<_> = a.args().map(s).collect();
        self.push(format!(
            "mail {} {args:?} auth={:?}",
            s(a.address),
            ctx.macro_str("{auth_authen}")
        ));
        Ok(Status::Continue)
    }
    fn rcpt(&mut self, _: &mut Context<'_>, a: &EnvelopeAddr<'_>) -> HandlerResult {
        let args: Vec<_> = a.args().map(s).collect();
        self.push(format!("rcpt {} {args:?}", s(a.address)));
        Ok(Status::Continue)
    }
    fn data(&mut self, ctx: &mut Context<'_>) -> HandlerResult {
        self.push(format!("data i={:?}", ctx.queue_id()));
        Ok(Status::Continue)
    }
    fn header(&mut self, _: &mut Context<'_>, h: &Header<'_>) -> HandlerResult {
        self.push(format!("header {}={:?}", s(h.name), s(h.value)));
        Ok(Status::Continue)
    }
    fn eoh(&mut self, _: &mut Context<'_>) -> HandlerResult {
        self.push("eoh".into());
        Ok(Status::Continue)
    }
    fn body(&mut self, _: &mut Context<'_>, chunk: &[u8]) -> HandlerResult {
        self.push(format!("body {}", chunk.len()));
        Ok(Status::Continue)
    }
    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        self.push(format!(
            "eom i={:?} j={:?}",
            ctx.queue_id(),
            ctx.macro_str("{j}")
        ));
        Ok(Status::Continue)
    }
    fn abort(&mut self, _: &mut Context<'_>) -> HandlerResult<()> {
        self.push("abort".into());
        Ok(())
    }
    fn close(&mut self, _: &mut Context<'_>) -> HandlerResult<()> {
        self.push("close".into());
        Ok(())
    }
    fn unknown(&mut self, _: &mut Context<'_>, line: &[u8]) -> HandlerResult {
        self.push(format!("unknown {}", s(line)));
        Ok(Status::Continue)
    }
}

fn wait_for(log: &Log, entry: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !log.lock().unwrap().iter().any(|e| e == entry) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {entry:?} in {:?}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn every_stage_reaches_the_handler_with_its_arguments() {
    watchdog(Duration::from_secs(30), || {
        let log: Log = Arc::default();
        let l = log.clone();
        let server = TestServer::start(move || Recorder(l.clone()));
        let mut mta = Mta::connect(&server.spec);
        mta.macros(b'C', &[("j", "mx.example.org")]);
        assert_eq!(
            mta.connect_stage("client.example.net", "192.0.2.7", 4567),
            continue_()
        );
        assert_eq!(mta.helo("client.example.net"), continue_());
        mta.macros(b'M', &[("{auth_authen}", "alice")]);
        assert_eq!(
            mta.mail("<a@example.org>", &["SIZE=10", "BODY=8BITMIME"]),
            continue_()
        );
        assert_eq!(mta.rcpt("<b@example.org>", &["NOTIFY=NEVER"]), continue_());
        mta.macros(b'T', &[("i", "QID1")]);
        assert_eq!(mta.send(Command::Data), continue_());
        assert_eq!(mta.header("Subject", " two spaces"), continue_());
        assert_eq!(mta.header("X-Folded", "a\n\tb"), continue_());
        assert_eq!(mta.send(Command::Eoh), continue_());
        assert_eq!(mta.body(&[b'x'; 65535]), continue_());
        assert_eq!(mta.body(b"tail\r\n"), continue_());
        mta.macros(b'E', &[("{i}", "QID1")]);
        assert_eq!(
            mta.eom().decision,
            milter_blocking::milter_core::client::Decision::Continue
        );
        mta.send_only(Command::Abort);
        assert_eq!(mta.send(Command::Unknown(b"XFOO bar")), continue_());
        mta.send_only(Command::Quit);
        wait_for(&log, "close");
        let got = log.lock().unwrap().clone();
        let want = [
            "connect client.example.net 192.0.2.7:4567 j=Some(\"mx.example.org\")",
            "helo client.example.net",
            "reset",
            "mail <a@example.org> [\"SIZE=10\", \"BODY=8BITMIME\"] auth=Some(\"alice\")",
            "rcpt <b@example.org> [\"NOTIFY=NEVER\"]",
            "data i=Some(\"QID1\")",
            "header Subject=\" two spaces\"",
            "header X-Folded=\"a\\n\\tb\"",
            "eoh",
            "body 65535",
            "body 6",
            "eom i=Some(\"QID1\") j=Some(\"mx.example.org\")",
            "reset",
            "unknown XFOO bar",
            "close",
        ];
        assert_eq!(got, want);
        drop(server);
    });
}

#[test]
fn every_address_family_reaches_connect() {
    watchdog(Duration::from_secs(30), || {
        use milter_blocking::milter_core::{Connect, Family};
        let log: Log = Arc::default();
        let l = log.clone();
        let server = TestServer::start(move || Recorder(l.clone()));
        let cases: [(Family, u16, &[u8], &str); 5] = [
            (Family::Inet, 25, b"192.0.2.1", "192.0.2.1:25"),
            (Family::Inet6, 26, b"IPv6:2001:db8::7", "[2001:db8::7]:26"),
            (Family::Inet6, 27, b"::1", "[::1]:27"),
            (Family::Unix, 0, b"/run/smtp.sock", "unix:/run/smtp.sock"),
            (Family::Unknown, 0, b"", "unknown"),
        ];
        for (family, port, address, want) in cases {
            log.lock().unwrap().clear();
            let mut mta = Mta::connect(&server.spec);
            let c = Connect {
                hostname: b"h",
                family,
                port,
                address,
            };
            assert_eq!(mta.send(Command::Connect(c)), continue_());
            mta.send_only(Command::Quit);
            wait_for(&log, "close");
            assert_eq!(log.lock().unwrap()[0], format!("connect h {want} j=None"));
        }
        let _ = MacroStage::Connect;
    });
}

#[test]
fn data_inside_eom_goes_to_the_body_handler_first() {
    watchdog(Duration::from_secs(30), || {
        let log: Log = Arc::default();
        let l = log.clone();
        let server = TestServer::start(move || Recorder(l.clone()));
        let mut mta = Mta::connect(&server.spec);
        mta.message_until_eom();
        // Our client refuses to send data in E; write the packet by hand and read
        // the one reply that must come back.
        mta.raw(b"\x00\x00\x00\x04Eabc");
        let mut reply = [0u8; 5];
        std::io::Read::read_exact(&mut mta.conn, &mut reply).unwrap();
        assert_eq!(&reply, b"\x00\x00\x00\x01c");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !log.lock().unwrap().iter().any(|e| e.starts_with("eom")) {
            assert!(
                std::time::Instant::now() < deadline,
                "{:?}",
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let got = log.lock().unwrap().clone();
        let at = got
            .iter()
            .position(|e| e == "body 3")
            .expect("body handler saw the chunk");
        assert!(got[at + 1].starts_with("eom"), "{got:?}");
        // Exactly one reply: nothing else is pending.
        assert!(mta.quiet(Duration::from_millis(200)));
    });
}
