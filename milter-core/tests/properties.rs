//! Property tests: encode→decode is the identity for every valid command and
//! reply; no decoder panics on arbitrary bytes; both sessions survive arbitrary
//! input; and a byte stream split anywhere gives the same events and the same
//! output as the stream in one piece.
//!
//! The seed is fixed so that every run tests the same cases; set
//! `PROPTEST_CASES` (and `PROPTEST_RNG_SEED`) for a longer, different run.

// Test code: a failed unwrap is a test failure with its location, which is
// what we want here (clippy.toml covers #[test] functions, not helpers).
#![allow(clippy::unwrap_used)]

mod common;

use common::{run_filter, Transcript};
use milter_core::client::{ClientSession, Received, Sent, Strictness};
use milter_core::filter::{Event, FilterSession};
use milter_core::frame::{decode_frame, Frame, FrameDecoder};
use milter_core::limits::{DEFAULT_MAX_PAYLOAD, MAX_SEND_PAYLOAD};
use milter_core::{
    Actions, Command, Connect, DecodeError, EnvelopeAddr, Family, Header, MacroDef, MacroStage,
    OptNeg, OptNegReply, ProtocolOpts, Reply, Spec, Stages, Status, SymbolList,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

const SEED: u64 = 0x6d69_6c74_6572;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        rng_seed: RngSeed::Fixed(
            std::env::var("PROPTEST_RNG_SEED")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(SEED),
        ),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- strategies ----

/// Bytes without NUL (a string field).
fn text(max: usize) -> impl Strategy<Value = Vec<u8>> + Clone {
    vec(1u8..=255, 0..max)
}

/// Deterministic filler bytes (large chunks are built, not drawn byte by byte).
fn filler(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A body chunk of 1..=65535 bytes, usually small, sometimes at or near the
/// limit.
fn chunk() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => vec(any::<u8>(), 1..64),
        1 => (1usize..=65535, any::<u64>()).prop_map(|(n, s)| filler(n, s)),
        1 => (65_000usize..=65535, any::<u64>()).prop_map(|(n, s)| filler(n, s)),
    ]
}

/// NUL-terminated arguments, back to back (the `args_raw` of `M`/`R`).
fn args() -> impl Strategy<Value = Vec<u8>> {
    vec(text(20), 0..4).prop_map(|args| {
        args.into_iter()
            .flat_map(|mut a| {
                a.push(0);
                a
            })
            .collect()
    })
}

/// A command with owned contents.
#[derive(Debug, Clone)]
enum Cmd {
    OptNeg(u32, u32, u32),
    Macro(u8, Vec<u8>),
    Connect {
        host: Vec<u8>,
        family: Family,
        port: u16,
        addr: Vec<u8>,
    },
    Helo(Vec<u8>),
    Mail(Vec<u8>, Vec<u8>),
    Rcpt(Vec<u8>, Vec<u8>),
    Data,
    Header(Vec<u8>, Vec<u8>),
    Eoh,
    Body(Vec<u8>),
    Eom(Vec<u8>),
    Abort,
    Quit,
    QuitNewConnection,
    Unknown(Vec<u8>),
    Unrecognized(u8, Vec<u8>),
}

