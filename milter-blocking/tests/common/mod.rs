//! Test support: port-0 servers, an MTA driven by milter-core's client session,
//! and a watchdog so that a hang fails the test instead of stalling CI.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use milter_blocking::milter_core::client::{
    ClientNegotiated, ClientSession, Decision, Received, Sent,
};
use milter_blocking::milter_core::frame::FrameDecoder;
use milter_blocking::milter_core::{
    Command, Connect, EnvelopeAddr, Family, Header, Modification, OptNeg,
};
use milter_blocking::{Milter, Server, ServerHandle, SocketSpec};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A milter that asks for every stage and answers each with continue (its
/// `negotiate` sets the whole stage list), for tests of the server around it.
#[derive(Default)]
pub struct AllStages;

impl milter_blocking::Declaration for AllStages {}

#[milter_blocking::handlers]
impl Milter for AllStages {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = milter_blocking::Spec::ALL_STAGES;
    }
}

/// Runs `f` on its own thread and fails if it takes longer than `limit`.
pub fn watchdog<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            let _ = t.join();
            v
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match t.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => panic!("test thread ended without a result"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("watchdog: test still running after {limit:?}")
        }
    }
}

/// A server on a free loopback port, stopped on drop.
pub struct TestServer {
    pub spec: SocketSpec,
    pub handle: ServerHandle,
    thread: Option<JoinHandle<Result<(), milter_blocking::ServerError>>>,
}

impl TestServer {
    pub fn start<M, F>(factory: F) -> TestServer
    where
        M: Milter + 'static,
        F: Fn() -> M + Send + Sync + 'static,
    {
        Self::with(|b| b, factory)
    }

    pub fn with<M, F>(
        configure: impl FnOnce(milter_blocking::ServerBuilder) -> milter_blocking::ServerBuilder,
        factory: F,
    ) -> TestServer
    where
        M: Milter + 'static,
        F: Fn() -> M + Send + Sync + 'static,
    {
        let builder = Server::builder().listen("inet:0@127.0.0.1").expect("bind");
        let server = configure(builder).build(factory).expect("build");
        Self::run(server)
    }

    pub fn run(server: Server) -> TestServer {
        let spec = server.local_spec();
        let handle = server.handle();
        let thread = Some(std::thread::spawn(move || server.run()));
        TestServer {
            spec,
            handle,
            thread,
        }
    }

    /// Stops the server and waits for `run` to return.
    pub fn stop(mut self, deadline: Duration) -> Result<(), milter_blocking::ServerError> {
        self.handle.shutdown(deadline);
        self.thread.take().unwrap().join().expect("server thread")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.handle.shutdown(Duration::from_millis(100));
            let _ = t.join();
        }
    }
}

pub enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Conn {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(b),
            Conn::Unix(s) => s.read(b),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(b),
            Conn::Unix(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the milter answered to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The stage was negotiated away: nothing was sent.
    Skipped,
    /// Sent; no reply is due.
    NoReply,
    /// The decision.
    Decision(Decision),
}

/// The result of end of message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EomAnswer {
    pub decision: Decision,
    pub modifications: Vec<Modification>,
    pub progress: usize,
}

/// A scripted MTA.
pub struct Mta {
    pub conn: Conn,
    pub session: ClientSession,
    decoder: FrameDecoder,
}

impl Mta {
    pub fn connect(spec: &SocketSpec) -> Mta {
        Self::connect_offer(spec, OptNeg::POSTFIX_3).expect("negotiation")
    }

    /// Connects and sends the offer, without reading the reply.
    pub fn open(spec: &SocketSpec, offer: OptNeg) -> Mta {
        match spec {
            SocketSpec::Inet(a) => Self::over_tcp(TcpStream::connect(a).expect("connect"), offer),
            SocketSpec::Unix(p) => {
                let s = UnixStream::connect(p).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                Self::over(Conn::Unix(s), offer)
            }
        }
    }

    /// Sends the offer over a connected TCP stream, without reading the reply.
    pub fn over_tcp(s: TcpStream, offer: OptNeg) -> Mta {
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Self::over(Conn::Tcp(s), offer)
    }

    fn over(conn: Conn, offer: OptNeg) -> Mta {
        let mut mta = Mta {
            conn,
            session: ClientSession::new(offer),
            decoder: FrameDecoder::new(),
        };
        mta.flush();
        mta
    }

