//! A recording TCP proxy between an MTA and a milter.
//!
//! The MTA is pointed at the tap, the tap connects to the milter for every MTA connection
//! and forwards bytes unchanged in both directions as soon as they arrive (no buffering
//! of frames, `TCP_NODELAY` on both legs). A copy of the stream is cut into milter frames
//! (`u32` length, command byte, data) and recorded per connection, so the tests can show
//! the conversation of a failed case and check what the real MTAs send: their
//! negotiation offer, the macros at each stage, where aborts come.
//!
//! Frame data is kept up to [`KEEP_BYTES`] bytes (the length is always recorded), so that
//! multi-megabyte bodies do not pile up in memory.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Bytes of each frame's data kept in the record. Negotiation, macros, envelope and
/// header frames fit; body chunks and replacement bodies are cut.
pub const KEEP_BYTES: usize = 2048;

/// Timeout of connecting to the milter behind the tap.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest frame length the tap believes; a larger length means the stream is not milter
/// protocol (the recording stops, forwarding goes on).
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Which way a frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A command from the MTA.
    ToMilter,
    /// A reply from the milter.
    ToMta,
}

/// One recorded milter frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Which way it went.
    pub direction: Direction,
    /// The command or reply code.
    pub code: u8,
    /// The data after the code, cut to [`KEEP_BYTES`].
    pub data: Vec<u8>,
    /// The full data length.
    pub len: usize,
    /// When the tap saw it, since the tap started.
    pub at: Duration,
}

impl Frame {
    /// The NUL-separated strings of the data (the last one without its NUL).
    pub fn strings(&self) -> Vec<String> {
        let data = self.data.strip_suffix(&[0]).unwrap_or(&self.data);
        if data.is_empty() {
            return Vec::new();
        }
        data.split(|&b| b == 0)
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect()
    }

    /// For `D`: the stage code and the name/value pairs.
    pub fn macros(&self) -> Option<(char, Vec<(String, String)>)> {
        if self.direction != Direction::ToMilter || self.code != b'D' {
            return None;
        }
        let (&stage, rest) = self.data.split_first()?;
        let rest = rest.strip_suffix(&[0]).unwrap_or(rest);
        let mut parts = rest.split(|&b| b == 0).map(String::from_utf8_lossy);
        let mut pairs = Vec::new();
        if !rest.is_empty() {
            while let Some(name) = parts.next() {
                let value = parts.next().unwrap_or_default();
                pairs.push((name.into_owned(), value.into_owned()));
            }
        }
        Some((char::from(stage), pairs))
    }

    /// For `O` (either way): version, actions, protocol flags.
    pub fn optneg(&self) -> Option<(u32, u32, u32)> {
        if self.code != b'O' || self.data.len() < 12 {
            return None;
        }
        let word = |i: usize| {
            u32::from_be_bytes([
                self.data[i],
                self.data[i + 1],
                self.data[i + 2],
                self.data[i + 3],
            ])
        };
        Some((word(0), word(4), word(8)))
    }

    /// One line: who, code, a readable rendering of the data.
    pub fn describe(&self) -> String {
        let who = match self.direction {
            Direction::ToMilter => "mta",
            Direction::ToMta => "milter",
        };
        let code = char::from(self.code);
        let detail = if let Some((version, actions, protocol)) = self.optneg() {
            let symlists = self.data.get(12..).map(render).unwrap_or_default();
            format!("version={version} actions={actions:#x} protocol={protocol:#x} {symlists}")
        } else if let Some((stage, pairs)) = self.macros() {
            let pairs: Vec<String> = pairs
                .iter()
                .map(|(name, value)| format!("{name}={value:?}"))
                .collect();
            format!("stage={stage} {}", pairs.join(" "))
        } else if matches!(
            (self.direction, self.code),
            (Direction::ToMilter, b'B') | (Direction::ToMta, b'b')
        ) {
            format!("<{} bytes>", self.len)
        } else {
            render(&self.data)
        };
        let cut = if self.len > self.data.len() {
            format!(" (+{} bytes)", self.len - self.data.len())
        } else {
            String::new()
        };
        format!("{who:>6} {code} {detail}{cut}")
    }
}

