//! Recording what a real MTA says to a milter: a [`RecordingProxy`] in front of the
//! milter, and the milter's answer to end of message read back from the recording.

use milter_blocking::client::{Direction, Recording, RecordingProxy};
use milter_blocking::core::frame::Frame;
use milter_blocking::core::Reply;
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
