//! The `metrics` example: its hooks count what the server does, and the scrape file
//! shows it.

mod support;

use milter_blocking::client::{Client, ClientAddress, Envelope, Message};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::milter_process::free_port;

#[test]
fn counts_connections_verdicts_and_modifications() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("milter-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let scrape = dir.join("milter.prom");
    let mut child = Command::new(env!("CARGO_BIN_EXE_metrics"))
        .arg(format!("inet:{port}@127.0.0.1"))
        .args(["--every", "1", "--scrape"])
        .arg(&scrape)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting metrics");
    let spec = format!("inet:{port}@127.0.0.1");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut client = loop {
        match Client::open(spec.as_str()) {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                let _ = child.kill();
                panic!("metrics never answered: {e}");
            }
        }
    };
    let envelope = Envelope::new("<a@example.test>")
        .rcpt("<b@example.test>")
        .rcpt("<c@example.test>")
        .client(
            "client.example.test",
            ClientAddress::Ip(([192, 0, 2, 1], 25).into()),
        );
    let t = client
        .send_message(&envelope, &Message::parse(b"Subject: hi\r\n\r\nbody\r\n"))
        .expect("message");
    assert!(t.eom.expect("eom").has_added_header("X-Rcpt-Count", "2"));
    client.quit().expect("quit");
    // The next summary after the connection closed shows it all (the connection
    // that waited for the milter to listen is the one that sent the message).
    let want = [
        "milter_connections_opened_total 1",
        "milter_connections_closed_total 1",
        "milter_messages_accepted_total 1",
        "milter_modifications_total 1",
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&scrape).unwrap_or_default();
        if want.iter().all(|w| text.lines().any(|l| l == *w)) {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("scrape file never showed {want:?}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