/// Printable rendering: NUL as `|`, other control bytes escaped.
fn render(data: &[u8]) -> String {
    let mut out = String::new();
    for &byte in data {
        match byte {
            0 => out.push('|'),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(char::from(byte)),
            _ => {
                let _ = write!(out, "\\x{byte:02x}");
            }
        }
    }
    out
}

/// The frames of one MTA connection.
#[derive(Debug, Clone, Default)]
pub struct TapSession {
    /// Connection number, from 0.
    pub id: usize,
    /// Every frame in the order the tap saw them (both directions interleaved).
    pub frames: Vec<Frame>,
    /// Both directions have ended.
    pub closed: bool,
    /// Why recording or forwarding stopped early, if it did.
    pub error: Option<String>,
}

impl TapSession {
    /// The commands from the MTA.
    pub fn commands(&self) -> impl Iterator<Item = &Frame> {
        self.frames
            .iter()
            .filter(|frame| frame.direction == Direction::ToMilter)
    }

    /// The command codes from the MTA as a string, e.g. `"OCHMRRTLLNBEA"`, macros
    /// (`D`) left out.
    pub fn command_codes(&self) -> String {
        self.commands()
            .filter(|frame| frame.code != b'D')
            .map(|frame| char::from(frame.code))
            .collect()
    }

    /// The MTA's negotiation offer.
    pub fn offer(&self) -> Option<(u32, u32, u32)> {
        self.commands().find_map(Frame::optneg)
    }

    /// Every macro packet as (stage, pairs), in order.
    pub fn macros(&self) -> Vec<(char, Vec<(String, String)>)> {
        self.commands().filter_map(Frame::macros).collect()
    }

    /// The whole conversation, one frame per line.
    pub fn describe(&self) -> String {
        let mut out = format!("milter connection {}:\n", self.id);
        for frame in &self.frames {
            let _ = writeln!(
                out,
                "  {:>8.3}s {}",
                frame.at.as_secs_f64(),
                frame.describe()
            );
        }
        if let Some(error) = &self.error {
            let _ = writeln!(out, "  ({error})");
        }
        out
    }
}

#[derive(Debug)]
struct TapShared {
    sessions: Mutex<Vec<TapSession>>,
    stop: AtomicBool,
    started: Instant,
}