impl Cmd {
    fn command(&self) -> Command<'_> {
        match self {
            Cmd::OptNeg(v, a, p) => Command::OptNeg(OptNeg {
                version: *v,
                actions: Actions::from_bits_retain(*a),
                protocol: ProtocolOpts::from_bits_retain(*p),
            }),
            Cmd::Macro(stage, raw) => Command::Macro(MacroDef { stage: *stage, raw }),
            Cmd::Connect {
                host,
                family,
                port,
                addr,
            } => Command::Connect(Connect {
                hostname: host,
                family: *family,
                port: *port,
                address: addr,
            }),
            Cmd::Helo(h) => Command::Helo(h),
            Cmd::Mail(a, args) => Command::Mail(EnvelopeAddr {
                address: a,
                args_raw: args,
            }),
            Cmd::Rcpt(a, args) => Command::Rcpt(EnvelopeAddr {
                address: a,
                args_raw: args,
            }),
            Cmd::Data => Command::Data,
            Cmd::Header(n, v) => Command::Header(Header { name: n, value: v }),
            Cmd::Eoh => Command::Eoh,
            Cmd::Body(b) => Command::Body(b),
            Cmd::Eom(b) => Command::Eom(b),
            Cmd::Abort => Command::Abort,
            Cmd::Quit => Command::Quit,
            Cmd::QuitNewConnection => Command::QuitNewConnection,
            Cmd::Unknown(u) => Command::Unknown(u),
            Cmd::Unrecognized(code, payload) => Command::Unrecognized {
                code: *code,
                payload,
            },
        }
    }

    fn wire(&self) -> Vec<u8> {
        let mut w = Vec::new();
        self.command().encode(&mut w);
        w
    }
}

fn connect_cmd() -> impl Strategy<Value = Cmd> {
    let host = text(40);
    prop_oneof![
        (host.clone(), any::<u16>(), any::<u32>()).prop_map(|(host, port, ip)| Cmd::Connect {
            host,
            family: Family::Inet,
            port,
            addr: Ipv4Addr::from(ip).to_string().into_bytes(),
        }),
        (host.clone(), any::<u16>(), any::<u128>(), 0..3u8).prop_map(|(host, port, ip, form)| {
            let text = Ipv6Addr::from(ip).to_string();
            let addr = match form {
                0 => text,
                1 => format!("IPv6:{text}"),
                _ => format!("ipv6:{text}"),
            };
            Cmd::Connect {
                host,
                family: Family::Inet6,
                port,
                addr: addr.into_bytes(),
            }
        }),
        (host.clone(), any::<u32>()).prop_map(|(host, ip)| Cmd::Connect {
            host,
            family: Family::Inet6,
            port: 25,
            addr: Ipv4Addr::from(ip).to_string().into_bytes(),
        }),
        (host.clone(), text(108)).prop_map(|(host, path)| Cmd::Connect {
            host,
            family: Family::Unix,
            port: 0,
            addr: path,
        }),
        host.prop_map(|host| Cmd::Connect {
            host,
            family: Family::Unknown,
            port: 0,
            addr: Vec::new(),
        }),
    ]
}

const COMMAND_CODES: &[u8] = b"ODCHMRTLNBEAQKU";
const REPLY_CODES: &[u8] = b"Ocartdyspfhim+2-ebq4l";

fn cmd() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(v, a, p)| Cmd::OptNeg(v, a, p)),
        (any::<u8>(), vec(any::<u8>(), 0..60)).prop_map(|(s, raw)| Cmd::Macro(s, raw)),
        connect_cmd(),
        text(40).prop_map(Cmd::Helo),
        (text(40), args()).prop_map(|(a, r)| Cmd::Mail(a, r)),
        (text(40), args()).prop_map(|(a, r)| Cmd::Rcpt(a, r)),
        Just(Cmd::Data),
        (text(30), text(60)).prop_map(|(n, v)| Cmd::Header(n, v)),
        Just(Cmd::Eoh),
        chunk().prop_map(Cmd::Body),
        prop_oneof![Just(Vec::new()), chunk()].prop_map(Cmd::Eom),
        Just(Cmd::Abort),
        Just(Cmd::Quit),
        Just(Cmd::QuitNewConnection),
        text(40).prop_map(Cmd::Unknown),
        (
            any::<u8>().prop_filter("not a command", |c| !COMMAND_CODES.contains(c)),
            vec(any::<u8>(), 0..30)
        )
            .prop_map(|(c, p)| Cmd::Unrecognized(c, p)),
    ]
}

fn symbol_list() -> impl Strategy<Value = SymbolList> {
    (prop_oneof![0u32..7, any::<u32>()], text(40))
        .prop_map(|(index, macros)| SymbolList { index, macros })
}

