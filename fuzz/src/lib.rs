//! The bodies of the fuzz targets, shared by `fuzz_targets/*.rs` (libFuzzer) and
//! by `tests/corpus.rs` (a stable `cargo test` that replays every corpus file).
//!
//! Each function panics only on a bug in milter-core: a decoder panic, or an
//! invariant that the function checks (re-encoding, agreement between the
//! stateless and the buffered frame decoder, a filter session writing an invalid
//! packet).
//!
//! Input formats:
//!
//! | target | input |
//! | --- | --- |
//! | `decode_frame` | byte 0 chooses the limit and the read sizes; the rest is a byte stream |
//! | `decode_command` | byte 0 is the code, the rest the payload |
//! | `decode_reply` | byte 0 is the code, the rest the payload |
//! | `filter_session` | 4 bytes of configuration (see [`filter_session`]), then the MTA's byte stream |
//! | `client_session` | 2 bytes of configuration (see [`client_session`]), then the milter's byte stream |
//! | `server` | byte 0 sets the write size; the rest is the MTA's stream to the real `milter-blocking` server (see [`server`]) |
//! | `recording` | the text of a recording (`milter_blocking::client::Recording`) |

#![forbid(unsafe_code)]

mod server;
pub use server::server;

use milter_core::client::{ClientSession, Received, Sent, Strictness};
use milter_core::filter::{Event, FilterSession};
use milter_core::frame::{Frame, FrameDecoder};
use milter_core::limits::{DEFAULT_MAX_PAYLOAD, MAX_SEND_PAYLOAD};
use milter_core::{
    Actions, Command, Connect, EnvelopeAddr, Header, MacroStage, OptNeg, OptNegReply, ProtocolOpts,
    Reply, Spec, Stages, Status,
};

/// Frames from the stateless decoder and from a `FrameDecoder` fed in pieces must
/// agree, frame for frame, and end the same way.
pub fn decode_frame(data: &[u8]) {
    let Some((&config, stream)) = data.split_first() else {
        return;
    };
    let max = match config & 3 {
        0 => DEFAULT_MAX_PAYLOAD,
        1 => 65535,
        2 => 16,
        _ => 0,
    };
    let piece = usize::from(config >> 2) + 1;

    let mut expected = Vec::new();
    let mut rest = stream;
    let expected_end = loop {
        match milter_core::frame::decode_frame(rest, max) {
            Ok(Some((frame, used))) => {
                assert_eq!(used, 5 + frame.payload.len());
                assert!(frame.payload.len() <= max);
                expected.push((frame.code, frame.payload.to_vec()));
                rest = &rest[used..];
            }
            Ok(None) => break Ok(rest.len()),
            Err(e) => break Err(e),
        }
    };

    let mut d = FrameDecoder::with_max_payload(max);
    let mut got = Vec::new();
    let mut end = Ok(0);
    'feed: for (i, chunk) in stream.chunks(piece).enumerate() {
        // Alternate between `push` and reading into the spare space.
        if i % 2 == 0 {
            d.push(chunk);
        } else {
            let mut chunk = chunk;
            while !chunk.is_empty() {
                let spare = d.spare();
                assert!(!spare.is_empty());
                let n = spare.len().min(chunk.len());
                spare[..n].copy_from_slice(&chunk[..n]);
                d.commit(n);
                chunk = &chunk[n..];
            }
        }
        loop {
            match d.next_frame() {
                Ok(Some(f)) => got.push((f.code, f.payload.to_vec())),
                Ok(None) => {
                    end = Ok(d.buffered());
                    break;
                }
                Err(e) => {
                    end = Err(e);
                    break 'feed;
                }
            }
        }
    }
    if stream.is_empty() {
        end = Ok(0);
    }
    assert_eq!(got, expected);
    assert_eq!(end, expected_end);
}

/// `Command::decode` must not panic; what it accepts must encode to bytes that
/// decode to the same command.
pub fn decode_command(data: &[u8]) {
    let Some((&code, payload)) = data.split_first() else {
        return;
    };
    let Ok(cmd) = Command::decode(Frame { code, payload }) else {
        return;
    };
    let mut wire = Vec::new();
    cmd.encode(&mut wire);
    let (frame, used) = milter_core::frame::decode_frame(&wire, usize::MAX)
        .unwrap()
        .unwrap();
    assert_eq!(used, wire.len());
    assert_eq!(Command::decode(frame).unwrap(), cmd);
    if let Command::Macro(d) = cmd {
        for _ in d.pairs() {}
    }
    if let Command::Mail(a) | Command::Rcpt(a) = cmd {
        for _ in a.args() {}
        let _ = a.bare();
    }
    if let Command::Connect(c) = cmd {
        let _ = c.addr().to_string();
    }
}