impl TapShared {
    fn lock(&self) -> MutexGuard<'_, Vec<TapSession>> {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The running tap. Stops accepting on drop; connections in flight end when either side
/// closes.
#[derive(Debug)]
pub struct MilterTap {
    addr: SocketAddr,
    shared: Arc<TapShared>,
    acceptor: Option<JoinHandle<()>>,
}

impl MilterTap {
    /// Listens on `127.0.0.1:0` and forwards every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(TapShared {
            sessions: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            started: Instant::now(),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("milter-tap".into())
                .spawn(move || accept_loop(listener, upstream, shared))?
        };
        Ok(MilterTap {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// Where the MTA should connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Number of connections so far.
    pub fn session_count(&self) -> usize {
        self.shared.lock().len()
    }

    /// Copies of the sessions numbered `from` and later.
    pub fn sessions_from(&self, from: usize) -> Vec<TapSession> {
        self.shared.lock().iter().skip(from).cloned().collect()
    }

    /// Waits (at most `timeout`) until every session numbered `from` and later has closed;
    /// returns them either way.
    pub fn wait_closed_from(&self, from: usize, timeout: Duration) -> Vec<TapSession> {
        let deadline = Instant::now() + timeout;
        loop {
            let sessions = self.sessions_from(from);
            if sessions.iter().all(|session| session.closed) || Instant::now() >= deadline {
                return sessions;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for MilterTap {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<TapShared>) {
    for downstream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(downstream) = downstream else { continue };
        let id = {
            let mut sessions = shared.lock();
            let id = sessions.len();
            sessions.push(TapSession {
                id,
                ..TapSession::default()
            });
            id
        };
        let upstream = match TcpStream::connect_timeout(&upstream, UPSTREAM_CONNECT_TIMEOUT) {
            Ok(stream) => stream,
            Err(error) => {
                let mut sessions = shared.lock();
                sessions[id].error = Some(format!("cannot connect to the milter: {error}"));
                sessions[id].closed = true;
                continue;
            }
        };
        if let Err(error) = start_pumps(downstream, upstream, id, &shared) {
            let mut sessions = shared.lock();
            sessions[id].error = Some(format!("cannot start forwarding: {error}"));
            sessions[id].closed = true;
        }
    }
}

fn start_pumps(
    downstream: TcpStream,
    upstream: TcpStream,
    id: usize,
    shared: &Arc<TapShared>,
) -> io::Result<()> {
    downstream.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let done = Arc::new(AtomicBool::new(false));
    let legs = [
        (
            downstream.try_clone()?,
            upstream.try_clone()?,
            Direction::ToMilter,
        ),
        (upstream, downstream, Direction::ToMta),
    ];
    for (from, to, direction) in legs {
        let shared = Arc::clone(shared);
        let done = Arc::clone(&done);
        thread::Builder::new()
            .name(format!("milter-tap-{id}"))
            .spawn(move || {
                let result = pump(from, &to, direction, id, &shared);
                let _ = to.shutdown(Shutdown::Write);
                let mut sessions = shared.lock();
                if let Err(error) = result {
                    sessions[id]
                        .error
                        .get_or_insert_with(|| format!("{direction:?}: {error}"));
                }
                // The second leg to finish marks the session closed.
                if done.swap(true, Ordering::SeqCst) {
                    sessions[id].closed = true;
                }
            })?;
    }
    Ok(())
}

/// Copies `from` to `to` until EOF, recording frames.
fn pump(
    mut from: TcpStream,
    mut to: &TcpStream,
    direction: Direction,
    id: usize,
    shared: &TapShared,
) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut parser = FrameParser::default();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        // Record before forwarding, so that a reply can never be recorded before the
        // command it answers.
        let frames = parser.feed(&buf[..n], direction, shared.started.elapsed());
        if !frames.is_empty() || parser.broken.is_some() {
            let mut sessions = shared.lock();
            sessions[id].frames.extend(frames);
            if let Some(broken) = parser.broken.take() {
                sessions[id].error = Some(broken);
            }
        }
        to.write_all(&buf[..n])?;
    }
}

/// Incremental frame splitter for one direction.
#[derive(Debug, Default)]
struct FrameParser {
    header: Vec<u8>,
    code: Option<u8>,
    remaining: usize,
    len: usize,
    data: Vec<u8>,
    dead: bool,
    broken: Option<String>,
}

impl FrameParser {
    fn feed(&mut self, mut bytes: &[u8], direction: Direction, at: Duration) -> Vec<Frame> {
        let mut frames = Vec::new();
        while !bytes.is_empty() && !self.dead {
            if self.code.is_none() {
                let need = 4 - self.header.len();
                let take = need.min(bytes.len());
                self.header.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.header.len() < 4 {
                    break;
                }
                let len = u32::from_be_bytes([
                    self.header[0],
                    self.header[1],
                    self.header[2],
                    self.header[3],
                ]) as usize;
                self.header.clear();
                if len == 0 || len > MAX_FRAME {
                    self.dead = true;
                    self.broken = Some(format!("{direction:?}: implausible frame length {len}"));
                    break;
                }
                // The code byte counts in the length; mark "code pending" with len.
                self.len = len - 1;
                self.remaining = len;
                self.code = Some(0);
                self.data.clear();
                continue;
            }
            if self.remaining == self.len + 1 {
                // Still waiting for the code byte.
                self.code = Some(bytes[0]);
                bytes = &bytes[1..];
                self.remaining -= 1;
            }
            let take = self.remaining.min(bytes.len());
            let keep = KEEP_BYTES.saturating_sub(self.data.len()).min(take);
            self.data.extend_from_slice(&bytes[..keep]);
            bytes = &bytes[take..];
            self.remaining -= take;
            if self.remaining == 0 {
                frames.push(Frame {
                    direction,
                    code: self.code.take().unwrap_or(0),
                    data: std::mem::take(&mut self.data),
                    len: self.len,
                    at,
                });
            }
        }
        frames
    }
}