fn reply() -> impl Strategy<Value = Reply> {
    let body = prop_oneof![Just(Vec::new()), chunk()];
    prop_oneof![
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            vec(symbol_list(), 0..5)
        )
            .prop_map(|(version, a, p, symbol_lists)| Reply::OptNeg(OptNegReply {
                version,
                actions: Actions::from_bits_retain(a),
                protocol: ProtocolOpts::from_bits_retain(p),
                symbol_lists,
            })),
        Just(Reply::Continue),
        Just(Reply::Accept),
        Just(Reply::Reject),
        Just(Reply::Tempfail),
        Just(Reply::Discard),
        Just(Reply::Skip),
        Just(Reply::Progress),
        Just(Reply::ConnectionFailure),
        Just(Reply::Shutdown),
        text(80).prop_map(Reply::ReplyCode),
        (text(30), text(60)).prop_map(|(name, value)| Reply::AddHeader { name, value }),
        (any::<u32>(), text(30), text(60)).prop_map(|(index, name, value)| Reply::InsertHeader {
            index,
            name,
            value
        }),
        (any::<u32>(), text(30), text(60)).prop_map(|(index, name, value)| Reply::ChangeHeader {
            index,
            name,
            value
        }),
        text(40).prop_map(Reply::AddRcpt),
        (text(40), proptest::option::of(text(40)))
            .prop_map(|(rcpt, args)| Reply::AddRcptWithArgs { rcpt, args }),
        text(40).prop_map(Reply::DeleteRcpt),
        (text(40), proptest::option::of(text(40)))
            .prop_map(|(from, args)| Reply::ChangeFrom { from, args }),
        body.prop_map(Reply::ReplaceBody),
        text(60).prop_map(Reply::Quarantine),
        symbol_list().prop_map(Reply::SetSymbolList),
        (
            any::<u8>().prop_filter("not a reply", |c| !REPLY_CODES.contains(c)),
            vec(any::<u8>(), 0..30)
        )
            .prop_map(|(code, payload)| Reply::Unrecognized { code, payload }),
    ]
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![
        6 => Just(Status::Continue),
        1 => Just(Status::Accept),
        1 => Just(Status::Reject),
        1 => Just(Status::Tempfail),
        1 => Just(Status::Discard),
        1 => Just(Status::Skip),
        1 => Just(Status::reply(451, Some("4.7.1"), "later").unwrap()),
    ]
}

fn stages() -> impl Strategy<Value = Stages> {
    any::<u16>().prop_map(Stages::from_bits_truncate)
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        stages(),
        stages(),
        any::<u32>(),
        any::<u32>(),
        any::<bool>(),
    )
        .prop_map(|(handled, no_reply, actions, options, macros)| {
            let spec = Spec {
                handled,
                no_reply,
                optional_actions: Actions::from_bits_truncate(actions),
                optional_options: ProtocolOpts::from_bits_truncate(options),
                ..Spec::NONE
            };
            if macros {
                spec.with_macros(MacroStage::Connect, "{j} _")
                    .with_macros(MacroStage::Eoh, "")
            } else {
                spec
            }
        })
}

fn offer() -> impl Strategy<Value = OptNeg> {
    prop_oneof![
        Just(OptNeg::POSTFIX_3),
        Just(OptNeg {
            version: 2,
            actions: Actions::all(),
            protocol: ProtocolOpts::V2,
        }),
        (2u32..8, any::<u32>(), any::<u32>()).prop_map(|(version, a, p)| OptNeg {
            version,
            actions: Actions::from_bits_retain(a),
            protocol: ProtocolOpts::from_bits_retain(p),
        }),
    ]
}

