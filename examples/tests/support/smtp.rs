//! A small blocking SMTP client and a capturing SMTP sink, for the interop tests.
//!
//! - [`SmtpClient`] speaks to an MTA on loopback: EHLO, MAIL and RCPT with ESMTP
//!   parameters, DATA with dot-stuffing, RSET, QUIT and raw commands; several messages per
//!   session. Every reply comes back exactly as the server sent it ([`Reply`]).
//! - [`SmtpSink`] is the MTA's relay host: a server on `127.0.0.1:0` that accepts
//!   everything and records, per delivered message, the envelope sender, the recipients
//!   (with their ESMTP parameters) and the raw message bytes ([`Delivery`]). Waits for
//!   deliveries are bounded.
//!
//! Only the standard library is used; every socket operation has a timeout.

use std::fmt;
use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Timeout of every read and write of the client. The slowest reply the tests wait for is
/// the one after the final dot of a multi-megabyte message that the milter replaces
/// (several MB through the milter and back into the queue) on a loaded 2-core machine.
pub const CLIENT_IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Timeout of connecting to the MTA.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest reply or command line either side accepts. RFC 5321 allows 512 bytes for a
/// reply line and 1000 for a text line; this leaves room for the tests' long header lines.
pub const MAX_LINE: usize = 64 * 1024;

/// How long a sink connection waits for the next line before checking whether the sink is
/// being shut down.
const SINK_POLL: Duration = Duration::from_millis(200);

/// A sink connection silent for this long is closed (an MTA's SMTP client never idles that
/// long inside a transaction; between transactions it sends QUIT or keeps the connection
/// cached for a few seconds).
const SINK_IDLE_LIMIT: Duration = Duration::from_secs(120);

/// One SMTP reply: the code and every line exactly as received (without CRLF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// Each reply line as received, e.g. `550 5.7.1 mail rejected by conformance milter`.
    pub lines: Vec<String>,
}

impl Reply {
    /// The last line, e.g. `250 2.0.0 Ok: queued as 4Xyz`.
    pub fn last_line(&self) -> &str {
        self.lines.last().map(String::as_str).unwrap_or("")
    }

    /// The text of the last line after the code and separator.
    pub fn last_text(&self) -> &str {
        self.last_line().get(4..).unwrap_or("")
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx (354 after DATA).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines.join("\\r\\n"))
    }
}

/// What DATA produced: the reply to `DATA` itself and, when that was 354, the reply to
/// the message's final dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataReplies {
    /// The reply to the DATA command (354 when the server took the message).
    pub data: Reply,
    /// The reply after the final dot, if the message was sent.
    pub end: Option<Reply>,
}

impl DataReplies {
    /// The reply that decides the message: the end-of-data reply, else the DATA reply.
    pub fn final_reply(&self) -> &Reply {
        self.end.as_ref().unwrap_or(&self.data)
    }
}

/// A blocking SMTP client session.
#[derive(Debug)]
pub struct SmtpClient {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    greeting: Reply,
    transcript: Vec<String>,
}

