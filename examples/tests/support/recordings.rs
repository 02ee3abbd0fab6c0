//! Recording what a real MTA says to a milter: a [`RecordingProxy`] in front of the
//! milter, and the milter's answer to end of message read back from the recording.

use milter_blocking::client::{Direction, Recording, RecordingProxy};
use milter_blocking::milter_core::frame::Frame;
use milter_blocking::milter_core::Reply;
use milter_blocking::SocketSpec;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A recording proxy running on a free loopback port; stopped on drop.
pub struct Recorder {
    /// The port the MTA connects to.
    pub port: u16,
    stop: milter_blocking::client::ProxyHandle,
    thread: Option<JoinHandle<Result<(), milter_blocking::client::ProxyError>>>,
}

impl Recorder {
    /// Relays to `milter`, recording into `dir`.
    pub fn start(milter: &SocketSpec, dir: &Path) -> Recorder {
        let listen: SocketSpec = "inet:0@127.0.0.1".parse().expect("spec");
        let proxy = RecordingProxy::bind(&listen, milter.clone(), dir).expect("proxy");
        let SocketSpec::Inet(addr) = proxy.local_spec() else {
            unreachable!("an inet listener")
        };
        let stop = proxy.handle();
        let thread = Some(std::thread::spawn(move || proxy.run()));
        Recorder {
            port: addr.port(),
            stop,
            thread,
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The complete recording in `dir` of the milter connection that carried a message
/// (an MTA's readiness probe makes connections without one), waiting up to 30 s.
pub fn message_recording(dir: &Path) -> Recording {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            let text = std::fs::read_to_string(&path).expect("read recording");
            if !text.ends_with('\n') {
                continue;
            }
            let rec = Recording::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let has_message = rec
                .packets()
                .any(|p| p.direction == Direction::ToMilter && p.code == b'M');
            if rec.is_complete() && has_message {
                return rec;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no complete recording with a message in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The milter's packets after the last end of message of `rec`, decoded.
pub fn eom_answer(rec: &Recording) -> Vec<Reply> {
    let packets: Vec<_> = rec.packets().collect();
    let eom = packets
        .iter()
        .rposition(|p| p.direction == Direction::ToMilter && p.code == b'E')
        .unwrap_or_else(|| panic!("no end of message in\n{rec}"));
    packets[eom + 1..]
        .iter()
        .take_while(|p| p.direction == Direction::ToMta)
        .map(|p| {
            Reply::decode(Frame {
                code: p.code,
                payload: &p.payload,
            })
            .unwrap_or_else(|e| panic!("{e}\n{rec}"))
        })
        .collect()
}

/// A message sent through a private Postfix whose milter is `milter`, behind a
/// recorder.
pub struct PostfixRun {
    /// The milter connection that carried the message.
    pub recording: Recording,
    /// Postfix's final answer to DATA (`250 ...`, or the milter's reject).
    pub data_reply: crate::support::smtp::Reply,
    /// What the relay sink received (nothing when Postfix refused the message).
    pub delivered: Vec<crate::support::smtp::Delivery>,
    /// Postfix's log.
    pub log: String,
}

/// Sends `message` from `a@example.test` to `b@example.test` through a private
/// Postfix (started for this call) with a recorder in front of `milter`; returns
/// once the milter connection is closed and, if Postfix accepted the message, it is
/// delivered to the sink.
/// Fails if Postfix logs an attempt to leave the machine or trouble with the milter.
pub fn through_postfix(milter: &SocketSpec, message: &[u8]) -> PostfixRun {
    use crate::support::postfix::{Postfix, PostfixConfig};
    use crate::support::smtp::{SmtpClient, SmtpSink};
    let dir = crate::support::milter_process::TempDir::new("recorded").expect("temp dir");
    let recorder = Recorder::start(milter, dir.path());
    let sink = SmtpSink::start().expect("sink");
    let config = PostfixConfig {
        milter: format!("inet:127.0.0.1:{}", recorder.port),
        relay: sink.addr(),
        extra_main_cf: Vec::new(),
    };
    let mta = Postfix::start(&config).unwrap_or_else(|e| panic!("{e}"));
    let mut smtp = SmtpClient::connect(mta.smtp_addr()).expect("smtp connect");
    smtp.ehlo("client.example.test").expect("ehlo");
    smtp.mail_from("a@example.test", &[]).expect("mail");
    smtp.rcpt_to("b@example.test", &[]).expect("rcpt");
    let data_reply = smtp.data(message).expect("data").final_reply().clone();
    let _ = smtp.quit();
    let delivered = if data_reply.is_positive() {
        sink.wait_for_count(1, Duration::from_secs(60))
            .unwrap_or_else(|got| panic!("not delivered: {got:?}\n{}", mta.log()))
    } else {
        Vec::new()
    };
    let recording = message_recording(dir.path());
    let log = mta.log();
    let outside = crate::support::cases::outside_attempts(&log);
    assert_eq!(outside, "", "Postfix tried to leave the machine");
    let trouble = crate::support::cases::milter_trouble(&log);
    assert_eq!(trouble, "", "Postfix reports milter trouble");
    drop(mta);
    drop(recorder);
    PostfixRun {
        recording,
        data_reply,
        delivered,
        log,
    }
}
