//! A transparent proxy between an MTA and a milter that records every connection.

use super::recording::{
    Direction, NegotiatedFlags, RecordedPacket, RecordingEntry, RecordingWriter,
};
use super::stream::Stream as MilterStream;
use crate::listener::{self, ListenOptions, Listener, ACCEPT_POLL};
use crate::SocketSpec;
use milter_core::frame::decode_frame;
use milter_core::limits::{DEFAULT_MAX_PAYLOAD, LEN_BYTES, MAX_BODY_CHUNK};
use milter_core::{DecodeError, OptNegReply};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long connecting to the milter may take.
const MILTER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes read (and relayed) at a time.
const READ_SIZE: usize = 64 * 1024;

/// The file name ending of a recording.
pub const RECORDING_EXTENSION: &str = "milter-recording";

/// Records the connections between an MTA and a milter.
///
/// The MTA is pointed at the proxy; for each connection the proxy connects to the
/// milter and relays bytes both ways, unchanged, as they arrive. On the side it
/// cuts each direction into packets with the core's frame decoder and writes one
/// [`Recording`](super::Recording) per connection into a directory, a line per
/// packet, written before the bytes are passed on (so a reply is never recorded
/// before the command it answers) and flushed at once (so a crash loses little).
///
/// Memory per connection is bounded: a packet is buffered for the record only up
/// to the payload limit ([`RecordingProxy::max_payload`]); a larger one is relayed
/// and noted by its length. A stream that does not frame at all (a length of 0)
/// is relayed and no longer recorded. A failure to write the recording is logged
/// and ends the recording, not the relaying.
///
/// ```no_run
/// use milter_blocking::client::RecordingProxy;
/// use milter_blocking::SocketSpec;
///
/// let listen: SocketSpec = "inet:7358@127.0.0.1".parse()?;
/// let milter: SocketSpec = "inet:7357@127.0.0.1".parse()?;
/// let proxy = RecordingProxy::bind(&listen, milter, "/var/tmp/milter-recordings")?;
/// let stop = proxy.handle();
/// std::thread::spawn(move || proxy.run());
/// // ... point the MTA at inet:7358@127.0.0.1 and send mail ...
/// stop.stop();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RecordingProxy {
    listener: Listener,
    milter: SocketSpec,
    dir: PathBuf,
    max_payload: usize,
    stop: Arc<AtomicBool>,
}

/// Stops a running [`RecordingProxy`] from another thread.
#[derive(Debug, Clone)]
pub struct ProxyHandle {
    stop: Arc<AtomicBool>,
}

impl ProxyHandle {
    /// Stops accepting connections; [`RecordingProxy::run`] returns within a
    /// fraction of a second. Connections being relayed go on until their peers
    /// close them.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Why the proxy cannot start or go on.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProxyError {
    /// The listening socket cannot be created.
    Listen {
        /// The spec.
        spec: SocketSpec,
        /// The cause.
        source: io::Error,
    },
    /// The recording directory cannot be created.
    Directory {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The listening socket cannot be set up for accepting.
    Accept(io::Error),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::Listen { spec, source } => write!(f, "cannot listen on {spec}: {source}"),
            ProxyError::Directory { path, source } => {
                write!(
                    f,
                    "cannot create the directory {}: {source}",
                    path.display()
                )
            }
            ProxyError::Accept(e) => write!(f, "setting up the listening socket: {e}"),
        }
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProxyError::Listen { source, .. } | ProxyError::Directory { source, .. } => {
                Some(source)
            }
            ProxyError::Accept(e) => Some(e),
        }
    }
}