/// A typical message, as a list of commands.
fn typical() -> Vec<Cmd> {
    let b = |s: &str| s.as_bytes().to_vec();
    vec![
        Cmd::Macro(b'C', b("j\0mx.example.org\0{daemon_name}\0smtpd\0")),
        Cmd::Connect {
            host: b("client.example.net"),
            family: Family::Inet,
            port: 25,
            addr: b("192.0.2.7"),
        },
        Cmd::Macro(b'H', Vec::new()),
        Cmd::Helo(b("client.example.net")),
        Cmd::Macro(b'M', b("{mail_addr}\0a@example.org\0")),
        Cmd::Mail(b("<a@example.org>"), b("BODY=8BITMIME\0SIZE=1000\0")),
        Cmd::Macro(b'R', b("{rcpt_addr}\0b@example.org\0")),
        Cmd::Rcpt(b("<b@example.org>"), Vec::new()),
        Cmd::Rcpt(b("<c@example.org>"), b("NOTIFY=NEVER\0")),
        Cmd::Macro(b'T', b("i\0ABC123\0")),
        Cmd::Data,
        Cmd::Macro(b'L', b("i\0ABC123\0")),
        Cmd::Header(b("From"), b("<a@example.org>")),
        Cmd::Header(b("Subject"), b("hello\n\tworld")),
        Cmd::Eoh,
        Cmd::Body(b("line one\r\nline two\r\n")),
        Cmd::Body(b("line three\r\n")),
        Cmd::Macro(b'E', b("{i}\0ABC123\0")),
        Cmd::Eom(Vec::new()),
        Cmd::Abort,
        Cmd::Unknown(b("XFOO")),
        Cmd::Mail(b("<>"), Vec::new()),
        Cmd::Rcpt(b("<d@example.org>"), Vec::new()),
        Cmd::Abort,
        Cmd::QuitNewConnection,
        Cmd::Connect {
            host: b("unknown"),
            family: Family::Unknown,
            port: 0,
            addr: Vec::new(),
        },
        Cmd::Quit,
    ]
}

/// How a typical conversation is disturbed.
#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize),
    Duplicate(usize),
    Swap(usize, usize),
    Insert(usize, Cmd),
    /// A frame with any code and payload.
    Raw(usize, u8, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Duplicate),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        (any::<usize>(), cmd()).prop_map(|(i, c)| Mutation::Insert(i, c)),
        (
            any::<usize>(),
            prop_oneof![proptest::sample::select(COMMAND_CODES), any::<u8>()],
            vec(any::<u8>(), 0..40)
        )
            .prop_map(|(i, c, p)| Mutation::Raw(i, c, p)),
    ]
}

/// The frames (wire bytes each) of a typical conversation after mutations; the
/// negotiation comes first.
fn mutated(offer: &OptNeg, mutations: &[Mutation]) -> Vec<Vec<u8>> {
    let mut frames: Vec<Vec<u8>> = typical().iter().map(Cmd::wire).collect();
    for m in mutations {
        let len = frames.len().max(1);
        match m {
            Mutation::Delete(i) if !frames.is_empty() => {
                frames.remove(i % len);
            }
            Mutation::Duplicate(i) if !frames.is_empty() => {
                let f = frames[i % len].clone();
                frames.insert(i % len, f);
            }
            Mutation::Swap(a, b) if !frames.is_empty() => frames.swap(a % len, b % len),
            Mutation::Insert(i, c) => frames.insert(i % (frames.len() + 1), c.wire()),
            Mutation::Raw(i, code, payload) => {
                frames.insert(i % (frames.len() + 1), common::pkt(*code, payload))
            }
            _ => {}
        }
    }
    let mut o = Vec::new();
    offer.encode(&mut o);
    frames.insert(0, o);
    frames
}

