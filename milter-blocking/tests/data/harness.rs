//! Shared by the client and CLI tests (included with `#[path]`): a watchdog, and
//! small milters built directly on `milter_core::filter::FilterSession`, independent
//! of our server.

#![allow(dead_code)] // Each test binary uses a different subset.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers, outside #[test] fns.

use milter_core::filter::{Event, FilterSession};
use milter_core::frame::FrameDecoder;
use milter_core::{Spec, Status};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Runs `f` on its own thread and fails the test if it takes longer than `limit`
/// (a hang fails instead of stalling CI). A panic in `f` is passed on.
pub fn watchdog<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(limit) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test did not finish within {limit:?}"),
    }
}

/// One packet the milter received: code and payload.
pub type Packet = (u8, Vec<u8>);

/// What a scripted milter received, shared with the test.
#[derive(Clone, Default)]
pub struct Log(pub Arc<Mutex<Vec<Packet>>>);

impl Log {
    pub fn packets(&self) -> Vec<Packet> {
        self.0.lock().unwrap().clone()
    }

    /// The command codes received, macro packets as `D<code>` (e.g. `DC`).
    pub fn codes(&self) -> Vec<String> {
        self.packets()
            .iter()
            .map(|(c, p)| {
                if *c == b'D' {
                    format!("D{}", p.first().map_or('?', |&b| b as char))
                } else {
                    (*c as char).to_string()
                }
            })
            .collect()
    }

    /// The macro pairs of every `D` packet for command `code`, as text.
    pub fn macros(&self, code: u8) -> Vec<Vec<(String, String)>> {
        self.packets()
            .iter()
            .filter(|(c, p)| *c == b'D' && p.first() == Some(&code))
            .map(|(_, p)| {
                milter_core::MacroDef::decode(p)
                    .unwrap()
                    .pairs()
                    .map(|(n, v)| {
                        (
                            String::from_utf8_lossy(n).into_owned(),
                            String::from_utf8_lossy(v).into_owned(),
                        )
                    })
                    .collect()
            })
            .collect()
    }
}

/// A stage handler: the session (for modifications at end of message) and the
/// event; returns the status to send.
pub trait Handler: FnMut(&mut FilterSession, &Event<'_>) -> Status + Send + 'static {}
impl<F: FnMut(&mut FilterSession, &Event<'_>) -> Status + Send + 'static> Handler for F {}

/// Serves one milter connection on `stream` until quit or EOF.
pub fn serve<S: Read + Write>(mut stream: S, spec: Spec, mut handler: impl Handler, log: Log) {
    let mut session = FilterSession::new();
    let mut frames = FrameDecoder::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let mut done = false;
        while let Some(frame) = frames.next_frame().expect("test milter: bad frame") {
            log.0
                .lock()
                .unwrap()
                .push((frame.code, frame.payload.to_vec()));
            let input = session.handle(frame).expect("test milter: session error");
            match input.event {
                Some(Event::Negotiate(_)) => {
                    session.negotiate(&spec).expect("test milter: negotiation");
                }
                Some(Event::Close) => done = true,
                Some(ev) if ev.stage().is_some() => {
                    let status = handler(&mut session, &ev);
                    session.reply(status).expect("test milter: reply");
                }
                _ => {}
            }
        }
        if !session.output().is_empty() {
            if stream.write_all(session.output()).is_err() {
                return;
            }
            session.clear_output();
        }
        if done {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => frames.push(&buf[..n]),
        }
    }
}

/// Starts a scripted milter on one end of a Unix socket pair; returns the other
/// end, the log and the milter's thread.
pub fn spawn_pair(spec: Spec, handler: impl Handler) -> (UnixStream, Log, thread::JoinHandle<()>) {
    let (a, b) = UnixStream::pair().unwrap();
    let log = Log::default();
    let l = log.clone();
    let t = thread::spawn(move || serve(b, spec, handler, l));
    (a, log, t)
}

/// A handler that continues everywhere.
pub fn continue_all(_: &mut FilterSession, _: &Event<'_>) -> Status {
    Status::Continue
}

/// A milter that answers the negotiation correctly and then replies `script`'s
/// raw bytes to the first command after it (to test protocol violations).
pub fn spawn_raw(
    optneg_reply: Vec<u8>,
    after_first_command: Vec<u8>,
) -> (UnixStream, thread::JoinHandle<()>) {
    let (a, mut b) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || {
        let mut frames = FrameDecoder::new();
        let mut buf = [0u8; 4096];
        let mut seen = 0;
        loop {
            while let Some(f) = frames.next_frame().unwrap() {
                seen += 1;
                let reply = if f.code == b'O' {
                    &optneg_reply
                } else if f.code == b'D' {
                    continue;
                } else if seen >= 2 {
                    &after_first_command
                } else {
                    continue;
                };
                if b.write_all(reply).is_err() {
                    return;
                }
            }
            match b.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => frames.push(&buf[..n]),
            }
        }
    });
    (a, t)
}