/// `Reply::decode` must not panic; what it accepts must encode to exactly the
/// input bytes (the reply decoder allows no slack).
pub fn decode_reply(data: &[u8]) {
    let Some((&code, payload)) = data.split_first() else {
        return;
    };
    if let Ok(o) = OptNegReply::decode(payload) {
        let mut wire = Vec::new();
        o.encode(&mut wire);
        assert_eq!(&wire[5..], payload);
    }
    let Ok(reply) = Reply::decode(Frame { code, payload }) else {
        return;
    };
    let mut wire = Vec::new();
    reply.encode(&mut wire);
    assert_eq!(wire[4], code);
    assert_eq!(&wire[5..], payload);
    let _ = milter_core::Modification::from_reply(reply);
}

/// A tiny deterministic generator for the handler's choices.
struct Choices(u64);

impl Choices {
    fn next(&mut self) -> u8 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 24) as u8
    }
}

fn stages_from(bits: u16) -> Stages {
    Stages::from_bits_truncate(bits)
}

/// The spec chosen by the configuration bytes.
fn spec_from(config: [u8; 4]) -> Spec {
    let handled = stages_from(u16::from_le_bytes([config[0], config[1]]));
    let no_reply = stages_from(u16::from(config[2]) | (u16::from(config[3] & 1) << 9));
    let flags = config[3];
    let mut spec = Spec {
        handled,
        no_reply,
        ..Spec::NONE
    };
    if flags & 2 != 0 {
        spec.optional_options |= ProtocolOpts::SKIP;
    }
    if flags & 4 != 0 {
        spec.optional_options |= ProtocolOpts::HEADER_LEADING_SPACE | ProtocolOpts::RCPT_REJ;
    }
    if flags & 8 != 0 {
        spec.optional_actions = Actions::all();
    } else if flags & 16 != 0 {
        // Required actions: negotiation fails against a smaller offer.
        spec.actions = Actions::ADD_HEADER | Actions::CHANGE_BODY;
    }
    if flags & 32 != 0 {
        spec = spec
            .with_macros(MacroStage::Connect, "{j} _")
            .with_macros(MacroStage::Eom, "{i}")
            .with_macros(MacroStage::Eoh, "");
    }
    spec
}

/// Feeds an MTA byte stream to a `FilterSession`, as a driver would.
///
/// Configuration: bytes 0–1 (little-endian) are the handled stages, byte 2 and
/// bit 0 of byte 3 the no-reply stages, bits 1–5 of byte 3 options, actions and
/// symbol lists, bits 6–7 of byte 3 the size of the pieces the stream is pushed
/// in. The handler's statuses and modifications come from a generator seeded
/// with the configuration.
///
/// Checks: no panic, no `Misuse` error from a correct driver, and every packet
/// written is a valid reply no larger than the send limit.
pub fn filter_session(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let config = [data[0], data[1], data[2], data[3]];
    let stream = &data[4..];
    let spec = spec_from(config);
    let piece = match config[3] >> 6 {
        0 => usize::MAX,
        1 => 1,
        2 => 7,
        _ => 4096,
    };
    let mut choices = Choices(u64::from(u32::from_le_bytes(config)) | 0x1_0000_0000);
    let mut s = FilterSession::new();
    let mut d = FrameDecoder::new();
    let mut written = Vec::new();
    'stream: for chunk in stream.chunks(piece.min(stream.len().max(1))) {
        d.push(chunk);
        loop {
            let frame = match d.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => break 'stream,
            };
            let input = match s.handle(frame) {
                Ok(i) => i,
                Err(milter_core::SessionError::Misuse(m)) => panic!("misuse: {m}"),
                Err(_) => break 'stream,
            };
            match input.event {
                Some(Event::Negotiate(_)) if s.negotiate(&spec).is_err() => break 'stream,
                // A driver closes the connection here.
                Some(Event::Close) => break 'stream,
                Some(event) if s.owed().is_some() => {
                    if matches!(event, Event::Eom(_)) {
                        for _ in 0..(choices.next() % 4) {
                            modify(&mut s, choices.next());
                        }
                    }
                    let status = match choices.next() % 16 {
                        0 => Status::Accept,
                        1 => Status::Reject,
                        2 => Status::Tempfail,
                        3 => Status::Discard,
                        4 => Status::Skip,
                        5 => Status::reply(550, Some("5.7.1"), "no").unwrap(),
                        _ => Status::Continue,
                    };
                    s.reply(status).unwrap();
                }
                _ => {}
            }
        }
        written.extend_from_slice(s.output());
        s.clear_output();
    }
    let _ = s.end_of_input();
    assert!(s.end_of_input().is_none(), "closed twice");
    written.extend_from_slice(s.output());
    let mut out = &written[..];
    while !out.is_empty() {
        let (f, used) = milter_core::frame::decode_frame(out, DEFAULT_MAX_PAYLOAD)
            .unwrap()
            .expect("the session wrote a partial packet");
        assert!(f.payload.len() <= MAX_SEND_PAYLOAD);
        let r = Reply::decode(f).expect("the session wrote an invalid reply");
        assert!(!matches!(r, Reply::Unrecognized { .. }));
        out = &out[used..];
    }
}

