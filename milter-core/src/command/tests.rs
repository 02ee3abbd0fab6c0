//! Raw-bytes tests: every command decodes from and encodes to exact bytes.

use super::*;
use crate::frame::decode_frame;

/// Decodes a whole packet, checks it re-encodes to the same bytes, returns it.
fn round_trip(wire: &[u8]) -> Command<'_> {
    let (frame, used) = decode_frame(wire, 1 << 20).unwrap().unwrap();
    assert_eq!(used, wire.len(), "one packet");
    let cmd = Command::decode(frame).unwrap();
    let mut again = Vec::new();
    cmd.encode(&mut again);
    assert_eq!(again, wire, "re-encoding {cmd:?}");
    cmd
}

/// A packet with a correct length prefix.
fn pkt(code: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(code);
    v.extend_from_slice(payload);
    v
}

fn decode_err(code: u8, payload: &[u8]) -> DecodeError {
    Command::decode(Frame { code, payload }).unwrap_err()
}

#[test]
fn optneg_as_postfix_sends_it() {
    let wire = b"\x00\x00\x00\x0dO\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff";
    assert_eq!(round_trip(wire), Command::OptNeg(OptNeg::POSTFIX_3));
    assert!(matches!(
        decode_err(b'O', b"\0\0\0\x06"),
        DecodeError::Truncated { .. }
    ));
    // Extra bytes after the 12 are ignored.
    let cmd = Command::decode(Frame {
        code: b'O',
        payload: b"\0\0\0\x02\0\0\0\x3f\0\0\0\x7fEXTRA",
    })
    .unwrap();
    assert!(matches!(cmd, Command::OptNeg(o) if o.version == 2 && o.protocol.bits() == 0x7f));
}

#[test]
fn macros_for_connect() {
    let wire = b"\x00\x00\x00\x27DCj\x00mx.example.org\x00{daemon_name}\x00smtpd\x00";
    let Command::Macro(d) = round_trip(wire) else {
        panic!()
    };
    assert_eq!(d.stage, b'C');
    assert_eq!(d.pairs().count(), 2);
    // Only the stage byte: no pairs, not an error.
    let Command::Macro(d) = round_trip(b"\x00\x00\x00\x02DL") else {
        panic!()
    };
    assert_eq!(d.pairs().count(), 0);
    // No stage byte at all: an error.
    assert!(matches!(
        decode_err(b'D', b""),
        DecodeError::Truncated { .. }
    ));
}

#[test]
fn connect_every_family() {
    let v4 = b"\x00\x00\x00\x21Cclient.example.net\x004\x00\x19192.0.2.7\x00";
    let Command::Connect(c) = round_trip(v4) else {
        panic!()
    };
    assert_eq!(c.addr().to_string(), "192.0.2.7:25");
    let v6 = pkt(b'C', b"host\x006\x01\xbbIPv6:2001:db8::7\x00");
    let Command::Connect(c) = round_trip(&v6) else {
        panic!()
    };
    assert_eq!(c.addr().to_string(), "[2001:db8::7]:443");
    let v6plain = pkt(b'C', b"host\x006\x00\x19::1\x00");
    let Command::Connect(c) = round_trip(&v6plain) else {
        panic!()
    };
    assert_eq!(c.addr().to_string(), "[::1]:25");
    let unix = pkt(b'C', b"localhost\x00L\x00\x00/run/smtp.sock\x00");
    let Command::Connect(c) = round_trip(&unix) else {
        panic!()
    };
    assert_eq!(c.addr(), ConnectAddr::Unix(b"/run/smtp.sock"));
    let unknown = b"\x00\x00\x00\x0aCunknown\x00U";
    let Command::Connect(c) = round_trip(unknown) else {
        panic!()
    };
    assert_eq!(c.addr(), ConnectAddr::Unknown);
}

