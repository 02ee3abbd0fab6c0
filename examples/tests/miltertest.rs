//! Runs the conformance milter of `docs/CONFORMANCE.md` against miltertest and against a small
//! raw-protocol client.
//!
//! For each milter under test (the libmilter C reference `c/conformance.c`, and the Rust
//! example once it exists) the test starts the milter on a free loopback port, runs every
//! `tests/miltertest/*.lua` script with `miltertest -s SCRIPT` (socket in
//! `MILTER_SOCKET`), then runs the raw-protocol checks below, and stops the milter with
//! SIGTERM, which must end it with status 0. All failures are collected and reported
//! together.
//!
//! The raw checks cover what miltertest 1.6.0 cannot see: the exact negotiation reply
//! (version, actions, protocol, symbol lists), the exact text of every custom reply, the
//! complete end-of-message sequence in order (including add-recipient-with-arguments,
//! change-sender and progress), an empty body, and BIG-BODY (miltertest crashes on
//! replace-body packets larger than 1 KiB).
//!
//! Missing tools (`miltertest`, `cc`, libmilter's headers) skip the test with a one-line
//! notice, or fail it when `CI=true`.

mod support;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::milter_process::{
    build_c_milter, c_toolchain_available, find_program, free_port, missing_prerequisite,
    run_with_timeout, spawn_milter, SocketSpec, TempDir,
};

/// Longest a single script may run. The slowest script takes well under a second; the
/// margin covers a loaded CI machine and miltertest's own 10 s read timeout.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn miltertest_against_c_reference() {
    const TEST: &str = "miltertest_against_c_reference";
    let Some(miltertest) = find_miltertest(TEST) else {
        return;
    };
    if let Err(reason) = c_toolchain_available() {
        missing_prerequisite(TEST, &reason);
        return;
    }
    let build_dir = TempDir::new("conformance-c").expect("creating a temporary build directory");
    let source = manifest_dir().join("c").join("conformance.c");
    let binary =
        build_c_milter(&source, build_dir.path()).unwrap_or_else(|error| panic!("{error}"));
    check_milter(&miltertest, &binary);
}

/// The same scripts and checks against our Rust example.
#[test]
fn miltertest_against_rust_example() {
    check_conformance_milter(
        "miltertest_against_rust_example",
        Path::new(env!("CARGO_BIN_EXE_conformance")),
    );
}

/// Runs everything against the conformance milter binary `milter` (started as
/// `milter inet:PORT@127.0.0.1`). Skips (or fails under `CI=true`) without miltertest.
fn check_conformance_milter(test: &str, milter: &Path) {
    if let Some(miltertest) = find_miltertest(test) {
        check_milter(&miltertest, milter);
    }
}

/// `miltertest` on `PATH`, or `None` after reporting it missing.
fn find_miltertest(test: &str) -> Option<PathBuf> {
    let found = find_program("miltertest");
    if found.is_none() {
        missing_prerequisite(
            test,
            "miltertest not found on PATH (Debian package `miltertest`)",
        );
    }
    found
}

fn check_milter(miltertest: &Path, milter: &Path) {
    let port = free_port();
    let spec = SocketSpec::loopback(port).to_libmilter();
    let mut guard = spawn_milter(milter, &[], &spec);
    let mut failures = Vec::new();

    let scripts = lua_scripts();
    assert!(!scripts.is_empty(), "no .lua scripts found");
    for script in &scripts {
        let name = script
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let result = run_with_timeout(
            Command::new(miltertest)
                .arg("-s")
                .arg(script)
                .env("MILTER_SOCKET", &spec)
                .env(
                    "MILTERTEST_PRELUDE",
                    manifest_dir().join("tests/miltertest/prelude.lua"),
                ),
            SCRIPT_TIMEOUT,
        );
        match result {
            Ok(output) if output.status.success() => {}
            Ok(output) => failures.push(format!(
                "{name}: miltertest exited with {}\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )),
            Err(error) => failures.push(format!("{name}: {error}")),
        }
        if !guard.is_running() {
            failures.push(format!("the milter died during {name}"));
            break;
        }
    }

    if guard.is_running() {
        for (name, check) in raw::CHECKS {
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| check(port)));
            if let Err(payload) = outcome {
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".to_owned());
                failures.push(format!("raw check {name}: {message}"));
            }
        }
    }

    match guard.stop() {
        Ok(status) if status.success() => {}
        Ok(status) => failures.push(format!("after SIGTERM the milter exited with {status}")),
        Err(error) => failures.push(error),
    }
    assert!(
        failures.is_empty(),
        "{} failure(s) against {} ({} miltertest scripts, {} raw checks):\n\n{}\n\n\
         --- milter log ---\n{}",
        failures.len(),
        milter.display(),
        scripts.len(),
        raw::CHECKS.len(),
        failures.join("\n\n"),
        guard.log()
    );
    eprintln!(
        "{}: {} miltertest scripts and {} raw checks passed",
        milter.display(),
        scripts.len(),
        raw::CHECKS.len()
    );
}