/// One modification call chosen by `pick`; errors are expected and ignored.
fn modify(s: &mut FilterSession, pick: u8) {
    let _ = match pick % 12 {
        0 => s.add_header(b"X-Fuzz", b"1"),
        1 => s.insert_header(u32::from(pick), b"X-Top", b"v"),
        2 => s.change_header(b"Subject", u32::from(pick & 3), b""),
        3 => s.add_rcpt(b"<a@example.org>"),
        4 => s.add_rcpt_with_args(b"<a@example.org>", Some(b"NOTIFY=NEVER")),
        5 => s.delete_rcpt(b"<a@example.org>"),
        6 => s.change_from(b"<>", None),
        7 => s.replace_body(&vec![b'x'; usize::from(pick) * 300]),
        8 => s.quarantine(b"fuzz"),
        9 => s.progress(),
        10 => s.add_header(b"Bad Name", b"v"),
        _ => s.replace_body(b""),
    };
}

/// Plays the MTA side against a milter byte stream.
///
/// Configuration: byte 0 picks the offer and the strictness, byte 1 seeds the
/// choice of commands (a typical conversation, disturbed now and then). The
/// first frame of the stream is the negotiation reply; then each command that
/// awaits a reply consumes frames until a decision.
///
/// Checks: no panic, and the client never writes a packet above the send limit.
pub fn client_session(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let (config, stream) = data.split_at(2);
    let offer = match config[0] & 3 {
        0 => OptNeg::POSTFIX_3,
        1 => OptNeg {
            version: 4,
            actions: Actions::all(),
            protocol: ProtocolOpts::from_bits_retain(0x37F),
        },
        2 => OptNeg {
            version: 2,
            actions: Actions::all(),
            protocol: ProtocolOpts::V2,
        },
        _ => OptNeg {
            version: 6,
            actions: Actions::V2,
            protocol: ProtocolOpts::V6,
        },
    };
    let strictness = Strictness {
        options_subset: config[0] & 4 != 0,
        body_run: config[0] & 8 != 0,
        negotiated_actions: config[0] & 16 != 0,
        ..Strictness::default()
    };
    let mut mta = ClientSession::with_strictness(offer, strictness);
    let mut frames = FrameDecoder::new();
    frames.push(stream);
    let Ok(Some(f)) = frames.next_frame() else {
        return;
    };
    if mta.receive_negotiation(f).is_err() {
        return;
    }
    let body = [b'x'; 100];
    let connect = Connect::decode(b"client\x004\x00\x19192.0.2.1\x00").unwrap();
    let script = [
        Command::Connect(connect),
        Command::Helo(b"client.example.net"),
        Command::Mail(EnvelopeAddr::new(b"<a@example.org>")),
        Command::Rcpt(EnvelopeAddr::new(b"<b@example.org>")),
        Command::Data,
        Command::Header(Header {
            name: b"Subject",
            value: b"hi",
        }),
        Command::Eoh,
        Command::Body(&body),
        Command::Eom(b""),
        Command::Abort,
        Command::Unknown(b"XFOO"),
        Command::Quit,
    ];
    let mut choices = Choices(u64::from(config[1]) | 0x100);
    for step in 0..64 {
        // Mostly the next command of the script, sometimes another one.
        let c = choices.next();
        let i = if c < 200 {
            step % script.len()
        } else {
            usize::from(c) % script.len()
        };
        if mta
            .send_macros(script[i].code(), &[(&b"i"[..], &b"ABC"[..])])
            .is_err()
        {
            break;
        }
        let sent = match mta.send(&script[i]) {
            Ok(s) => s,
            Err(e) => panic!("sending {:?} failed: {e}", script[i].code() as char),
        };
        let mut out = mta.output();
        while !out.is_empty() {
            let (f, used) = milter_core::frame::decode_frame(out, DEFAULT_MAX_PAYLOAD)
                .unwrap()
                .unwrap();
            assert!(f.payload.len() <= MAX_SEND_PAYLOAD);
            out = &out[used..];
        }
        mta.clear_output();
        if sent != Sent::AwaitReply {
            continue;
        }
        loop {
            match frames.next_frame() {
                Ok(Some(f)) => match mta.receive(f) {
                    Ok(Received::Decision(_)) => break,
                    Ok(_) => {}
                    Err(_) => return,
                },
                _ => return,
            }
        }
    }
}

/// Parses a recording (`milter_blocking::client::Recording`, the text format of
/// `milter-check record`).
///
/// Checks: no panic; an accepted recording is written back to text that parses to
/// the same recording.
pub fn recording(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rec) = milter_blocking::client::Recording::parse(text) {
        let again = milter_blocking::client::Recording::parse(&rec.to_string());
        assert_eq!(again.as_ref(), Ok(&rec));
    }
}