// ---- encode→decode identity ----

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn command_encode_decode_is_identity(c in cmd()) {
        let command = c.command();
        let mut wire = Vec::new();
        command.encode(&mut wire);
        let (frame, used) = decode_frame(&wire, DEFAULT_MAX_PAYLOAD).unwrap().unwrap();
        prop_assert_eq!(used, wire.len());
        prop_assert_eq!(frame.code, command.code());
        let decoded = Command::decode(frame).unwrap();
        prop_assert_eq!(decoded, command);
        let mut again = Vec::new();
        decoded.encode(&mut again);
        prop_assert_eq!(again, wire);
    }

    #[test]
    fn reply_encode_decode_is_identity(r in reply()) {
        let mut wire = Vec::new();
        r.encode(&mut wire);
        let (frame, used) = decode_frame(&wire, DEFAULT_MAX_PAYLOAD).unwrap().unwrap();
        prop_assert_eq!(used, wire.len());
        prop_assert_eq!(frame.code, r.code());
        let decoded = Reply::decode(frame).unwrap();
        prop_assert_eq!(&decoded, &r);
        if let Reply::OptNeg(o) = &r {
            prop_assert_eq!(&OptNegReply::decode(frame.payload).unwrap(), o);
        }
    }
}

// ---- no decoder panics ----

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn decoding_arbitrary_payloads_never_panics(
        code in prop_oneof![
            proptest::sample::select(COMMAND_CODES),
            proptest::sample::select(REPLY_CODES),
            any::<u8>(),
        ],
        payload in vec(any::<u8>(), 0..80),
    ) {
        let frame = Frame { code, payload: &payload };
        // A command that decodes encodes to something that decodes to it again.
        if let Ok(c) = Command::decode(frame) {
            let mut wire = Vec::new();
            c.encode(&mut wire);
            let (f, _) = decode_frame(&wire, DEFAULT_MAX_PAYLOAD).unwrap().unwrap();
            prop_assert_eq!(Command::decode(f).unwrap(), c);
        }
        // The reply decoder is strict: what it accepts re-encodes byte for byte.
        if let Ok(r) = Reply::decode(frame) {
            let mut wire = Vec::new();
            r.encode(&mut wire);
            prop_assert_eq!(&wire[5..], &payload[..]);
            prop_assert_eq!(wire[4], code);
        }
        if let Ok(o) = OptNegReply::decode(&payload) {
            let mut wire = Vec::new();
            o.encode(&mut wire);
            prop_assert_eq!(&wire[5..], &payload[..]);
        }
        let _ = Connect::decode(&payload);
        let _ = EnvelopeAddr::decode(b'M', &payload);
        let _ = Header::decode(&payload);
        let _ = MacroDef::decode(&payload).map(|d| d.pairs().count());
        let _ = OptNeg::decode(&payload);
    }

    #[test]
    fn decode_frame_never_panics(
        bytes in vec(any::<u8>(), 0..40),
        max in prop_oneof![0usize..8, Just(65535), Just(DEFAULT_MAX_PAYLOAD)],
    ) {
        match decode_frame(&bytes, max) {
            Ok(Some((frame, used))) => {
                prop_assert!(used <= bytes.len());
                prop_assert_eq!(used, 5 + frame.payload.len());
                prop_assert!(frame.payload.len() <= max);
            }
            Ok(None) => {
                if bytes.len() >= 4 {
                    let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                    prop_assert!(len as usize + 4 > bytes.len());
                }
            }
            Err(DecodeError::ZeroLength) => prop_assert_eq!(&bytes[..4], &[0u8; 4][..]),
            Err(DecodeError::FrameTooLarge { payload, max: m }) => {
                prop_assert_eq!(m, max);
                prop_assert!(payload > max as u64);
            }
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn frame_decoder_agrees_with_decode_frame(
        valid in vec(cmd(), 0..6),
        tail in vec(any::<u8>(), 0..12),
        cuts in vec(any::<usize>(), 0..8),
    ) {
        let mut stream: Vec<u8> = valid.iter().flat_map(Cmd::wire).collect();
        stream.extend_from_slice(&tail);
        // Stateless: frame after frame until an error or "need more".
        let mut expect = Vec::new();
        let mut rest = &stream[..];
        let expect_end = loop {
            match decode_frame(rest, DEFAULT_MAX_PAYLOAD) {
                Ok(Some((f, used))) => {
                    expect.push((f.code, f.payload.to_vec()));
                    rest = &rest[used..];
                }
                Ok(None) => break Ok(rest.len()),
                Err(e) => break Err(e),
            }
        };
        // Buffered, fed in pieces.
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        points.sort_unstable();
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        let mut start = 0;
        let mut end = Ok(0);
        for p in points.into_iter().chain([stream.len()]) {
            d.push(&stream[start..p]);
            start = p;
            loop {
                match d.next_frame() {
                    Ok(Some(f)) => got.push((f.code, f.payload.to_vec())),
                    Ok(None) => {
                        end = Ok(d.buffered());
                        break;
                    }
                    Err(e) => {
                        end = Err(e);
                        break;
                    }
                }
            }
            if end.is_err() {
                break;
            }
        }
        prop_assert_eq!(got, expect);
        prop_assert_eq!(end, expect_end);
    }
}

// ---- sessions on arbitrary input ----

/// Drives a filter session over frames; checks that whatever it writes is a valid
/// reply, never above the send limit.
fn drive_filter(spec: &Spec, frames: &[Vec<u8>], statuses: &[Status], mods: &[u8]) {
    let mut s = FilterSession::new();
    let mut n = 0usize;
    for raw in frames {
        let Ok(Some((frame, _))) = decode_frame(raw, DEFAULT_MAX_PAYLOAD) else {
            break;
        };
        let input = match s.handle(frame) {
            Ok(i) => i,
            Err(_) => break,
        };
        match input.event {
            Some(Event::Negotiate(_)) if s.negotiate(spec).is_err() => break,
            Some(event) if s.owed().is_some() => {
                n += 1;
                if matches!(event, Event::Eom(_)) {
                    let pick = mods.get(n % mods.len().max(1)).copied().unwrap_or(0);
                    // Errors are fine (not negotiated, bad arguments); panics are not.
                    let _ = match pick % 12 {
                        0 => s.add_header(b"X-A", b"1"),
                        1 => s.insert_header(u32::from(pick), b"X-B", b""),
                        2 => s.change_header(b"Subject", 1, b""),
                        3 => s.add_rcpt(b"<a@b>"),
                        4 => s.add_rcpt_with_args(b"<a@b>", Some(b"NOTIFY=NEVER")),
                        5 => s.delete_rcpt(b"<a@b>"),
                        6 => s.change_from(b"<>", None),
                        7 => s.replace_body(&vec![b'x'; usize::from(pick) * 600]),
                        8 => s.quarantine(b"q"),
                        9 => s.progress(),
                        10 => s.add_header(b"", b"bad"),
                        _ => Ok(()),
                    };
                }
                let status = statuses[n % statuses.len()].clone();
                s.reply(status).unwrap();
            }
            _ => {}
        }
    }
    let _ = s.end_of_input();
    let _ = s.end_of_input();
    // Every packet written decodes as a reply.
    let mut out = s.output();
    while !out.is_empty() {
        let (f, used) = decode_frame(out, DEFAULT_MAX_PAYLOAD)
            .unwrap()
            .expect("whole packets only");
        assert!(f.payload.len() <= MAX_SEND_PAYLOAD);
        let r = Reply::decode(f).unwrap();
        assert!(!matches!(r, Reply::Unrecognized { .. }), "{r:?}");
        out = &out[used..];
    }
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn filter_session_survives_arbitrary_frames_after_negotiation(
        spec in spec(),
        o in offer(),
        frames in vec(
            prop_oneof![
                3 => cmd().prop_map(|c| c.wire()),
                1 => (any::<u8>(), vec(any::<u8>(), 0..40)).prop_map(|(c, p)| common::pkt(c, &p)),
            ],
            0..30,
        ),
        statuses in vec(status(), 1..8),
        mods in vec(any::<u8>(), 0..8),
    ) {
        let mut all = Vec::new();
        let mut wire = Vec::new();
        o.encode(&mut wire);
        all.push(wire);
        all.extend(frames);
        drive_filter(&spec, &all, &statuses, &mods);
    }

    #[test]
    fn filter_session_survives_disturbed_conversations(
        spec in spec(),
        o in offer(),
        mutations in vec(mutation(), 0..6),
        statuses in vec(status(), 1..8),
        mods in vec(any::<u8>(), 0..8),
    ) {
        drive_filter(&spec, &mutated(&o, &mutations), &statuses, &mods);
    }

    #[test]
    fn client_session_survives_arbitrary_replies(
        o in offer(),
        strict in any::<(bool, bool, bool)>(),
        negotiation in prop_oneof![
            3 => (2u32..=6, any::<u32>(), any::<u32>(), vec(symbol_list(), 0..3))
                .prop_map(|(version, a, p, symbol_lists)| {
                    let mut w = Vec::new();
                    OptNegReply {
                        version,
                        actions: Actions::from_bits_retain(a),
                        protocol: ProtocolOpts::from_bits_retain(p),
                        symbol_lists,
                    }
                    .encode(&mut w);
                    w
                }),
            1 => (any::<u8>(), vec(any::<u8>(), 0..30)).prop_map(|(c, p)| common::pkt(c, &p)),
        ],
        script in vec(0usize..12, 1..20),
        replies in vec(
            prop_oneof![
                4 => reply().prop_map(|r| { let mut w = Vec::new(); r.encode(&mut w); w }),
                1 => (any::<u8>(), vec(any::<u8>(), 0..30)).prop_map(|(c, p)| common::pkt(c, &p)),
            ],
            0..40,
        ),
    ) {
        let strictness = Strictness {
            options_subset: strict.0,
            body_run: strict.1,
            negotiated_actions: strict.2,
            ..Strictness::default()
        };
        let mut mta = ClientSession::with_strictness(o, strictness);
        let (f, _) = decode_frame(&negotiation, DEFAULT_MAX_PAYLOAD).unwrap().unwrap();
        if mta.receive_negotiation(f).is_err() {
            return Ok(());
        }
        let commands = [
            Command::Connect(Connect::decode(b"h\x004\x00\x19192.0.2.1\x00").unwrap()),
            Command::Helo(b"h"),
            Command::Mail(EnvelopeAddr::new(b"<a@b>")),
            Command::Rcpt(EnvelopeAddr::new(b"<c@d>")),
            Command::Data,
            Command::Header(Header { name: b"A", value: b"b" }),
            Command::Eoh,
            Command::Body(b"x"),
            Command::Eom(b""),
            Command::Unknown(b"XFOO"),
            Command::Abort,
            Command::QuitNewConnection,
        ];
        let mut replies = replies.iter();
        'script: for i in script {
            match mta.send(&commands[i]) {
                Ok(Sent::AwaitReply) => loop {
                    let Some(raw) = replies.next() else { break 'script };
                    let (f, _) = decode_frame(raw, DEFAULT_MAX_PAYLOAD).unwrap().unwrap();
                    match mta.receive(f) {
                        Ok(Received::Decision(_)) => break,
                        Ok(_) => {}
                        Err(_) => break 'script,
                    }
                },
                Ok(_) => {}
                Err(e) => prop_assert!(false, "send failed: {}", e),
            }
        }
    }
}

// ---- splitting a stream anywhere changes nothing ----

/// A handler whose output depends on the events (so that output comparisons mean
/// something): rejects one recipient, adds a header at end of message.
fn varied(e: &Event<'_>, s: &mut FilterSession) -> Status {
    match e {
        Event::Rcpt(a) if a.address == b"<c@example.org>" => Status::Reject,
        Event::Eom(_) => {
            let _ = s.add_header(b"X-Seen", b"yes");
            Status::Continue
        }
        _ => Status::Continue,
    }
}

fn typical_stream() -> Vec<u8> {
    let mut w = Vec::new();
    OptNeg::POSTFIX_3.encode(&mut w);
    for c in typical() {
        w.extend(c.wire());
    }
    w
}

fn typical_spec() -> Spec {
    Spec {
        handled: Stages::all(),
        actions: Actions::ADD_HEADER,
        ..Spec::NONE
    }
}

fn check_same(a: &Transcript, b: &Transcript, what: &str) {
    assert_eq!(a.events, b.events, "{what}");
    assert_eq!(a.output, b.output, "{what}");
    assert_eq!(a.error, b.error, "{what}");
}

#[test]
fn split_at_every_boundary_changes_nothing() {
    let stream = typical_stream();
    let whole = run_filter([&stream[..]], &typical_spec(), &mut varied);
    assert_eq!(whole.error, None);
    assert!(whole.events.len() > 20);
    for at in 0..=stream.len() {
        let t = run_filter([&stream[..at], &stream[at..]], &typical_spec(), &mut varied);
        check_same(&t, &whole, &format!("split at {at}"));
    }
    // One byte at a time.
    let t = run_filter(stream.chunks(1), &typical_spec(), &mut varied);
    check_same(&t, &whole, "byte by byte");
}

#[test]
fn split_at_every_boundary_with_an_error_at_the_end() {
    // The same stream followed by a frame of length 0: the error comes after the
    // same events, however the stream is split.
    let mut stream = typical_stream();
    stream.truncate(stream.len() - 5); // drop the Q
    stream.extend_from_slice(b"\0\0\0\0X");
    let whole = run_filter([&stream[..]], &typical_spec(), &mut varied);
    assert_eq!(whole.error, Some(DecodeError::ZeroLength.into()));
    for at in 0..=stream.len() {
        let t = run_filter([&stream[..at], &stream[at..]], &typical_spec(), &mut varied);
        check_same(&t, &whole, &format!("split at {at}"));
    }
}

const POSTFIX: &[u8] = include_bytes!("data/postfix-3.7-mta-to-milter.bin");

fn postfix_spec() -> Spec {
    Spec {
        handled: Stages::all(),
        optional_actions: Actions::all(),
        ..Spec::NONE
    }
    .with_macros(MacroStage::Connect, "{j} {daemon_name} {client_addr}")
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn postfix_stream_split_at_random_boundaries_changes_nothing(
        cuts in vec(0..POSTFIX.len(), 1..24),
    ) {
        static WHOLE: OnceLock<Transcript> = OnceLock::new();
        let whole = WHOLE.get_or_init(|| run_filter([POSTFIX], &postfix_spec(), &mut varied));
        prop_assert_eq!(&whole.error, &None);
        let mut cuts = cuts;
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut start = 0;
        for c in cuts.into_iter().chain([POSTFIX.len()]) {
            pieces.push(&POSTFIX[start..c]);
            start = c;
        }
        let t = run_filter(pieces, &postfix_spec(), &mut varied);
        prop_assert_eq!(&t.events, &whole.events);
        prop_assert_eq!(&t.output, &whole.output);
        prop_assert_eq!(&t.error, &None);
    }

    #[test]
    fn typical_stream_split_at_random_boundaries_changes_nothing(
        cuts in vec(any::<usize>(), 1..40),
        spec in spec(),
    ) {
        let stream = typical_stream();
        let whole = run_filter([&stream[..]], &spec, &mut varied);
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        points.sort_unstable();
        let mut pieces = Vec::new();
        let mut start = 0;
        for c in points.into_iter().chain([stream.len()]) {
            pieces.push(&stream[start..c]);
            start = c;
        }
        let t = run_filter(pieces, &spec, &mut varied);
        prop_assert_eq!(&t.events, &whole.events);
        prop_assert_eq!(&t.output, &whole.output);
        prop_assert_eq!(&t.error, &whole.error);
    }
}