impl RecordingProxy {
    /// Listens on `listen` (port 0 picks a free port: see
    /// [`RecordingProxy::local_spec`]), relays to `milter`, and writes recordings
    /// into `dir` (created if missing).
    pub fn bind(
        listen: &SocketSpec,
        milter: SocketSpec,
        dir: impl Into<PathBuf>,
    ) -> Result<RecordingProxy, ProxyError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| ProxyError::Directory {
            path: dir.clone(),
            source,
        })?;
        let listener = Listener::bind(listen, &ListenOptions::default()).map_err(|source| {
            ProxyError::Listen {
                spec: listen.clone(),
                source,
            }
        })?;
        Ok(RecordingProxy {
            listener,
            milter,
            dir,
            max_payload: DEFAULT_MAX_PAYLOAD,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Records packets with payloads up to `bytes` (at least 65535, the largest
    /// body chunk; default 1 MiB); larger ones are relayed and noted by length.
    pub fn max_payload(mut self, bytes: usize) -> RecordingProxy {
        self.max_payload = bytes.max(MAX_BODY_CHUNK);
        self
    }

    /// Where the proxy listens.
    pub fn local_spec(&self) -> SocketSpec {
        self.listener.local_spec()
    }

    /// A handle to stop the proxy.
    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle {
            stop: Arc::clone(&self.stop),
        }
    }

    /// Accepts connections until stopped, a thread pair per connection. An error
    /// accepting one connection is logged and the proxy goes on; only a failure to
    /// set the listening socket up ends it.
    pub fn run(self) -> Result<(), ProxyError> {
        self.listener
            .set_accept_timeout(ACCEPT_POLL)
            .map_err(ProxyError::Accept)?;
        while !self.stop.load(Ordering::SeqCst) {
            let mta = match self.listener.accept() {
                Ok(Some(mta)) => mta,
                Ok(None) => continue,
                Err(e) => {
                    // Out of descriptors, a connection reset before accept: the
                    // proxy goes on, after a pause so as not to spin.
                    log::error!("milter proxy: accepting a connection: {e}");
                    std::thread::sleep(ACCEPT_POLL);
                    continue;
                }
            };
            let path = self.dir.join(recording_name());
            let milter = self.milter.clone();
            let max = self.max_payload;
            let spawned = std::thread::Builder::new()
                .name("milter-proxy".into())
                .spawn(move || relay(mta, &milter, &path, max));
            if let Err(e) = spawned {
                log::error!("milter proxy: cannot start a thread for a connection: {e}");
            }
        }
        Ok(())
    }
}

/// Numbers the recordings of this process (of all its proxies).
static RECORDINGS: AtomicU64 = AtomicU64::new(0);

fn recording_name() -> String {
    let n = RECORDINGS.fetch_add(1, Ordering::Relaxed);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{secs}-{}-{n:06}.{RECORDING_EXTENSION}", std::process::id())
}

/// The recording of one connection, shared by its two directions.
struct Recorder {
    writer: Option<RecordingWriter<File>>,
    path: PathBuf,
}

impl Recorder {
    fn record(&mut self, direction: Direction, pieces: Vec<Piece>) {
        for piece in pieces {
            let Some(w) = self.writer.as_mut() else {
                return;
            };
            let at = w.elapsed();
            let mut negotiated = None;
            let entry = match piece {
                Piece::Packet { code, payload } => {
                    if direction == Direction::ToMta && code == b'O' {
                        negotiated = OptNegReply::decode(&payload).ok().map(|r| NegotiatedFlags {
                            version: r.version,
                            actions: r.actions,
                            protocol: r.protocol,
                        });
                    }
                    RecordingEntry::Packet(RecordedPacket {
                        direction,
                        at,
                        code,
                        payload,
                    })
                }
                Piece::Oversized { code, len } => RecordingEntry::Oversized {
                    direction,
                    at,
                    code,
                    len,
                },
                Piece::Unframed(reason) => RecordingEntry::Unframed {
                    direction,
                    at,
                    reason,
                },
            };
            self.write(&entry);
            if let Some(n) = negotiated {
                self.write(&RecordingEntry::Negotiated(n));
            }
        }
    }

    fn write(&mut self, entry: &RecordingEntry) {
        if let Some(w) = self.writer.as_mut() {
            if let Err(e) = w.entry(entry) {
                log::error!(
                    "milter proxy: writing {} failed, recording stops (relaying goes on): {e}",
                    self.path.display()
                );
                self.writer = None;
            }
        }
    }

    fn end(&mut self) {
        if let Some(w) = self.writer.as_mut() {
            let at = w.elapsed();
            self.write(&RecordingEntry::End { at });
        }
    }
}

fn lock(r: &Mutex<Recorder>) -> MutexGuard<'_, Recorder> {
    r.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Relays one connection until both sides are closed.
fn relay(mta: listener::Stream, milter_spec: &SocketSpec, path: &Path, max_payload: usize) {
    let milter = match MilterStream::connect(milter_spec, MILTER_CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            log::error!("milter proxy: cannot connect to the milter at {milter_spec}: {e}");
            let _ = mta.shutdown(Shutdown::Both);
            return;
        }
    };
    let mta_end = mta
        .peer()
        .map_or_else(|| "unix".to_owned(), |a| a.to_string());
    // Never overwrite: a file of that name was made by someone else.
    let writer = match File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|f| RecordingWriter::new(f, &mta_end, &milter_spec.to_string()))
    {
        Ok(w) => Some(w),
        Err(e) => {
            log::error!(
                "milter proxy: cannot write {} (relaying without a recording): {e}",
                path.display()
            );
            None
        }
    };
    let recorder = Arc::new(Mutex::new(Recorder {
        writer,
        path: path.to_path_buf(),
    }));
    // A clone of the MTA's stream shares its socket; the milter's is duplicated.
    let clones = clone_milter(&milter).map(|m| (mta.clone(), m));
    let (mta2, milter2) = match clones {
        Ok(c) => c,
        Err(e) => {
            log::error!("milter proxy: cannot clone a socket: {e}");
            let _ = mta.shutdown(Shutdown::Both);
            milter.shutdown();
            return;
        }
    };
    let up = {
        let recorder = Arc::clone(&recorder);
        std::thread::Builder::new()
            .name("milter-proxy-up".into())
            .spawn(move || {
                let (mut from, mut to) = (Side::Mta(mta2), Side::Milter(milter2));
                pump(
                    &mut from,
                    &mut to,
                    Direction::ToMilter,
                    &recorder,
                    max_payload,
                );
            })
    };
    let mut from = Side::Milter(milter);
    let mut to = Side::Mta(mta);
    match up {
        Ok(up) => {
            pump(&mut from, &mut to, Direction::ToMta, &recorder, max_payload);
            let _ = up.join();
        }
        Err(e) => {
            log::error!("milter proxy: cannot start a thread: {e}");
            from.shutdown(Shutdown::Both);
            to.shutdown(Shutdown::Both);
        }
    }
    lock(&recorder).end();
}