impl SmtpClient {
    /// Connects to `addr` and reads the greeting.
    pub fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        stream.set_read_timeout(Some(CLIENT_IO_TIMEOUT))?;
        stream.set_write_timeout(Some(CLIENT_IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let reader = BufReader::new(stream.try_clone()?);
        let writer = BufWriter::new(stream);
        let mut client = SmtpClient {
            reader,
            writer,
            greeting: Reply {
                code: 0,
                lines: Vec::new(),
            },
            transcript: Vec::new(),
        };
        client.greeting = client.read_reply()?;
        Ok(client)
    }

    /// The server's greeting.
    pub fn greeting(&self) -> &Reply {
        &self.greeting
    }

    /// Everything said in this session so far, one entry per line (`C: ` client, `S: `
    /// server); message contents are summarised. For failure messages.
    pub fn transcript(&self) -> String {
        self.transcript.join("\n")
    }

    /// Sends one command line (CRLF is added) and reads the reply.
    pub fn command(&mut self, line: &str) -> io::Result<Reply> {
        self.transcript.push(format!("C: {line}"));
        self.writer.write_all(line.as_bytes())?;
        self.writer.write_all(b"\r\n")?;
        self.writer.flush()?;
        self.read_reply()
    }

    /// `EHLO name`.
    pub fn ehlo(&mut self, name: &str) -> io::Result<Reply> {
        self.command(&format!("EHLO {name}"))
    }

    /// `HELO name`.
    pub fn helo(&mut self, name: &str) -> io::Result<Reply> {
        self.command(&format!("HELO {name}"))
    }

    /// `MAIL FROM:<address> params...` (`address` without angle brackets; may be empty).
    pub fn mail_from(&mut self, address: &str, params: &[&str]) -> io::Result<Reply> {
        self.command(&with_params(format!("MAIL FROM:<{address}>"), params))
    }

    /// `RCPT TO:<address> params...` (`address` without angle brackets).
    pub fn rcpt_to(&mut self, address: &str, params: &[&str]) -> io::Result<Reply> {
        self.command(&with_params(format!("RCPT TO:<{address}>"), params))
    }

    /// `DATA`; when the server answers 354, sends `message` (CRLF line ends expected; a
    /// missing final CRLF is added), dot-stuffed, then the final dot, and reads that reply.
    pub fn data(&mut self, message: &[u8]) -> io::Result<DataReplies> {
        let data = self.command("DATA")?;
        if data.code != 354 {
            return Ok(DataReplies { data, end: None });
        }
        self.transcript
            .push(format!("C: <message, {} bytes>", message.len()));
        self.writer.write_all(&dot_stuff(message))?;
        self.writer.write_all(b".\r\n")?;
        self.writer.flush()?;
        let end = self.read_reply()?;
        Ok(DataReplies {
            data,
            end: Some(end),
        })
    }

    /// `RSET`.
    pub fn rset(&mut self) -> io::Result<Reply> {
        self.command("RSET")
    }

    /// `QUIT`, then closes the connection.
    pub fn quit(mut self) -> io::Result<Reply> {
        let reply = self.command("QUIT");
        let _ = self.writer.get_ref().shutdown(Shutdown::Both);
        reply
    }

    /// Reads one (possibly multi-line) reply.
    fn read_reply(&mut self) -> io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let line = read_line(&mut self.reader, None)?.ok_or_else(|| {
                io_error(ErrorKind::UnexpectedEof, "server closed the connection")
            })?;
            let line = String::from_utf8(line)
                .map_err(|_| io_error(ErrorKind::InvalidData, "reply is not UTF-8"))?;
            self.transcript.push(format!("S: {line}"));
            let bytes = line.as_bytes();
            let code = line
                .get(..3)
                .filter(|code| code.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|code| code.parse::<u16>().ok())
                .ok_or_else(|| io_error(ErrorKind::InvalidData, &format!("bad reply {line:?}")))?;
            let more = match bytes.get(3) {
                None | Some(b' ') => false,
                Some(b'-') => true,
                Some(_) => {
                    return Err(io_error(
                        ErrorKind::InvalidData,
                        &format!("bad reply {line:?}"),
                    ))
                }
            };
            lines.push(line);
            if !more {
                return Ok(Reply { code, lines });
            }
        }
    }
}

fn with_params(mut command: String, params: &[&str]) -> String {
    for param in params {
        command.push(' ');
        command.push_str(param);
    }
    command
}

