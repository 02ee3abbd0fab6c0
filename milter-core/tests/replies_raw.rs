//! Raw-bytes tests for every reply, both directions: the exact wire bytes decode
//! to the value, and the value encodes to the exact wire bytes. Then the decode
//! errors: a string without its NUL, bytes after the last field, truncated fields.

// Test code: a failed unwrap is a test failure with its location, which is
// what we want here (clippy.toml covers #[test] functions, not helpers).
#![allow(clippy::unwrap_used)]

use milter_core::client::ClientSession;
use milter_core::frame::{decode_frame, Frame};
use milter_core::{Actions, DecodeError, OptNeg, OptNegReply, ProtocolOpts, Reply, SymbolList};

/// Decodes a whole packet, checks it re-encodes to the same bytes, returns it.
fn round_trip(wire: &[u8]) -> Reply {
    let (frame, used) = decode_frame(wire, 1 << 20).unwrap().unwrap();
    assert_eq!(used, wire.len(), "one packet");
    let reply = Reply::decode(frame).unwrap();
    let mut again = Vec::new();
    reply.encode(&mut again);
    assert_eq!(again, wire, "re-encoding {reply:?}");
    assert_eq!(reply.code(), wire[4], "code of {reply:?}");
    reply
}

/// Checks both directions for a value and its bytes.
fn both_ways(reply: Reply, wire: &[u8]) {
    let mut encoded = Vec::new();
    reply.encode(&mut encoded);
    assert_eq!(encoded, wire, "encoding {reply:?}");
    assert_eq!(round_trip(wire), reply);
}

/// A packet with a correct length prefix.
fn pkt(code: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = u32::try_from(payload.len() + 1)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    v.push(code);
    v.extend_from_slice(payload);
    v
}