fn clone_milter(s: &MilterStream) -> io::Result<MilterStream> {
    Ok(match s {
        MilterStream::Tcp(t) => MilterStream::Tcp(t.try_clone()?),
        MilterStream::Unix(u) => MilterStream::Unix(u.try_clone()?),
    })
}

/// One end of the relay.
enum Side {
    Mta(listener::Stream),
    Milter(MilterStream),
}

impl Side {
    fn shutdown(&self, how: Shutdown) {
        // Best effort: the peer may be gone.
        let _ = match self {
            Side::Mta(s) => s.shutdown(how),
            Side::Milter(MilterStream::Tcp(s)) => s.shutdown(how),
            Side::Milter(MilterStream::Unix(s)) => s.shutdown(how),
        };
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Side::Mta(s) => s.read(buf),
            Side::Milter(s) => s.read(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Side::Mta(s) => s.write_all(buf),
            Side::Milter(s) => s.write_all(buf),
        }
    }
}

/// Relays one direction: read, record, pass on. At end of input the write side of
/// `to` is shut down (the other direction goes on); on an error both sockets are.
fn pump(
    from: &mut Side,
    to: &mut Side,
    direction: Direction,
    recorder: &Mutex<Recorder>,
    max_payload: usize,
) {
    let mut buf = vec![0u8; READ_SIZE];
    let mut splitter = FrameSplitter::new(max_payload);
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => {
                to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let pieces = splitter.feed(&buf[..n]);
        if !pieces.is_empty() {
            lock(recorder).record(direction, pieces);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    from.shutdown(Shutdown::Both);
    to.shutdown(Shutdown::Both);
}

/// What the splitter found in a stream.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Packet { code: u8, payload: Vec<u8> },
    Oversized { code: u8, len: u64 },
    Unframed(String),
}

/// Cuts a byte stream into packets for the record, with bounded memory: it holds
/// at most one packet within the limit plus one read.
#[derive(Debug)]
struct FrameSplitter {
    buf: Vec<u8>,
    max_payload: usize,
    /// Bytes of an oversized packet still to pass.
    skip: u64,
    /// The stream stopped framing: nothing more is recorded.
    stopped: bool,
}

impl FrameSplitter {
    fn new(max_payload: usize) -> FrameSplitter {
        FrameSplitter {
            buf: Vec::new(),
            max_payload,
            skip: 0,
            stopped: false,
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> Vec<Piece> {
        let mut out = Vec::new();
        if self.stopped {
            return out;
        }
        self.buf.extend_from_slice(bytes);
        let mut pos = 0;
        loop {
            if self.skip > 0 {
                let n = self.skip.min((self.buf.len() - pos) as u64);
                pos += n as usize;
                self.skip -= n;
                if self.skip > 0 {
                    break;
                }
            }
            match decode_frame(&self.buf[pos..], self.max_payload) {
                Ok(Some((frame, used))) => {
                    out.push(Piece::Packet {
                        code: frame.code,
                        payload: frame.payload.to_vec(),
                    });
                    pos += used;
                }
                Ok(None) => break,
                Err(DecodeError::FrameTooLarge { payload, .. }) => {
                    // Wait for the code byte, then pass the packet unrecorded.
                    let Some(&code) = self.buf.get(pos + LEN_BYTES) else {
                        break;
                    };
                    out.push(Piece::Oversized { code, len: payload });
                    self.skip = LEN_BYTES as u64 + 1 + payload;
                }
                Err(e) => {
                    out.push(Piece::Unframed(format!("{e}: not milter protocol")));
                    self.stopped = true;
                    self.buf = Vec::new();
                    return out;
                }
            }
        }
        self.buf.drain(..pos);
        if self.buf.capacity() > 2 * READ_SIZE && self.buf.len() < READ_SIZE {
            self.buf.shrink_to(READ_SIZE);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(code: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        milter_core::frame::encode_frame(&mut v, code, &[payload]);
        v
    }

    #[test]
    fn splits_packets_across_reads_byte_by_byte() {
        let mut bytes = frame(b'H', b"");
        bytes.extend(frame(b'L', b"Subject\0hi\0"));
        let mut s = FrameSplitter::new(MAX_BODY_CHUNK);
        let mut got = Vec::new();
        for b in &bytes {
            got.extend(s.feed(&[*b]));
        }
        assert_eq!(
            got,
            vec![
                Piece::Packet {
                    code: b'H',
                    payload: vec![]
                },
                Piece::Packet {
                    code: b'L',
                    payload: b"Subject\0hi\0".to_vec()
                }
            ]
        );
        assert!(s.buf.is_empty());
    }

    #[test]
    fn an_oversized_packet_is_noted_and_passed_and_framing_resumes() {
        let big = vec![b'x'; 70_000];
        let mut bytes = frame(b'B', &big);
        bytes.extend(frame(b'E', b""));
        let mut s = FrameSplitter::new(MAX_BODY_CHUNK);
        let mut got = Vec::new();
        // The length and the code arrive in separate reads.
        got.extend(s.feed(&bytes[..4]));
        for chunk in bytes[4..].chunks(1000) {
            got.extend(s.feed(chunk));
            assert!(s.buf.len() <= 1000 + LEN_BYTES + 1);
        }
        assert_eq!(
            got,
            vec![
                Piece::Oversized {
                    code: b'B',
                    len: 70_000
                },
                Piece::Packet {
                    code: b'E',
                    payload: vec![]
                }
            ]
        );
    }

    #[test]
    fn a_zero_length_stops_the_record() {
        let mut s = FrameSplitter::new(MAX_BODY_CHUNK);
        let got = s.feed(&[0, 0, 0, 0, 1, 2, 3]);
        assert!(matches!(got.as_slice(), [Piece::Unframed(_)]));
        assert!(s.feed(&frame(b'c', b"")).is_empty());
    }
}