/// The `.lua` scripts of `tests/miltertest`, sorted by name (not `prelude.lua`,
/// the helpers they load).
fn lua_scripts() -> Vec<PathBuf> {
    let dir = manifest_dir().join("tests").join("miltertest");
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()));
    let mut scripts: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "lua"))
        .filter(|path| !path.ends_with("prelude.lua"))
        .collect();
    scripts.sort();
    scripts
}

/// A minimal MTA side of the milter protocol, enough to check what miltertest cannot.
mod raw {
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpStream};
    use std::time::Duration;

    /// A check gets the milter's port and panics on a mismatch.
    pub(crate) type Check = fn(u16);

    /// The checks, by name.
    pub(crate) const CHECKS: &[(&str, Check)] = &[
        ("negotiation replies", negotiation),
        ("custom reply texts", reply_texts),
        ("end-of-message sequence", eom_sequence),
        ("BIG-BODY", big_body),
    ];

    /// How long to wait for one reply packet.
    const READ_TIMEOUT: Duration = Duration::from_secs(10);

    /// Largest payload of a replace-body packet.
    const BODY_CHUNK_MAX: usize = 65535;

    /// Largest packet this client accepts (BIG-BODY chunks plus framing, with margin).
    const PACKET_MAX: usize = 1 << 20;

    struct Client {
        stream: TcpStream,
    }

    /// One reply packet: command byte and payload.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Packet {
        cmd: u8,
        payload: Vec<u8>,
    }

    impl Packet {
        /// Readable form: `h ["X-Conformance", "seen"]`, `i 0 ["Name", "value"]`,
        /// `b 15 bytes`.
        fn render(&self) -> String {
            let cmd = char::from(self.cmd);
            match self.cmd {
                b'i' | b'm' if self.payload.len() >= 4 => {
                    let index = u32::from_be_bytes([
                        self.payload[0],
                        self.payload[1],
                        self.payload[2],
                        self.payload[3],
                    ]);
                    format!("{cmd} {index} {:?}", strings(&self.payload[4..]))
                }
                b'b' => format!("{cmd} {} bytes", self.payload.len()),
                _ if self.payload.is_empty() => cmd.to_string(),
                _ => format!("{cmd} {:?}", strings(&self.payload)),
            }
        }
    }

    /// The NUL-terminated strings of a payload (a missing final NUL shows as `<no NUL>`).
    fn strings(payload: &[u8]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut rest = payload;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == 0) {
                Some(end) => {
                    out.push(String::from_utf8_lossy(&rest[..end]).into_owned());
                    rest = &rest[end + 1..];
                }
                None => {
                    out.push(format!("{}<no NUL>", String::from_utf8_lossy(rest)));
                    break;
                }
            }
        }
        out
    }

    /// `s` followed by a NUL.
    fn cstr(s: &str) -> Vec<u8> {
        let mut out = s.as_bytes().to_vec();
        out.push(0);
        out
    }

    /// The NUL-terminated strings concatenated.
    fn cstrs(strings: &[&str]) -> Vec<u8> {
        strings.iter().flat_map(|s| cstr(s)).collect()
    }

    impl Client {
        fn connect(port: u16) -> Self {
            let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .unwrap_or_else(|error| panic!("connecting to 127.0.0.1:{port}: {error}"));
            stream
                .set_read_timeout(Some(READ_TIMEOUT))
                .expect("setting a read timeout");
            stream.set_nodelay(true).expect("setting TCP_NODELAY");
            Client { stream }
        }

        /// Negotiates with the offer and returns the milter's version, actions, protocol
        /// and symbol lists.
        fn negotiate(
            &mut self,
            version: u32,
            actions: u32,
            protocol: u32,
        ) -> (u32, u32, u32, Vec<(u32, String)>) {
            let mut payload = Vec::new();
            for value in [version, actions, protocol] {
                payload.extend_from_slice(&value.to_be_bytes());
            }
            self.send(b'O', &payload);
            let reply = self.read();
            assert_eq!(
                char::from(reply.cmd),
                'O',
                "negotiation reply {}",
                reply.render()
            );
            let p = &reply.payload;
            assert!(p.len() >= 12, "negotiation reply of {} bytes", p.len());
            let word = |at: usize| u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
            let mut lists = Vec::new();
            let mut at = 12;
            while at < p.len() {
                assert!(at + 4 < p.len(), "truncated symbol list in {p:?}");
                let stage = word(at);
                let rest = &p[at + 4..];
                let end = rest
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or_else(|| panic!("symbol list without NUL in {p:?}"));
                lists.push((stage, String::from_utf8_lossy(&rest[..end]).into_owned()));
                at += 4 + end + 1;
            }
            (word(0), word(4), word(8), lists)
        }

        /// The default session start: offer like Sendmail 8.14+, connect, HELO.
        fn session(port: u16) -> Self {
            let mut client = Client::connect(port);
            client.negotiate(6, 0x1FF, 0x1F_FFFF);
            client.expect(b'C', &connect_payload(), "c", "connect");
            client.expect(b'H', &cstr("client.example.test"), "c", "helo");
            client
        }

        fn send(&mut self, cmd: u8, payload: &[u8]) {
            let len = u32::try_from(payload.len() + 1).expect("packet length fits in u32");
            let mut frame = len.to_be_bytes().to_vec();
            frame.push(cmd);
            frame.extend_from_slice(payload);
            self.stream
                .write_all(&frame)
                .unwrap_or_else(|error| panic!("sending '{}': {error}", char::from(cmd)));
        }

        fn read(&mut self) -> Packet {
            let mut header = [0u8; 4];
            self.stream
                .read_exact(&mut header)
                .unwrap_or_else(|error| panic!("reading a reply: {error}"));
            let len = u32::from_be_bytes(header) as usize;
            assert!((1..=PACKET_MAX).contains(&len), "reply packet length {len}");
            let mut data = vec![0u8; len];
            self.stream
                .read_exact(&mut data)
                .unwrap_or_else(|error| panic!("reading a reply of {len} bytes: {error}"));
            Packet {
                cmd: data[0],
                payload: data[1..].to_vec(),
            }
        }

        /// Sends a macro packet for `stage` (no reply).
        fn macros(&mut self, stage: u8, pairs: &[&str]) {
            let mut payload = vec![stage];
            payload.extend(cstrs(pairs));
            self.send(b'D', &payload);
        }

        /// Sends a command and checks that the single reply renders as `want`.
        fn expect(&mut self, cmd: u8, payload: &[u8], want: &str, what: &str) {
            self.send(cmd, payload);
            let reply = self.read();
            assert_eq!(reply.render(), want, "reply to {what}");
        }

        /// Sends end of message and returns every packet up to the final reply.
        fn eom(&mut self) -> Vec<Packet> {
            self.send(b'E', &[]);
            let mut packets = Vec::new();
            loop {
                let packet = self.read();
                let last = matches!(packet.cmd, b'c' | b'a' | b'r' | b't' | b'd' | b'y');
                packets.push(packet);
                if last {
                    return packets;
                }
                assert!(packets.len() < 10_000, "no final reply to end of message");
            }
        }

        fn quit(mut self) {
            self.send(b'Q', &[]);
        }
    }

    /// Connection information for client.example.test at 192.0.2.10 port 12345.
    fn connect_payload() -> Vec<u8> {
        let mut payload = cstr("client.example.test");
        payload.push(b'4');
        payload.extend_from_slice(&12345u16.to_be_bytes());
        payload.extend(cstr("192.0.2.10"));
        payload
    }

    /// The rendered packets, with each run of replace-body packets shown as one line
    /// `b (replace body)`, and the bytes of every run.
    fn summarize(packets: &[Packet]) -> (Vec<String>, Vec<Vec<u8>>) {
        let mut lines: Vec<String> = Vec::new();
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        let mut in_body = false;
        for packet in packets {
            if packet.cmd == b'b' {
                assert!(
                    packet.payload.len() <= BODY_CHUNK_MAX,
                    "replace-body packet of {} bytes",
                    packet.payload.len()
                );
                if !in_body {
                    lines.push("b (replace body)".to_owned());
                    bodies.push(Vec::new());
                }
                if let Some(body) = bodies.last_mut() {
                    body.extend_from_slice(&packet.payload);
                }
                in_body = true;
            } else {
                lines.push(packet.render());
                in_body = false;
            }
        }
        (lines, bodies)
    }

    fn negotiation(port: u16) {
        let symbol_lists = vec![
            (0, "{j} {daemon_name} {client_addr}".to_owned()),
            (2, "{i} {auth_authen} {mail_addr}".to_owned()),
            (3, "{rcpt_addr}".to_owned()),
            (5, "{i} {msg_id}".to_owned()),
        ];
        let cases = [
            ((6, 0x1FF, 0x1F_FFFF), (6, 0x1FF, 0, symbol_lists.clone())),
            ((7, 0x1FF, 0x1F_FFFF), (6, 0x1FF, 0, symbol_lists.clone())),
            ((4, 0x1FF, 0x37F), (4, 0x1FF, 0, symbol_lists)),
            ((4, 0xFF, 0x37F), (4, 0xFF, 0, Vec::new())),
            ((2, 0x3F, 0x7F), (2, 0x3F, 0, Vec::new())),
        ];
        for ((version, actions, protocol), want) in cases {
            let mut client = Client::connect(port);
            let got = client.negotiate(version, actions, protocol);
            assert_eq!(
                got, want,
                "reply to the offer version {version}, actions {actions:#x}, protocol {protocol:#x}"
            );
            client.quit();
        }
    }

    fn reply_texts(port: u16) {
        let y = |text: &str| format!("y [{text:?}]");

        let mut client = Client::connect(port);
        client.negotiate(6, 0x1FF, 0x1F_FFFF);
        client.expect(b'C', &connect_payload(), "c", "connect");
        client.expect(
            b'H',
            &cstr("Reject.Helo.Test"),
            &y("550 5.7.0 helo rejected by conformance milter"),
            "HELO reject.helo.test",
        );
        client.quit();

        let mut client = Client::session(port);
        let mail = |client: &mut Client, sender: &str, want: &str| {
            client.macros(b'M', &["{mail_addr}", "x@example.test"]);
            client.expect(b'M', &cstr(sender), want, &format!("MAIL {sender}"));
        };
        mail(
            &mut client,
            "<Reject-Mail@EXAMPLE.test>",
            &y("550 5.7.1 mail rejected by conformance milter"),
        );
        mail(
            &mut client,
            "tempfail-mail@example.test",
            &y("451 4.7.1 mail tempfailed by conformance milter"),
        );
        mail(&mut client, "<sender@example.test>", "c");
        client.expect(
            b'R',
            &cstr("<reject-rcpt@example.test>"),
            &y("550 5.1.1 rcpt rejected by conformance milter"),
            "RCPT reject-rcpt",
        );
        client.expect(
            b'R',
            &cstr("<TEMPFAIL-rcpt@example.test>"),
            &y("451 4.7.1 rcpt tempfailed by conformance milter"),
            "RCPT tempfail-rcpt",
        );
        client.expect(
            b'R',
            &cstr("<discard-rcpt@example.test>"),
            "d",
            "RCPT discard-rcpt",
        );

        for (action, want) in [
            (
                "reject",
                y("554 5.7.1 message rejected by conformance milter"),
            ),
            ("discard", "d".to_owned()),
            ("accept", "a".to_owned()),
        ] {
            mail(&mut client, "<sender@example.test>", "c");
            client.expect(b'R', &cstr("<rcpt@example.test>"), "c", "RCPT");
            client.expect(b'T', &[], "c", "DATA");
            client.expect(
                b'L',
                &cstrs(&["X-Conformance-Action", action]),
                "c",
                "header X-Conformance-Action",
            );
            client.expect(b'N', &[], &want, &format!("end of headers after {action}"));
        }
        client.expect(
            b'U',
            &cstr("XYZZY plugh"),
            &y("500 5.5.1 command not recognised by conformance milter"),
            "unknown command",
        );
        client.quit();
    }

    fn eom_sequence(port: u16) {
        let mut client = Client::session(port);
        client.macros(b'M', &["i", "RAW0001"]);
        client.expect(
            b'M',
            &cstrs(&["<change-from@example.test>", "BODY=8BITMIME"]),
            "c",
            "MAIL",
        );
        client.expect(b'R', &cstr("<REMOVED@Example.TEST>"), "c", "RCPT");
        client.expect(b'R', &cstr("<keep@example.test>"), "c", "RCPT");
        client.expect(b'T', &[], "c", "DATA");
        for (name, value) in [
            ("Subject", " REPLACE-BODY QUARANTINE"),
            ("X-Delete-Me", "a"),
            ("X-Delete-Me", "b"),
        ] {
            client.expect(b'L', &cstrs(&[name, value]), "c", name);
        }
        client.expect(b'N', &[], "c", "end of headers");
        client.expect(b'B', b"hello\r\n", "c", "body");
        let packets = client.eom();
        let (lines, bodies) = summarize(&packets);
        let want = [
            "p",
            r#"h ["X-Conformance", "seen"]"#,
            r#"i 0 ["X-Conformance-First", "1"]"#,
            r#"m 1 ["Subject", "[filtered] REPLACE-BODY QUARANTINE"]"#,
            r#"m 1 ["X-Delete-Me", ""]"#,
            r#"h ["X-Conformance-Queue-Id", "RAW0001"]"#,
            r#"h ["X-Conformance-Body-Bytes", "7"]"#,
            r#"h ["X-Conformance-Rcpts", "2"]"#,
            r#"h ["X-Conformance-Headers", "3"]"#,
            r#"+ ["<added@example.test>"]"#,
            r#"2 ["<added-args@example.test>", "NOTIFY=NEVER"]"#,
            r#"- ["<REMOVED@Example.TEST>"]"#,
            r#"e ["<changed-from@example.test>"]"#,
            "b (replace body)",
            r#"q ["conformance quarantine"]"#,
            "c",
        ];
        assert_eq!(lines, want, "end-of-message packets of the full message");
        assert_eq!(
            bodies,
            vec![b"REPLACED BODY\r\n".to_vec()],
            "replacement body"
        );

        // The next message on the connection, with no headers and no body at all.
        client.macros(b'M', &["{mail_addr}", "sender@example.test"]);
        client.expect(b'M', &cstr("<sender@example.test>"), "c", "MAIL");
        client.expect(b'R', &cstr("<rcpt@example.test>"), "c", "RCPT");
        client.expect(b'T', &[], "c", "DATA");
        client.expect(b'N', &[], "c", "end of headers");
        let (lines, _) = summarize(&client.eom());
        let want = [
            "p",
            r#"h ["X-Conformance", "seen"]"#,
            r#"i 0 ["X-Conformance-First", "1"]"#,
            r#"h ["X-Conformance-Queue-Id", "unknown"]"#,
            r#"h ["X-Conformance-Body-Bytes", "0"]"#,
            r#"h ["X-Conformance-Rcpts", "1"]"#,
            r#"h ["X-Conformance-Headers", "0"]"#,
            r#"+ ["<added@example.test>"]"#,
            "c",
        ];
        assert_eq!(lines, want, "end-of-message packets of an empty message");
        client.quit();
    }

    fn big_body(port: u16) {
        let mut client = Client::session(port);
        client.macros(b'M', &["{mail_addr}", "sender@example.test"]);
        client.expect(b'M', &cstr("<sender@example.test>"), "c", "MAIL");
        client.expect(b'R', &cstr("<rcpt@example.test>"), "c", "RCPT");
        client.expect(b'T', &[], "c", "DATA");
        client.expect(b'L', &cstrs(&["Subject", "BIG-BODY"]), "c", "Subject");
        client.expect(b'N', &[], "c", "end of headers");
        client.expect(b'B', b"x", "c", "body");
        let packets = client.eom();
        let (lines, bodies) = summarize(&packets);
        let want = [
            "p",
            r#"h ["X-Conformance", "seen"]"#,
            r#"i 0 ["X-Conformance-First", "1"]"#,
            r#"m 1 ["Subject", "[filtered] BIG-BODY"]"#,
            r#"h ["X-Conformance-Queue-Id", "unknown"]"#,
            r#"h ["X-Conformance-Body-Bytes", "1"]"#,
            r#"h ["X-Conformance-Rcpts", "1"]"#,
            r#"h ["X-Conformance-Headers", "1"]"#,
            r#"+ ["<added@example.test>"]"#,
            "b (replace body)",
            "c",
        ];
        assert_eq!(lines, want, "end-of-message packets of a BIG-BODY message");
        let expected: Vec<u8> = b"0123456789abcdef\r\n".repeat(200_000);
        assert_eq!(bodies.len(), 1, "one run of replace-body packets");
        assert!(
            bodies[0] == expected,
            "BIG-BODY: {} bytes received, not the 3,600,000 expected bytes",
            bodies[0].len()
        );
        let chunks = packets.iter().filter(|p| p.cmd == b'b').count();
        assert!(
            chunks >= expected.len().div_ceil(BODY_CHUNK_MAX),
            "BIG-BODY in {chunks} packets"
        );
        client.quit();
    }
}