#[test]
fn connect_rejects_bad_input() {
    assert_eq!(
        decode_err(b'C', b"h\0X\0\x19x\0"),
        DecodeError::BadFamily(b'X')
    );
    assert_eq!(
        decode_err(b'C', b"h\x004\0\x19999.1.1.1\0"),
        DecodeError::BadAddress { family: b'4' }
    );
    assert!(matches!(
        decode_err(b'C', b"h\x004\0\x191.2.3.4"),
        DecodeError::MissingNul { .. }
    ));
    assert!(matches!(
        decode_err(b'C', b"h\x004\0"),
        DecodeError::Truncated { .. }
    ));
    assert!(matches!(
        decode_err(b'C', b"host"),
        DecodeError::MissingNul { .. }
    ));
    assert!(matches!(
        decode_err(b'C', b""),
        DecodeError::Truncated { .. }
    ));
    let long = [&b"h\0L\0\0"[..], &[b'p'; 109], b"\0"].concat();
    assert_eq!(
        decode_err(b'C', &long),
        DecodeError::BadAddress { family: b'L' }
    );
}

#[test]
fn helo_mail_rcpt() {
    assert_eq!(
        round_trip(b"\x00\x00\x00\x10Hmx.example.org\x00"),
        Command::Helo(b"mx.example.org")
    );
    assert!(matches!(
        decode_err(b'H', b"no-nul"),
        DecodeError::MissingNul { .. }
    ));
    let m = pkt(b'M', b"<a@example.org>\x00SIZE=10\x00BODY=8BITMIME\x00");
    let Command::Mail(a) = round_trip(&m) else {
        panic!()
    };
    assert_eq!(a.address, b"<a@example.org>");
    assert_eq!(a.args().count(), 2);
    let Command::Rcpt(a) = round_trip(b"\x00\x00\x00\x04R<>\x00") else {
        panic!()
    };
    assert_eq!(a.bare(), b"");
    // Trailing bytes after the last NUL are dropped.
    let Command::Mail(a) = Command::decode(Frame {
        code: b'M',
        payload: b"<x>\0A=1\0junk",
    })
    .unwrap() else {
        panic!()
    };
    assert_eq!(a.args().collect::<Vec<_>>(), [&b"A=1"[..]]);
    assert!(matches!(
        decode_err(b'M', b""),
        DecodeError::Truncated { .. }
    ));
}

#[test]
fn header_and_content() {
    let wire = b"\x00\x00\x00\x0fLSubject\x00Hello\x00";
    assert_eq!(
        round_trip(wire),
        Command::Header(Header {
            name: b"Subject",
            value: b"Hello"
        })
    );
    assert_eq!(
        round_trip(&pkt(b'L', b"X\x00\x00")),
        Command::Header(Header {
            name: b"X",
            value: b""
        })
    );
    assert!(matches!(
        decode_err(b'L', b"Subject\0"),
        DecodeError::Truncated { .. }
    ));
    assert!(matches!(
        decode_err(b'L', b"Subject\0x"),
        DecodeError::MissingNul { .. }
    ));
    assert_eq!(round_trip(b"\x00\x00\x00\x01T"), Command::Data);
    assert_eq!(round_trip(b"\x00\x00\x00\x01N"), Command::Eoh);
    assert_eq!(round_trip(b"\x00\x00\x00\x03Bab"), Command::Body(b"ab"));
    assert!(matches!(
        decode_err(b'B', b""),
        DecodeError::Truncated { .. }
    ));
    assert_eq!(round_trip(b"\x00\x00\x00\x01E"), Command::Eom(b""));
    assert_eq!(round_trip(b"\x00\x00\x00\x03Eab"), Command::Eom(b"ab"));
}

#[test]
fn session_control_and_unknown() {
    assert_eq!(round_trip(b"\x00\x00\x00\x01A"), Command::Abort);
    assert_eq!(round_trip(b"\x00\x00\x00\x01Q"), Command::Quit);
    assert_eq!(round_trip(b"\x00\x00\x00\x01K"), Command::QuitNewConnection);
    assert_eq!(
        round_trip(b"\x00\x00\x00\x0aUXFOO bar\x00"),
        Command::Unknown(b"XFOO bar")
    );
    assert_eq!(
        round_trip(b"\x00\x00\x00\x02Zq"),
        Command::Unrecognized {
            code: b'Z',
            payload: b"q"
        }
    );
    assert!(matches!(
        round_trip(b"\x00\x00\x00\x01\xff"),
        Command::Unrecognized { code: 0xff, .. }
    ));
}