/// Dot-stuffs `message` for DATA: every line starting with `.` gets one more; a final
/// CRLF is added when missing.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 2);
    let mut at_line_start = true;
    for &byte in message {
        if at_line_start && byte == b'.' {
            out.push(b'.');
        }
        out.push(byte);
        at_line_start = byte == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn io_error(kind: ErrorKind, message: &str) -> io::Error {
    io::Error::new(kind, message.to_owned())
}

/// Reads one line (up to LF, at most [`MAX_LINE`] bytes) and strips CRLF (or LF).
/// `Ok(None)` at end of stream before any byte. With `give_up`, a read timeout is retried
/// (keeping the partial line) until `give_up()` says true; then the timeout error is
/// returned. Without it, a timeout is an error at once.
fn read_line(
    reader: &mut BufReader<TcpStream>,
    give_up: Option<&dyn Fn() -> bool>,
) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                match give_up {
                    Some(give_up) if !give_up() => continue,
                    _ => return Err(error),
                }
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            if line.is_empty() {
                return Ok(None);
            }
            return Err(io_error(
                ErrorKind::UnexpectedEof,
                "connection closed mid-line",
            ));
        }
        let (used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(index) => (index + 1, true),
            None => (available.len(), false),
        };
        line.extend_from_slice(&available[..used]);
        reader.consume(used);
        if line.len() > MAX_LINE {
            return Err(io_error(ErrorKind::InvalidData, "line too long"));
        }
        if done {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(line));
        }
    }
}

/// One recipient as the sink received it in RCPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkRcpt {
    /// The address without angle brackets, exactly as sent.
    pub address: String,
    /// The ESMTP parameters after the address, e.g. `NOTIFY=NEVER`.
    pub params: Vec<String>,
}

/// One message the sink accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The EHLO/HELO name of the delivering client.
    pub helo: String,
    /// The envelope sender without angle brackets.
    pub mail_from: String,
    /// The ESMTP parameters of MAIL FROM.
    pub mail_params: Vec<String>,
    /// The recipients in the order given.
    pub rcpts: Vec<SinkRcpt>,
    /// The message as transmitted, dot-unstuffed, with its CRLF line ends.
    pub data: Vec<u8>,
    /// Number of the sink connection that delivered it (0-based).
    pub connection: usize,
}

/// One header field of a delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name before the colon, as written.
    pub name: String,
    /// Everything after the colon, continuation lines included (joined with CRLF), as
    /// written: `Subject:  x` has the value `"  x"`.
    pub value: String,
}

impl Header {
    /// `name:value`, folds as CRLF + white space: the header as it stands in the message.
    pub fn raw(&self) -> String {
        format!("{}:{}", self.name, self.value)
    }
}

impl Delivery {
    /// The recipient addresses in order.
    pub fn rcpt_addresses(&self) -> Vec<&str> {
        self.rcpts
            .iter()
            .map(|rcpt| rcpt.address.as_str())
            .collect()
    }

    /// The bytes up to (not including) the empty line that ends the header block.
    pub fn header_block(&self) -> &[u8] {
        match find(&self.data, b"\r\n\r\n") {
            Some(index) => &self.data[..index + 2],
            None if self.data.starts_with(b"\r\n") => &[],
            None => &self.data,
        }
    }

    /// The body: everything after the empty line that ends the headers.
    pub fn body(&self) -> &[u8] {
        if self.data.starts_with(b"\r\n") {
            return &self.data[2..];
        }
        match find(&self.data, b"\r\n\r\n") {
            Some(index) => &self.data[index + 4..],
            None => &[],
        }
    }

    /// The first line of the message (without CRLF), lossily decoded.
    pub fn first_line(&self) -> String {
        let end = find(&self.data, b"\r\n").unwrap_or(self.data.len());
        String::from_utf8_lossy(&self.data[..end]).into_owned()
    }

    /// The header fields in order; continuation lines stay part of their field.
    pub fn headers(&self) -> Vec<Header> {
        let text = String::from_utf8_lossy(self.header_block()).into_owned();
        let mut headers: Vec<Header> = Vec::new();
        for line in text.split("\r\n").filter(|line| !line.is_empty()) {
            if line.starts_with([' ', '\t']) {
                if let Some(last) = headers.last_mut() {
                    last.value.push_str("\r\n");
                    last.value.push_str(line);
                    continue;
                }
            }
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            headers.push(Header {
                name: name.to_owned(),
                value: value.to_owned(),
            });
        }
        headers
    }