fn decode_err(code: u8, payload: &[u8]) -> DecodeError {
    Reply::decode(Frame { code, payload }).unwrap_err()
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

// ---- decisions and other empty replies ----

#[test]
fn empty_replies() {
    let cases = [
        (Reply::Continue, b'c'),
        (Reply::Accept, b'a'),
        (Reply::Reject, b'r'),
        (Reply::Tempfail, b't'),
        (Reply::Discard, b'd'),
        (Reply::Skip, b's'),
        (Reply::Progress, b'p'),
        (Reply::ConnectionFailure, b'f'),
        (Reply::Shutdown, b'4'),
    ];
    for (reply, code) in cases {
        both_ways(reply.clone(), &[0, 0, 0, 1, code]);
        // No payload is allowed (Postfix: "any bytes left over ... → error").
        assert_eq!(
            decode_err(code, b"x"),
            DecodeError::TrailingBytes { code, count: 1 },
            "{reply:?}"
        );
    }
}

#[test]
fn continue_on_the_wire() {
    both_ways(Reply::Continue, b"\x00\x00\x00\x01\x63");
}

#[test]
fn decisions_and_modifications_are_classified() {
    for r in [
        Reply::Continue,
        Reply::Accept,
        Reply::Reject,
        Reply::Tempfail,
        Reply::Discard,
        Reply::ReplyCode(b("550 x")),
    ] {
        assert!(r.is_decision(), "{r:?}");
        assert!(!r.is_modification(), "{r:?}");
    }
    for r in [Reply::Skip, Reply::Progress, Reply::Shutdown] {
        assert!(!r.is_decision() && !r.is_modification(), "{r:?}");
    }
    for r in [
        Reply::AddHeader {
            name: b("a"),
            value: b("b"),
        },
        Reply::InsertHeader {
            index: 0,
            name: b("a"),
            value: b("b"),
        },
        Reply::ChangeHeader {
            index: 1,
            name: b("a"),
            value: b(""),
        },
        Reply::AddRcpt(b("<a@b>")),
        Reply::AddRcptWithArgs {
            rcpt: b("<a@b>"),
            args: None,
        },
        Reply::DeleteRcpt(b("<a@b>")),
        Reply::ChangeFrom {
            from: b("<>"),
            args: None,
        },
        Reply::ReplaceBody(b("x")),
        Reply::Quarantine(b("why")),
    ] {
        assert!(r.is_modification(), "{r:?}");
        assert!(!r.is_decision(), "{r:?}");
    }
}

// ---- reply code ----

#[test]
fn reply_code_on_the_wire() {
    // The reference byte example: custom reply "550 5.7.1 Blocked" (payload 18).
    both_ways(
        Reply::ReplyCode(b("550 5.7.1 Blocked")),
        b"\x00\x00\x00\x13\x79550 5.7.1 Blocked\x00",
    );
}

#[test]
fn reply_code_multiline_and_errors() {
    let text = "550-5.7.1 a\r\n550-5.7.1 b\r\n550 5.7.1 c";
    both_ways(
        Reply::ReplyCode(b(text)),
        &pkt(b'y', format!("{text}\0").as_bytes()),
    );
    assert_eq!(
        decode_err(b'y', b"550 no nul"),
        DecodeError::MissingNul {
            code: b'y',
            field: "reply text"
        }
    );
    assert_eq!(
        decode_err(b'y', b"550 x\0junk"),
        DecodeError::TrailingBytes {
            code: b'y',
            count: 4
        }
    );
    assert!(matches!(
        decode_err(b'y', b""),
        DecodeError::Truncated { code: b'y', .. }
    ));
}

// ---- headers ----

#[test]
fn add_header() {
    both_ways(
        Reply::AddHeader {
            name: b("X-Scan"),
            value: b("clean"),
        },
        b"\x00\x00\x00\x0ehX-Scan\x00clean\x00",
    );
    // Empty value and a folded value are kept as they are.
    both_ways(
        Reply::AddHeader {
            name: b("X-Empty"),
            value: b(""),
        },
        &pkt(b'h', b"X-Empty\0\0"),
    );
    both_ways(
        Reply::AddHeader {
            name: b("X-Fold"),
            value: b("a\n\tb"),
        },
        &pkt(b'h', b"X-Fold\0a\n\tb\0"),
    );
    assert!(matches!(
        decode_err(b'h', b"X-Scan\0"),
        DecodeError::Truncated { code: b'h', .. }
    ));
    assert!(matches!(
        decode_err(b'h', b"X-Scan\0clean"),
        DecodeError::MissingNul { code: b'h', .. }
    ));
    assert!(matches!(
        decode_err(b'h', b"X-Scan"),
        DecodeError::MissingNul { code: b'h', .. }
    ));
    assert_eq!(
        decode_err(b'h', b"X-Scan\0clean\0\0"),
        DecodeError::TrailingBytes {
            code: b'h',
            count: 1
        }
    );
}

#[test]
fn insert_header_on_the_wire() {
    // The reference byte example: insert "X-Scan: clean" at position 0 (payload 17).
    both_ways(
        Reply::InsertHeader {
            index: 0,
            name: b("X-Scan"),
            value: b("clean"),
        },
        b"\x00\x00\x00\x12\x69\x00\x00\x00\x00X-Scan\x00clean\x00",
    );
    both_ways(
        Reply::InsertHeader {
            index: 0xFFFF_FFFF,
            name: b("X"),
            value: b("y"),
        },
        &pkt(b'i', b"\xff\xff\xff\xffX\0y\0"),
    );
}

#[test]
fn change_header_on_the_wire() {
    // The reference byte example: delete the first Subject header (payload 13).
    both_ways(
        Reply::ChangeHeader {
            index: 1,
            name: b("Subject"),
            value: b(""),
        },
        b"\x00\x00\x00\x0e\x6d\x00\x00\x00\x01Subject\x00\x00",
    );
    both_ways(
        Reply::ChangeHeader {
            index: 2,
            name: b("Subject"),
            value: b("[filtered] hi"),
        },
        &pkt(b'm', b"\0\0\0\x02Subject\0[filtered] hi\0"),
    );
}

#[test]
fn indexed_header_errors() {
    for code in [b'i', b'm'] {
        assert_eq!(
            decode_err(code, b"\0\0\0"),
            DecodeError::Truncated {
                code,
                field: "header index"
            }
        );
        assert_eq!(
            decode_err(code, b""),
            DecodeError::Truncated {
                code,
                field: "header index"
            }
        );
        assert!(matches!(
            decode_err(code, b"\0\0\0\x01"),
            DecodeError::Truncated {
                field: "header name",
                ..
            }
        ));
        assert!(matches!(
            decode_err(code, b"\0\0\0\x01Name\0"),
            DecodeError::Truncated {
                field: "header value",
                ..
            }
        ));
        assert!(matches!(
            decode_err(code, b"\0\0\0\x01Name\0value"),
            DecodeError::MissingNul {
                field: "header value",
                ..
            }
        ));
        assert_eq!(
            decode_err(code, b"\0\0\0\x01Name\0value\0more\0"),
            DecodeError::TrailingBytes { code, count: 5 }
        );
    }
}

// ---- recipients and sender ----

#[test]
fn add_and_delete_rcpt() {
    both_ways(
        Reply::AddRcpt(b("<added@example.test>")),
        b"\x00\x00\x00\x16+<added@example.test>\x00",
    );
    both_ways(
        Reply::DeleteRcpt(b("<REMOVED@Example.TEST>")),
        b"\x00\x00\x00\x18-<REMOVED@Example.TEST>\x00",
    );
    for code in [b'+', b'-'] {
        assert!(matches!(
            decode_err(code, b"<a@b>"),
            DecodeError::MissingNul {
                field: "recipient",
                ..
            }
        ));
        assert!(matches!(
            decode_err(code, b""),
            DecodeError::Truncated {
                field: "recipient",
                ..
            }
        ));
        // `+` and `-` carry exactly one string.
        assert_eq!(
            decode_err(code, b"<a@b>\0NOTIFY=NEVER\0"),
            DecodeError::TrailingBytes { code, count: 13 }
        );
    }
}

#[test]
fn add_rcpt_with_args_with_and_without_args() {
    // As libmilter's smfi_addrcpt_par sends it (captured from the C milter).
    both_ways(
        Reply::AddRcptWithArgs {
            rcpt: b("<added-args@example.test>"),
            args: Some(b("NOTIFY=NEVER")),
        },
        b"\x00\x00\x00\x282<added-args@example.test>\x00NOTIFY=NEVER\x00",
    );
    // All arguments in one space-separated string.
    both_ways(
        Reply::AddRcptWithArgs {
            rcpt: b("<a@b>"),
            args: Some(b("NOTIFY=NEVER ORCPT=rfc822;a@b")),
        },
        &pkt(b'2', b"<a@b>\0NOTIFY=NEVER ORCPT=rfc822;a@b\0"),
    );
    both_ways(
        Reply::AddRcptWithArgs {
            rcpt: b("<a@b>"),
            args: None,
        },
        &pkt(b'2', b"<a@b>\0"),
    );
    // An empty second string is kept apart from no second string.
    both_ways(
        Reply::AddRcptWithArgs {
            rcpt: b("<a@b>"),
            args: Some(b("")),
        },
        &pkt(b'2', b"<a@b>\0\0"),
    );
}

#[test]
fn change_from_with_and_without_args() {
    both_ways(
        Reply::ChangeFrom {
            from: b("<changed-from@example.test>"),
            args: None,
        },
        b"\x00\x00\x00\x1de<changed-from@example.test>\x00",
    );
    both_ways(
        Reply::ChangeFrom {
            from: b("<>"),
            args: Some(b("RET=HDRS ENVID=x")),
        },
        &pkt(b'e', b"<>\0RET=HDRS ENVID=x\0"),
    );
}

#[test]
fn address_with_args_errors() {
    for code in [b'2', b'e'] {
        assert!(matches!(
            decode_err(code, b""),
            DecodeError::Truncated {
                field: "address",
                ..
            }
        ));
        assert!(matches!(
            decode_err(code, b"<a@b>"),
            DecodeError::MissingNul {
                field: "address",
                ..
            }
        ));
        assert!(matches!(
            decode_err(code, b"<a@b>\0NOTIFY=NEVER"),
            DecodeError::MissingNul {
                field: "ESMTP arguments",
                ..
            }
        ));
        // At most two strings (Postfix: further bytes are a fatal error).
        assert_eq!(
            decode_err(code, b"<a@b>\0A=1\0B=2\0"),
            DecodeError::TrailingBytes { code, count: 4 }
        );
    }
}

// ---- body, quarantine ----

#[test]
fn replace_body() {
    both_ways(
        Reply::ReplaceBody(b("REPLACED BODY\r\n")),
        b"\x00\x00\x00\x10bREPLACED BODY\r\n",
    );
    // Raw bytes: NUL and 8-bit bytes are data; an empty packet is an empty body.
    both_ways(
        Reply::ReplaceBody(vec![0, 0xff, b'\r', b'\n', 0]),
        &pkt(b'b', b"\0\xff\r\n\0"),
    );
    both_ways(Reply::ReplaceBody(Vec::new()), b"\x00\x00\x00\x01b");
    let big = vec![b'x'; 65535];
    let Reply::ReplaceBody(got) = round_trip(&pkt(b'b', &big)) else {
        panic!()
    };
    assert_eq!(got.len(), 65535);
}

#[test]
fn quarantine() {
    both_ways(
        Reply::Quarantine(b("conformance quarantine")),
        b"\x00\x00\x00\x18qconformance quarantine\x00",
    );
    assert!(matches!(
        decode_err(b'q', b"reason"),
        DecodeError::MissingNul {
            field: "reason",
            ..
        }
    ));
    assert!(matches!(
        decode_err(b'q', b""),
        DecodeError::Truncated {
            field: "reason",
            ..
        }
    ));
    assert_eq!(
        decode_err(b'q', b"a\0b"),
        DecodeError::TrailingBytes {
            code: b'q',
            count: 1
        }
    );
}

// ---- the never-sent ones ----

#[test]
fn set_symbol_list_packet() {
    both_ways(
        Reply::SetSymbolList(SymbolList {
            index: 5,
            macros: b("{i} {msg_id}"),
        }),
        &pkt(b'l', b"\0\0\0\x05{i} {msg_id}\0"),
    );
    both_ways(
        Reply::SetSymbolList(SymbolList {
            index: 6,
            macros: Vec::new(),
        }),
        &pkt(b'l', b"\0\0\0\x06\0"),
    );
    assert!(matches!(
        decode_err(b'l', b"\0\0"),
        DecodeError::Truncated {
            field: "symbol list stage",
            ..
        }
    ));
    assert!(matches!(
        decode_err(b'l', b"\0\0\0\x05{i}"),
        DecodeError::MissingNul {
            field: "symbol list",
            ..
        }
    ));
    assert!(matches!(
        decode_err(b'l', b"\0\0\0\x05{i}\0x"),
        DecodeError::TrailingBytes { .. }
    ));
}

#[test]
fn unknown_codes_are_kept_not_refused() {
    for (code, payload) in [
        (b'Z', &b"abc"[..]),
        (b'C', b""),
        (b'x', b"\0\0"),
        (0x00, b""),
        (0xff, b"\xff"),
    ] {
        let wire = pkt(code, payload);
        assert_eq!(
            round_trip(&wire),
            Reply::Unrecognized {
                code,
                payload: payload.to_vec()
            }
        );
    }
}

// ---- the O reply ----

fn optneg(version: u32, actions: u32, protocol: u32, lists: &[(u32, &str)]) -> OptNegReply {
    OptNegReply {
        version,
        actions: Actions::from_bits_retain(actions),
        protocol: ProtocolOpts::from_bits_retain(protocol),
        symbol_lists: lists
            .iter()
            .map(|&(index, m)| SymbolList {
                index,
                macros: b(m),
            })
            .collect(),
    }
}

#[test]
fn optneg_reply_without_lists() {
    both_ways(
        Reply::OptNeg(optneg(6, 0xFF, 0, &[])),
        b"\x00\x00\x00\x0dO\x00\x00\x00\x06\x00\x00\x00\xff\x00\x00\x00\x00",
    );
    // Unknown bits are kept as they are.
    both_ways(
        Reply::OptNeg(optneg(2, 0xFFFF_FFFF, 0xFFFF_FFFF, &[])),
        &pkt(b'O', b"\0\0\0\x02\xff\xff\xff\xff\xff\xff\xff\xff"),
    );
}

#[test]
fn optneg_reply_with_symbol_lists() {
    // As libmilter sent it for a milter asking for three symbol lists: "{j} _"
    // for connect, "{i}" for eom, an empty list for eoh.
    let wire = pkt(
        b'O',
        b"\0\0\0\x06\0\0\x01\xff\0\x10\0\0\
          \0\0\0\0{j} _\0\
          \0\0\0\x05{i}\0\
          \0\0\0\x06\0",
    );
    both_ways(
        Reply::OptNeg(optneg(
            6,
            0x1FF,
            0x10_0000,
            &[(0, "{j} _"), (5, "{i}"), (6, "")],
        )),
        &wire,
    );
    // One name, in the bare and in the braced form.
    both_ways(
        Reply::OptNeg(optneg(6, 0x100, 0, &[(2, "i")])),
        &pkt(b'O', b"\0\0\0\x06\0\0\x01\0\0\0\0\0\0\0\0\x02i\0"),
    );
    both_ways(
        Reply::OptNeg(optneg(6, 0x100, 0, &[(2, "{i}")])),
        &pkt(b'O', b"\0\0\0\x06\0\0\x01\0\0\0\0\0\0\0\0\x02{i}\0"),
    );
    // An unknown stage index is kept by the decoder (the client drops it).
    let r = optneg(
        6,
        0x100,
        0,
        &[(7, "{x}"), (0xFFFF_FFFF, ""), (3, "{rcpt_addr}")],
    );
    assert_eq!(r.symbol_lists[0].stage(), None);
    assert_eq!(r.symbol_lists[1].stage(), None);
    assert!(r.symbol_lists[2].stage().is_some());
    both_ways(
        Reply::OptNeg(r),
        &pkt(
            b'O',
            b"\0\0\0\x06\0\0\x01\0\0\0\0\0\
              \0\0\0\x07{x}\0\
              \xff\xff\xff\xff\0\
              \0\0\0\x03{rcpt_addr}\0",
        ),
    );
}

#[test]
fn optneg_reply_as_libmilter_sent_it_to_postfix() {
    // The conformance C milter's answer to Postfix 3.7 (tests/data).
    let wire = b"\x00\x00\x00\x74O\x00\x00\x00\x06\x00\x00\x01\xff\x00\x00\x00\x00\
        \x00\x00\x00\x00{j} {daemon_name} {client_addr}\x00\
        \x00\x00\x00\x02{i} {auth_authen} {mail_addr}\x00\
        \x00\x00\x00\x03{rcpt_addr}\x00\
        \x00\x00\x00\x05{i} {msg_id}\x00";
    both_ways(
        Reply::OptNeg(optneg(
            6,
            0x1FF,
            0,
            &[
                (0, "{j} {daemon_name} {client_addr}"),
                (2, "{i} {auth_authen} {mail_addr}"),
                (3, "{rcpt_addr}"),
                (5, "{i} {msg_id}"),
            ],
        )),
        wire,
    );
}

#[test]
fn optneg_reply_errors() {
    let trunc = |payload: &[u8], field| {
        assert_eq!(
            OptNegReply::decode(payload),
            Err(DecodeError::Truncated { code: b'O', field }),
            "{payload:?}"
        );
        assert_eq!(
            decode_err(b'O', payload),
            DecodeError::Truncated { code: b'O', field }
        );
    };
    trunc(b"", "version");
    trunc(b"\0\0\0\x06", "actions");
    trunc(b"\0\0\0\x06\0\0\x01\xff\0\0", "protocol flags");
    // Bytes after the 12 that are not a whole index.
    trunc(
        b"\0\0\0\x06\0\0\x01\xff\0\0\0\0\0\0\x05",
        "symbol list stage",
    );
    // An index with nothing after it.
    trunc(b"\0\0\0\x06\0\0\x01\xff\0\0\0\0\0\0\0\x05", "symbol list");
    // A list without its NUL.
    assert_eq!(
        OptNegReply::decode(b"\0\0\0\x06\0\0\x01\xff\0\0\0\0\0\0\0\x05{i}"),
        Err(DecodeError::MissingNul {
            code: b'O',
            field: "symbol list"
        })
    );
}

#[test]
fn client_ignores_unknown_symbol_list_indexes() {
    let mut mta = ClientSession::new(OptNeg::POSTFIX_3);
    let mut wire = Vec::new();
    optneg(6, 0x100, 0, &[(9, "{nine}"), (5, "{i}"), (0, "")]).encode(&mut wire);
    let (f, _) = decode_frame(&wire, 1 << 20).unwrap().unwrap();
    let n = mta.receive_negotiation(f).unwrap();
    assert_eq!(n.symbol_lists.len(), 2);
    assert_eq!(
        n.macros_for(milter_core::MacroStage::Eom),
        Some(&b"{i}"[..])
    );
    assert_eq!(
        n.macros_for(milter_core::MacroStage::Connect),
        Some(&b""[..])
    );
    assert_eq!(n.macros_for(milter_core::MacroStage::Helo), None);
}

#[test]
fn client_refuses_a_symbol_list_without_nul() {
    let mut mta = ClientSession::new(OptNeg::POSTFIX_3);
    let wire = pkt(b'O', b"\0\0\0\x06\0\0\x01\0\0\0\0\0\0\0\0\x05{i}");
    let (f, _) = decode_frame(&wire, 1 << 20).unwrap().unwrap();
    assert!(matches!(
        mta.receive_negotiation(f),
        Err(milter_core::ClientError::Decode(
            DecodeError::MissingNul { .. }
        ))
    ));
}

// ---- framing of replies ----

#[test]
fn truncated_frames_need_more_bytes() {
    let wire = pkt(b'h', b"X-Scan\0clean\0");
    for cut in 0..wire.len() {
        assert_eq!(decode_frame(&wire[..cut], 65535), Ok(None), "cut at {cut}");
    }
    let (f, used) = decode_frame(&wire, 65535).unwrap().unwrap();
    assert_eq!((f.code, used), (b'h', wire.len()));
}

#[test]
fn two_replies_in_one_buffer() {
    let mut wire = pkt(b'p', b"");
    wire.extend(pkt(b'c', b""));
    let (f, used) = decode_frame(&wire, 65535).unwrap().unwrap();
    assert_eq!((f.code, used), (b'p', 5));
    let (f, used) = decode_frame(&wire[used..], 65535).unwrap().unwrap();
    assert_eq!((f.code, used), (b'c', 5));
}

#[test]
fn zero_length_reply_frame_is_an_error() {
    assert_eq!(
        decode_frame(b"\0\0\0\0c", 65535),
        Err(DecodeError::ZeroLength)
    );
}