    pub fn connect_offer(spec: &SocketSpec, offer: OptNeg) -> Result<Mta, String> {
        let mut mta = Self::open(spec, offer);
        mta.negotiate()?;
        Ok(mta)
    }

    pub fn negotiate(&mut self) -> Result<ClientNegotiated, String> {
        self.fill()?;
        let frame = self
            .decoder
            .next_frame()
            .map_err(|e| e.to_string())?
            .ok_or("no frame")?;
        self.session
            .receive_negotiation(frame)
            .cloned()
            .map_err(|e| e.to_string())
    }

    pub fn negotiated(&self) -> &ClientNegotiated {
        self.session.negotiated().expect("negotiated")
    }

    fn flush(&mut self) {
        self.conn.write_all(self.session.output()).expect("write");
        self.session.clear_output();
    }

    /// Reads until at least one whole frame is buffered.
    fn fill(&mut self) -> Result<(), String> {
        loop {
            if self.decoder.frame_ready() {
                return Ok(());
            }
            let spare = self.decoder.spare();
            let n = self.conn.read(spare).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("milter closed the connection".into());
            }
            self.decoder.commit(n);
        }
    }

    pub fn macros(&mut self, code: u8, pairs: &[(&str, &str)]) {
        let pairs: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        self.session.send_macros(code, &pairs).expect("macros");
    }

    /// Sends a command and reads its answer (non-eom commands).
    pub fn send(&mut self, cmd: Command<'_>) -> Answer {
        self.try_send(cmd).expect("exchange")
    }

    pub fn try_send(&mut self, cmd: Command<'_>) -> Result<Answer, String> {
        let sent = self.session.send(&cmd).map_err(|e| e.to_string())?;
        self.flush();
        match sent {
            Sent::Skipped => Ok(Answer::Skipped),
            Sent::NoReply => Ok(Answer::NoReply),
            Sent::AwaitReply => {
                self.fill()?;
                let frame = self
                    .decoder
                    .next_frame()
                    .map_err(|e| e.to_string())?
                    .ok_or("no frame")?;
                match self.session.receive(frame).map_err(|e| e.to_string())? {
                    Received::Decision(d) => Ok(Answer::Decision(d)),
                    other => Err(format!("unexpected {other:?}")),
                }
            }
        }
    }

    pub fn eom(&mut self) -> EomAnswer {
        self.try_eom().expect("eom")
    }

    pub fn try_eom(&mut self) -> Result<EomAnswer, String> {
        self.session
            .send(&Command::Eom(b""))
            .map_err(|e| e.to_string())?;
        self.flush();
        let mut modifications = Vec::new();
        let mut progress = 0;
        loop {
            self.fill()?;
            let frame = self
                .decoder
                .next_frame()
                .map_err(|e| e.to_string())?
                .ok_or("no frame")?;
            match self.session.receive(frame).map_err(|e| e.to_string())? {
                Received::Progress => progress += 1,
                Received::Modification(Modification::ReplaceBody(b)) => {
                    match modifications.last_mut() {
                        Some(Modification::ReplaceBody(prev)) => prev.extend_from_slice(&b),
                        _ => modifications.push(Modification::ReplaceBody(b)),
                    }
                }
                Received::Modification(m) => modifications.push(m),
                Received::Decision(decision) => {
                    return Ok(EomAnswer {
                        decision,
                        modifications,
                        progress,
                    })
                }
            }
        }
    }

    /// Sends a packet that needs no reply (A, Q, K).
    pub fn send_only(&mut self, cmd: Command<'_>) {
        assert_eq!(self.session.send(&cmd).expect("send"), Sent::NoReply);
        self.flush();
    }

    /// Writes raw bytes to the milter.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.conn.write_all(bytes).expect("write");
    }

    /// Whether nothing arrives from the milter within `within` (no stray reply,
    /// connection still open).
    pub fn quiet(&mut self, within: Duration) -> bool {
        match &self.conn {
            Conn::Tcp(s) => s.set_read_timeout(Some(within)).unwrap(),
            Conn::Unix(s) => s.set_read_timeout(Some(within)).unwrap(),
        }
        let mut buf = [0u8; 1];
        let quiet = matches!(self.conn.read(&mut buf), Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
        match &self.conn {
            Conn::Tcp(s) => s.set_read_timeout(Some(Duration::from_secs(20))).unwrap(),
            Conn::Unix(s) => s.set_read_timeout(Some(Duration::from_secs(20))).unwrap(),
        }
        quiet
    }

    /// Whether the milter closed the connection (reads until EOF or timeout).
    pub fn closed_by_milter(&mut self, within: Duration) -> bool {
        match &self.conn {
            Conn::Tcp(s) => s.set_read_timeout(Some(within)).unwrap(),
            Conn::Unix(s) => s.set_read_timeout(Some(within)).unwrap(),
        }
        let mut buf = [0u8; 4096];
        loop {
            match self.conn.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    // Convenience stages.

    pub fn connect_stage(&mut self, host: &str, ip: &str, port: u16) -> Answer {
        let c = Connect {
            hostname: host.as_bytes(),
            family: if ip.contains(':') {
                Family::Inet6
            } else {
                Family::Inet
            },
            port,
            address: ip.as_bytes(),
        };
        self.send(Command::Connect(c))
    }

    pub fn helo(&mut self, name: &str) -> Answer {
        self.send(Command::Helo(name.as_bytes()))
    }

    pub fn mail(&mut self, addr: &str, args: &[&str]) -> Answer {
        let raw: Vec<u8> = args
            .iter()
            .flat_map(|a| [a.as_bytes(), b"\0"].concat())
            .collect();
        self.send(Command::Mail(EnvelopeAddr {
            address: addr.as_bytes(),
            args_raw: &raw,
        }))
    }

    pub fn rcpt(&mut self, addr: &str, args: &[&str]) -> Answer {
        let raw: Vec<u8> = args
            .iter()
            .flat_map(|a| [a.as_bytes(), b"\0"].concat())
            .collect();
        self.send(Command::Rcpt(EnvelopeAddr {
            address: addr.as_bytes(),
            args_raw: &raw,
        }))
    }

    pub fn header(&mut self, name: &str, value: &str) -> Answer {
        self.send(Command::Header(Header {
            name: name.as_bytes(),
            value: value.as_bytes(),
        }))
    }

    pub fn body(&mut self, chunk: &[u8]) -> Answer {
        self.send(Command::Body(chunk))
    }

    /// connect, helo, mail, one rcpt, data, one header, eoh, one body chunk.
    pub fn message_until_eom(&mut self) {
        UNTIL_EOM.iter().for_each(|stage| drop(stage(self)));
    }

    /// mail, rcpt, data, header, eoh, body.
    pub fn message_body_only(&mut self) {
        UNTIL_EOM[2..].iter().for_each(|stage| drop(stage(self)));
    }
}

/// The commands of [`Mta::message_until_eom`], one function each: connect,
/// helo, then those of [`Mta::message_body_only`].
pub const UNTIL_EOM: [fn(&mut Mta) -> Answer; 8] = [
    |m| m.connect_stage("client.example.net", "192.0.2.7", 4567),
    |m| m.helo("client.example.net"),
    |m| m.mail("<a@example.org>", &[]),
    |m| m.rcpt("<b@example.org>", &[]),
    |m| m.send(Command::Data),
    |m| m.header("Subject", "hello"),
    |m| m.send(Command::Eoh),
    |m| m.body(b"line\r\n"),
];

pub fn continue_() -> Answer {
    Answer::Decision(Decision::Continue)
}

/// Log lines captured in a test binary (`LEVEL message`).
pub struct Capture(pub std::sync::Mutex<Vec<String>>);

impl Capture {
    /// A copy of the lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("{} {}", r.level(), r.args()));
        }
    }
    fn flush(&self) {}
}

/// Installs (once per test binary) a logger that captures lines up to `level`; with
/// `quiet_boom`, panics whose message starts with "boom" (expected in these tests)
/// are not printed.
pub fn capture_logs(level: log::LevelFilter, quiet_boom: bool) -> &'static Capture {
    static CAPTURE: std::sync::OnceLock<&'static Capture> = std::sync::OnceLock::new();
    CAPTURE.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture(std::sync::Mutex::new(Vec::new()))));
        log::set_logger(c).unwrap();
        log::set_max_level(level);
        if quiet_boom {
            let default = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let msg = info
                    .payload()
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| info.payload().downcast_ref::<&str>().copied())
                    .unwrap_or("");
                if !msg.starts_with("boom") {
                    default(info);
                }
            }));
        }
        c
    })
}