    /// The values (as written, see [`Header::value`]) of every header called `name`
    /// (case-insensitive), in order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers()
            .into_iter()
            .filter(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| header.value)
            .collect()
    }

    /// The single value of header `name`, with one leading space removed; an error
    /// naming the header when it is missing or repeated.
    pub fn single_header(&self, name: &str) -> Result<String, String> {
        let values = self.header_values(name);
        match values.as_slice() {
            [value] => Ok(value.strip_prefix(' ').unwrap_or(value).to_owned()),
            [] => Err(format!("header {name} is missing")),
            _ => Err(format!(
                "header {name} appears {} times: {values:?}",
                values.len()
            )),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[derive(Debug, Default)]
struct SinkState {
    deliveries: Vec<Delivery>,
    connections: usize,
    errors: Vec<String>,
}

#[derive(Debug, Default)]
struct SinkShared {
    state: Mutex<SinkState>,
    changed: Condvar,
    stop: AtomicBool,
}

impl SinkShared {
    fn lock(&self) -> MutexGuard<'_, SinkState> {
        // A panicking connection thread cannot leave the state half-updated (every update
        // is one push), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A capturing SMTP server on `127.0.0.1`: accepts every sender, recipient and message
/// and records them. Stops (and joins its accept thread) on drop.
#[derive(Debug)]
pub struct SmtpSink {
    addr: SocketAddr,
    shared: Arc<SinkShared>,
    acceptor: Option<JoinHandle<()>>,
}

impl SmtpSink {
    /// Listens on `127.0.0.1:0` and serves connections on background threads.
    pub fn start() -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(SinkShared::default());
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("smtp-sink".into())
                .spawn(move || accept_loop(listener, shared))?
        };
        Ok(SmtpSink {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// Where the sink listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port the sink listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A copy of every delivery so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.lock().deliveries.clone()
    }

    /// Number of deliveries so far.
    pub fn count(&self) -> usize {
        self.shared.lock().deliveries.len()
    }

    /// Protocol errors seen by sink connections (a client that sent nonsense).
    pub fn errors(&self) -> Vec<String> {
        self.shared.lock().errors.clone()
    }

    /// Waits until `done` holds for the deliveries, for at most `timeout`. Returns the
    /// deliveries then, or, when the time is up, an error with what had arrived.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[Delivery]) -> bool,
    ) -> Result<Vec<Delivery>, Vec<Delivery>> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if done(&state.deliveries) {
                return Ok(state.deliveries.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(state.deliveries.clone());
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
    }

    /// Waits until at least `n` messages have arrived in total.
    pub fn wait_for_count(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Delivery>, Vec<Delivery>> {
        self.wait_until(timeout, |deliveries| deliveries.len() >= n)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<SinkShared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let index = {
            let mut state = shared.lock();
            state.connections += 1;
            state.connections - 1
        };
        let shared = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name(format!("smtp-sink-{index}"))
            .spawn(move || {
                if let Err(error) = serve(stream, index, &shared) {
                    if !shared.stop.load(Ordering::SeqCst) {
                        shared
                            .lock()
                            .errors
                            .push(format!("sink connection {index}: {error}"));
                    }
                }
            });
        if let Err(error) = spawned {
            eprintln!("smtp sink: cannot start a connection thread: {error}");
        }
    }
}

/// The EHLO reply: what the MTAs need to pass 8-bit bodies, DSN parameters (so that
/// `NOTIFY=NEVER` of an added recipient reaches the sink) and large messages unchanged.
const EHLO_LINES: &[&str] = &[
    "250-sink.test",
    "250-PIPELINING",
    "250-SIZE 0",
    "250-8BITMIME",
    "250-DSN",
    "250 ENHANCEDSTATUSCODES",
];

fn serve(stream: TcpStream, index: usize, shared: &SinkShared) -> io::Result<()> {
    stream.set_read_timeout(Some(SINK_POLL))?;
    stream.set_write_timeout(Some(CLIENT_IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = BufWriter::new(stream);
    let mut helo = String::new();
    let mut current: Option<Delivery> = None;
    writer.write_all(b"220 sink.test ESMTP capturing sink\r\n")?;
    writer.flush()?;
    loop {
        let idle_since = Instant::now();
        let give_up =
            || shared.stop.load(Ordering::SeqCst) || idle_since.elapsed() > SINK_IDLE_LIMIT;
        let line = match read_line(&mut reader, Some(&give_up)) {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(()),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(())
            }
            Err(error) => return Err(error),
        };
        let line = String::from_utf8_lossy(&line).into_owned();
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO ") || upper.starts_with("HELO ") {
            helo = line[5..].trim().to_owned();
            current = None;
            if upper.starts_with("EHLO ") {
                EHLO_LINES.join("\r\n")
            } else {
                "250 sink.test".into()
            }
        } else if upper.starts_with("MAIL FROM:") {
            let (address, params) = split_path(&line[10..]);
            current = Some(Delivery {
                helo: helo.clone(),
                mail_from: address,
                mail_params: params,
                rcpts: Vec::new(),
                data: Vec::new(),
                connection: index,
            });
            "250 2.1.0 Ok".into()
        } else if upper.starts_with("RCPT TO:") {
            match current.as_mut() {
                Some(delivery) => {
                    let (address, params) = split_path(&line[8..]);
                    delivery.rcpts.push(SinkRcpt { address, params });
                    "250 2.1.5 Ok".into()
                }
                None => "503 5.5.1 MAIL first".into(),
            }
        } else if upper == "DATA" {
            match current.take() {
                Some(mut delivery) if !delivery.rcpts.is_empty() => {
                    writer.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
                    writer.flush()?;
                    delivery.data = read_data(&mut reader, &give_up)?;
                    let mut state = shared.lock();
                    state.deliveries.push(delivery);
                    let number = state.deliveries.len();
                    drop(state);
                    shared.changed.notify_all();
                    format!("250 2.0.0 Ok: delivered as sink-{number}")
                }
                _ => "503 5.5.1 RCPT first".into(),
            }
        } else if upper == "RSET" {
            current = None;
            "250 2.0.0 Ok".into()
        } else if upper == "NOOP" {
            "250 2.0.0 Ok".into()
        } else if upper == "QUIT" {
            writer.write_all(b"221 2.0.0 Bye\r\n")?;
            writer.flush()?;
            return Ok(());
        } else {
            "502 5.5.2 Error: command not recognized".into()
        };
        writer.write_all(reply.as_bytes())?;
        writer.write_all(b"\r\n")?;
        writer.flush()?;
    }
}

/// Reads message lines up to the final dot, unstuffing, keeping CRLF line ends.
fn read_data(reader: &mut BufReader<TcpStream>, give_up: &dyn Fn() -> bool) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        let line = match read_line(reader, Some(give_up)) {
            Ok(Some(line)) => line,
            Ok(None) => return Err(io_error(ErrorKind::UnexpectedEof, "EOF inside DATA")),
            Err(error) => return Err(error),
        };
        if line == b"." {
            return Ok(data);
        }
        let line = line.strip_prefix(b".").unwrap_or(&line);
        data.extend_from_slice(line);
        data.extend_from_slice(b"\r\n");
    }
}

/// Splits `<address> PARAM PARAM` (after `MAIL FROM:` / `RCPT TO:`) into the address
/// without brackets and the parameters.
fn split_path(rest: &str) -> (String, Vec<String>) {
    let rest = rest.trim_start();
    let (address, params) = match rest.strip_prefix('<') {
        Some(inner) => match inner.split_once('>') {
            Some((address, params)) => (address, params),
            None => (inner, ""),
        },
        None => rest.split_once(' ').unwrap_or((rest, "")),
    };
    (
        address.to_owned(),
        params.split_whitespace().map(str::to_owned).collect(),
    )
}
