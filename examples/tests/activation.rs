//! systemd socket activation: a milter started with a listening socket on
//! descriptor 3 and `LISTEN_FDS=1`/`LISTEN_PID=<its pid>` serves that socket (TCP
//! and Unix) instead of binding its own. The launcher is a few lines of Python doing
//! what systemd does (python3 ships with the machine image); without python3 the
//! test prints a skip line, or fails under `CI=true`.

mod support;

use milter_blocking::client::{Client, ClientAddress, Envelope, Message};
use milter_blocking::milter_core::client::Decision;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::milter_process::{find_program, free_port, missing_prerequisite};

/// Binds the socket, puts it on descriptor 3, sets the variables, and becomes the
/// milter (exec keeps the pid that LISTEN_PID names).
const LAUNCHER: &str = r#"
import os, socket, sys
kind, where, program = sys.argv[1], sys.argv[2], sys.argv[3]
if kind == "tcp":
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(where)))
else:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(where)
s.listen(16)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(program, [program])
"#;

fn run_case(kind: &str, where_: &str, spec: &str) {
    let program = env!("CARGO_BIN_EXE_conformance");
    let mut child = Command::new("python3")
        .args(["-c", LAUNCHER, kind, where_, program])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the launcher");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut client = loop {
        match Client::open(spec) {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                let _ = child.kill();
                panic!("{kind}: the activated milter never answered on {spec}: {e}");
            }
        }
    };
    let envelope = Envelope::new("<a@example.test>")
        .rcpt("<b@example.test>")
        .client(
            "client.example.test",
            ClientAddress::Ip(([192, 0, 2, 1], 25).into()),
        );
    let t = client
        .send_message(&envelope, &Message::parse(b"Subject: hi\r\n\r\nbody\r\n"))
        .expect("message");
    let eom = t.eom.as_ref().expect("end of message reached");
    assert_eq!(eom.decision, Decision::Continue, "{kind}");
    assert!(
        eom.has_added_header("X-Conformance", "seen"),
        "{kind}: {:?}",
        eom.modifications
    );
    client.quit().expect("quit");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "{kind}: exit status {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{kind}: the milter did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serves_sockets_passed_by_the_service_manager() {
    const TEST: &str = "serves_sockets_passed_by_the_service_manager";
    if find_program("python3").is_none() {
        missing_prerequisite(
            TEST,
            "python3 not found (it launches the milter as systemd would)",
        );
        return;
    }
    let port = free_port();
    run_case("tcp", &port.to_string(), &format!("inet:{port}@127.0.0.1"));
    let dir = std::env::temp_dir().join(format!("milter-activation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("activated.sock");
    let _ = std::fs::remove_file(&path);
    run_case(
        "unix",
        &path.to_string_lossy(),
        &format!("unix:{}", path.display()),
    );
    // A passed Unix socket is the service manager's: the milter leaves the file.
    assert!(path.exists());
    let _ = std::fs::remove_dir_all(&dir);
}
