//! Codec and session throughput.
//!
//! - `decode/*`, `encode/*`: one typical frame (a header, a recipient, a macro
//!   packet, continue) and a 64 KiB body chunk, decoded from bytes (framing plus
//!   `Command::decode` or `Reply::decode`) and encoded into a reused buffer.
//! - `session/message`: a `FrameDecoder` and a negotiated `FilterSession`
//!   handling one whole typical message (16 commands: three macro packets, MAIL,
//!   two RCPT, DATA, five headers, end of headers, a 4 KiB body chunk, end of
//!   message with one added header, Postfix's trailing abort), answering every
//!   stage.
//!
//! Run: `cargo bench -p milter-core --bench codec`. Under `cargo test --benches`
//! each benchmark runs once, so the bench cannot rot.

// Bench code: the inputs are fixed and valid, an unwrap failing is a bug to see.
#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use milter_core::filter::{Event, FilterSession};
use milter_core::frame::{decode_frame, FrameDecoder};
use milter_core::limits::DEFAULT_MAX_PAYLOAD;
use milter_core::{
    Actions, Command, Connect, EnvelopeAddr, Header, MacroDef, OptNeg, Reply, Spec, Stages, Status,
};
use std::hint::black_box;

fn wire(cmd: &Command<'_>) -> Vec<u8> {
    let mut w = Vec::new();
    cmd.encode(&mut w);
    w
}

fn body_chunk() -> Vec<u8> {
    b"0123456789abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n"
        .iter()
        .copied()
        .cycle()
        .take(65535)
        .collect()
}

fn decode_command(bytes: &[u8]) -> usize {
    let (frame, used) = decode_frame(bytes, DEFAULT_MAX_PAYLOAD).unwrap().unwrap();
    let cmd = Command::decode(frame).unwrap();
    black_box(&cmd);
    used
}

fn codec(c: &mut Criterion) {
    let body = body_chunk();
    let header = Command::Header(Header {
        name: b"Subject",
        value: b"Re: the quarterly report, revised",
    });
    let rcpt = Command::Rcpt(EnvelopeAddr {
        address: b"<recipient@example.org>",
        args_raw: b"NOTIFY=SUCCESS,FAILURE\0ORCPT=rfc822;recipient@example.org\0",
    });
    let macros = Command::Macro(MacroDef {
        stage: b'C',
        raw: b"j\0mx.example.org\0{daemon_name}\0smtpd\0{daemon_addr}\x00192.0.2.1\0v\0Postfix 3.7.11\0_\0client.example.net [198.51.100.7]\0",
    });
    let chunk = Command::Body(&body);
    let commands = [
        ("header", header),
        ("rcpt", rcpt),
        ("macro", macros),
        ("body-64k", chunk),
    ];

    let mut g = c.benchmark_group("decode");
    for (name, cmd) in &commands {
        let bytes = wire(cmd);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(*name, |b| b.iter(|| decode_command(black_box(&bytes))));
    }
    let replies = [
        ("continue", Reply::Continue),
        (
            "add-header",
            Reply::AddHeader {
                name: b"X-Spam-Status".to_vec(),
                value: b"No, score=-0.1 required=5.0".to_vec(),
            },
        ),
        ("replace-body-64k", Reply::ReplaceBody(body.clone())),
    ];
    for (name, reply) in &replies {
        let mut bytes = Vec::new();
        reply.encode(&mut bytes);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(format!("reply-{name}"), |b| {
            b.iter(|| {
                let (frame, _) = decode_frame(black_box(&bytes), DEFAULT_MAX_PAYLOAD)
                    .unwrap()
                    .unwrap();
                black_box(Reply::decode(frame).unwrap())
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("encode");
    let mut out = Vec::with_capacity(70_000);
    for (name, cmd) in &commands {
        g.throughput(Throughput::Bytes(wire(cmd).len() as u64));
        g.bench_function(*name, |b| {
            b.iter(|| {
                out.clear();
                black_box(cmd).encode(&mut out);
                black_box(out.len())
            })
        });
    }
    for (name, reply) in &replies {
        let mut bytes = Vec::new();
        reply.encode(&mut bytes);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(format!("reply-{name}"), |b| {
            b.iter(|| {
                out.clear();
                black_box(reply).encode(&mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

/// One typical message as Postfix sends it: 16 commands.
fn message_bytes() -> Vec<u8> {
    let mut w = Vec::new();
    MacroDef::encode_pairs(
        &mut w,
        b'M',
        [(&b"{mail_addr}"[..], &b"sender@example.net"[..])],
    );
    Command::Mail(EnvelopeAddr {
        address: b"<sender@example.net>",
        args_raw: b"SIZE=4096\0BODY=8BITMIME\0",
    })
    .encode(&mut w);
    Command::Rcpt(EnvelopeAddr::new(b"<one@example.org>")).encode(&mut w);
    Command::Rcpt(EnvelopeAddr::new(b"<two@example.org>")).encode(&mut w);
    MacroDef::encode_pairs(&mut w, b'T', [(&b"i"[..], &b"4F2A1B3C"[..])]);
    Command::Data.encode(&mut w);
    for (name, value) in [
        (&b"From"[..], &b"Sender <sender@example.net>"[..]),
        (b"To", b"one@example.org, two@example.org"),
        (b"Subject", b"Quarterly report"),
        (b"Date", b"Mon, 1 Dec 2025 12:00:00 +0000"),
        (b"Message-ID", b"<20251201120000.1234@example.net>"),
    ] {
        Command::Header(Header { name, value }).encode(&mut w);
    }
    Command::Eoh.encode(&mut w);
    Command::Body(&[b'x'; 4096]).encode(&mut w);
    MacroDef::encode_pairs(&mut w, b'E', [(&b"{i}"[..], &b"4F2A1B3C"[..])]);
    Command::Eom(b"").encode(&mut w);
    Command::Abort.encode(&mut w);
    w
}

fn session(c: &mut Criterion) {
    let spec = Spec {
        handled: Stages::all(),
        actions: Actions::ADD_HEADER,
        ..Spec::NONE
    };
    let mut s = FilterSession::new();
    let mut d = FrameDecoder::new();
    let mut start = Vec::new();
    OptNeg::POSTFIX_3.encode(&mut start);
    Command::Connect(Connect::decode(b"client.example.net\x004\x00\x19198.51.100.7\x00").unwrap())
        .encode(&mut start);
    Command::Helo(b"client.example.net").encode(&mut start);
    let message = message_bytes();
    let feed = |d: &mut FrameDecoder, s: &mut FilterSession, bytes: &[u8]| {
        d.push(bytes);
        let mut n = 0;
        while let Some(frame) = d.next_frame().unwrap() {
            n += 1;
            let input = s.handle(frame).unwrap();
            match input.event {
                Some(Event::Negotiate(_)) => {
                    s.negotiate(&spec).unwrap();
                }
                Some(Event::Eom(_)) => {
                    s.add_header(b"X-Scanned", b"yes").unwrap();
                    s.reply(Status::Continue).unwrap();
                }
                Some(_) if s.owed().is_some() => {
                    s.reply(Status::Continue).unwrap();
                }
                _ => {}
            }
        }
        black_box(s.output().len());
        s.clear_output();
        n
    };
    feed(&mut d, &mut s, &start);
    assert_eq!(feed(&mut d, &mut s, &message), 16);
    let mut g = c.benchmark_group("session");
    g.throughput(Throughput::Elements(1));
    g.bench_function("message", |b| {
        b.iter(|| feed(&mut d, &mut s, black_box(&message)))
    });
    g.finish();
}

criterion_group!(benches, codec, session);
criterion_main!(benches);
