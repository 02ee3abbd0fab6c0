//! Busy polling before blocking reads: with polling forced on for every
//! connection (and off), conversations give the same answers, commands that
//! trickle in byte by byte or arrive in bursts are read whole, large
//! replacement bodies are still written with blocking writes, and read timeouts
//! and shutdown still close idle connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{continue_, watchdog, Mta, TestServer};
use milter_blocking::milter_core::client::Decision;
use milter_blocking::milter_core::{Command, Modification};
use milter_blocking::{
    Actions, Context, EomContext, HandlerResult, Milter, ServerBuilder, SocketSpec, Spec, Stages,
    Status,
};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Counts body bytes and, for the sender `<big@x>`, replaces the body with
/// 4 MiB (more than any socket buffer holds, so the writes must block).
#[derive(Default)]
struct Counting {
    body: usize,
    big: bool,
}

const BIG: usize = 4 << 20;

impl milter_blocking::Declaration for Counting {
    const ACTIONS: milter_blocking::Actions = Actions::ADD_HEADER.union(Actions::CHANGE_BODY);
    fn reset_message(&mut self) {
        self.body = 0;
        self.big = false;
    }
}
impl milter_blocking::action::AddHeader for Counting {}
impl milter_blocking::action::ChangeBody for Counting {}

#[milter_blocking::handlers]
impl Milter for Counting {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec {
            handled: Stages::MAIL.union(Stages::BODY).union(Stages::HEADER),
            actions: Actions::ADD_HEADER.union(Actions::CHANGE_BODY),
            ..Spec::NONE
        };
    }

    fn mail(
        &mut self,
        _: &mut Context<'_>,
        a: &milter_blocking::EnvelopeAddr<'_>,
    ) -> HandlerResult {
        self.big = a.address == b"<big@x>";
        Ok(Status::Continue)
    }
    fn header(&mut self, _: &mut Context<'_>, _: &milter_blocking::Header<'_>) -> HandlerResult {
        Ok(Status::Continue)
    }
    fn body(&mut self, _: &mut Context<'_>, chunk: &[u8]) -> HandlerResult {
        self.body += chunk.len();
        Ok(Status::Continue)
    }
    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        ctx.add_header("X-Body", self.body.to_string())?;
        if self.big {
            ctx.replace_body(vec![b'y'; BIG])?;
        }
        Ok(Status::Continue)
    }
}

/// Polling for every connection, however many are open.
fn always(b: ServerBuilder) -> ServerBuilder {
    b.busy_poll(Duration::from_millis(2))
        .busy_poll_limit(usize::MAX)
}

fn never(b: ServerBuilder) -> ServerBuilder {
    b.busy_poll(Duration::ZERO)
}

fn unix_server(configure: fn(ServerBuilder) -> ServerBuilder) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.sock");
    let builder = milter_blocking::Server::builder()
        .listen(&format!("unix:{}", path.display()))
        .unwrap();
    let server = configure(builder).build(Counting::default).unwrap();
    (TestServer::run(server), dir)
}

/// One message; returns the X-Body value and the replaced body's length.
fn message(mta: &mut Mta, from: &str, body: &[u8]) -> (String, usize) {
    assert_eq!(mta.mail(from, &[]), continue_());
    mta.send(Command::Data);
    assert_eq!(mta.header("Subject", "hi"), continue_());
    mta.send(Command::Eoh);
    for chunk in body.chunks(65535) {
        assert_eq!(mta.body(chunk), continue_());
    }
    let eom = mta.eom();
    assert_eq!(eom.decision, Decision::Continue);
    let mut stamp = None;
    let mut replaced = 0;
    for m in &eom.modifications {
        match m {
            Modification::AddHeader { name, value } if name == b"X-Body" => {
                stamp = Some(String::from_utf8(value.clone()).unwrap());
            }
            Modification::ReplaceBody(b) => replaced += b.len(),
            other => panic!("unexpected {other:?}"),
        }
    }
    (stamp.expect("X-Body"), replaced)
}

fn conversations(spec: &SocketSpec, connections: usize, messages: usize) {
    let threads: Vec<_> = (0..connections)
        .map(|c| {
            let spec = spec.clone();
            std::thread::spawn(move || {
                let mut mta = Mta::connect(&spec);
                mta.connect_stage("h", "127.0.0.1", 1);
                mta.helo("h");
                for m in 0..messages {
                    let len = 1 + (c * 7919 + m * 104_729) % 300_000;
                    let body = vec![b'x'; len];
                    let (stamp, replaced) = message(&mut mta, "<a@x>", &body);
                    assert_eq!(stamp, len.to_string(), "connection {c} message {m}");
                    assert_eq!(replaced, 0);
                }
                let (stamp, replaced) = message(&mut mta, "<big@x>", b"abc");
                assert_eq!(stamp, "3");
                assert_eq!(replaced, BIG);
                mta.send_only(Command::Quit);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("conversation");
    }
}

#[test]
fn polling_connections_give_the_same_answers_over_tcp() {
    watchdog(Duration::from_secs(60), || {
        for configure in [always, never] {
            let server = TestServer::with(configure, Counting::default);
            conversations(&server.spec, 6, 20);
            server.stop(Duration::from_secs(5)).unwrap();
        }
    });
}

#[test]
fn polling_connections_give_the_same_answers_over_unix_sockets() {
    watchdog(Duration::from_secs(60), || {
        for configure in [always, never] {
            let (server, _dir) = unix_server(configure);
            conversations(&server.spec, 6, 20);
            server.stop(Duration::from_secs(5)).unwrap();
        }
    });
}

#[test]
fn a_command_trickling_in_byte_by_byte_is_read_whole() {
    watchdog(Duration::from_secs(30), || {
        let server = TestServer::with(always, Counting::default);
        let mut mta = Mta::connect(&server.spec);
        mta.connect_stage("h", "127.0.0.1", 1);
        // MAIL FROM:<a@x>, one byte at a time, some gaps longer than the poll.
        let payload = b"M<a@x>\0";
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        for (i, byte) in frame.iter().enumerate() {
            mta.conn.write_all(std::slice::from_ref(byte)).unwrap();
            if i % 3 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // The milter answers the whole command `c`, once.
        let mut reply = [0u8; 5];
        mta.conn.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"\0\0\0\x01c");
        assert!(mta.quiet(Duration::from_millis(200)), "a second reply");
        server.stop(Duration::from_secs(5)).unwrap();
    });
}

#[test]
fn a_read_timeout_still_closes_an_idle_polling_connection() {
    watchdog(Duration::from_secs(30), || {
        let server = TestServer::with(
            |b| always(b).read_timeout(Duration::from_millis(300)),
            Counting::default,
        );
        let mut mta = Mta::connect(&server.spec);
        let started = Instant::now();
        assert!(mta.closed_by_milter(Duration::from_secs(10)));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(250),
            "closed after {waited:?}"
        );
        server.stop(Duration::from_secs(5)).unwrap();
    });
}

#[test]
fn shutdown_closes_polling_connections_between_messages() {
    watchdog(Duration::from_secs(30), || {
        let server = TestServer::with(always, Counting::default);
        let mut mtas: Vec<Mta> = (0..4).map(|_| Mta::connect(&server.spec)).collect();
        for mta in &mut mtas {
            mta.connect_stage("h", "127.0.0.1", 1);
            let (stamp, _) = message(mta, "<a@x>", b"hello");
            assert_eq!(stamp, "5");
        }
        server.stop(Duration::from_secs(5)).unwrap();
        for mta in &mut mtas {
            assert!(mta.closed_by_milter(Duration::from_secs(5)));
        }
    });
}