/// An `O` reply: version 6, the given actions and protocol bits, no symbol lists.
pub fn optneg(actions: u32, protocol: u32) -> Vec<u8> {
    let mut v = vec![0, 0, 0, 13, b'O', 0, 0, 0, 6];
    v.extend_from_slice(&actions.to_be_bytes());
    v.extend_from_slice(&protocol.to_be_bytes());
    v
}

/// One packet with the given code and payload.
pub fn packet(code: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(code);
    v.extend_from_slice(payload);
    v
}

/// One of our servers on a loopback port (or a Unix socket), stopped on drop.
pub struct ServerGuard {
    pub spec: milter_blocking::SocketSpec,
    handle: milter_blocking::ServerHandle,
    thread: Option<thread::JoinHandle<Result<(), milter_blocking::ServerError>>>,
}

impl ServerGuard {
    pub fn start<M, F>(listen: &str, factory: F) -> ServerGuard
    where
        M: milter_blocking::Milter + 'static,
        F: Fn() -> M + Send + Sync + 'static,
    {
        let server = milter_blocking::Server::builder()
            .listen(listen)
            .expect("listen")
            .build(factory)
            .expect("build");
        let spec = server.local_spec();
        let handle = server.handle();
        let thread = Some(thread::spawn(move || server.run()));
        ServerGuard {
            spec,
            handle,
            thread,
        }
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.handle.shutdown(Duration::from_secs(5));
        if let Some(t) = self.thread.take() {
            let r = t.join();
            if !thread::panicking() {
                r.expect("server thread panicked").expect("server failed");
            }
        }
    }
}

/// A milter that answers the negotiation with `optneg_reply` and every other
/// command (not `D`, `A`, `Q`) with the raw bytes `answer` gives for it (code and
/// payload); it logs every packet and stops at quit or end of input. For replies
/// no milter library sends.
pub fn spawn_scripted(
    optneg_reply: Vec<u8>,
    mut answer: impl FnMut(u8, &[u8]) -> Vec<u8> + Send + 'static,
) -> (UnixStream, Log, thread::JoinHandle<()>) {
    let (a, mut b) = UnixStream::pair().unwrap();
    let log = Log::default();
    let l = log.clone();
    let t = thread::spawn(move || {
        let mut frames = FrameDecoder::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let mut out = Vec::new();
            while let Some(f) = frames.next_frame().unwrap() {
                l.0.lock().unwrap().push((f.code, f.payload.to_vec()));
                match f.code {
                    b'O' => out.extend_from_slice(&optneg_reply),
                    b'D' | b'A' => {}
                    b'Q' => return,
                    code => out.extend(answer(code, f.payload)),
                }
            }
            if !out.is_empty() && b.write_all(&out).is_err() {
                return;
            }
            match b.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => frames.push(&buf[..n]),
            }
        }
    });
    (a, log, t)
}

/// An `O` reply with the given version, actions and protocol bits.
pub fn optneg_version(version: u32, actions: u32, protocol: u32) -> Vec<u8> {
    let mut v = optneg(actions, protocol);
    v[5..9].copy_from_slice(&version.to_be_bytes());
    v
}
