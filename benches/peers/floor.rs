//! The floor: the smallest correct blocking milter for the benchmark workload,
//! with the standard library only.
//!
//! Usage: `floor inet:PORT@127.0.0.1` or `floor unix:/path/to/socket`.
//!
//! One thread per connection. Each thread reads as much as the socket has into
//! one big buffer, handles every complete frame in it, appends every reply it
//! owes to one output buffer and writes that buffer with one `write` call.
//! Negotiation: version min(offered, 6), actions ADDHDRS (0x01), protocol 0
//! (every stage is sent and answered). Every stage is answered `c`; `D`, `A`,
//! `Q` and `K` get no reply; end of message gets `h X-Bench: <body bytes>` and
//! `c` in the same write. Any protocol error closes the connection.

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::thread;

/// Largest frame we accept (length field value): 1 MiB payload plus the code.
/// Postfix can send headers larger than 64 KiB, so 64 KiB is too small.
const MAX_FRAME: usize = 1 << 20;
/// Initial read buffer: room for several maximal body chunks.
const BUF_SIZE: usize = 256 * 1024;

enum Spec {
    Inet(String),
    Unix(String),
}

fn parse_spec(s: &str) -> Option<Spec> {
    if let Some(rest) = s.strip_prefix("inet:") {
        let (port, host) = rest.split_once('@')?;
        port.parse::<u16>().ok()?;
        Some(Spec::Inet(format!("{host}:{port}")))
    } else {
        let path = s
            .strip_prefix("unix:")
            .or_else(|| s.strip_prefix("local:"))?;
        Some(Spec::Unix(path.to_string()))
    }
}

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let Some(spec) = parse_spec(&arg) else {
        eprintln!("usage: floor inet:PORT@127.0.0.1 | unix:/path");
        std::process::exit(2);
    };
    if let Err(e) = serve(spec) {
        eprintln!("floor: {e}");
        std::process::exit(1);
    }
}

fn serve(spec: Spec) -> io::Result<()> {
    match spec {
        Spec::Inet(addr) => {
            let listener = TcpListener::bind(addr)?;
            loop {
                let (stream, _) = match listener.accept() {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("floor: accept: {e}");
                        continue;
                    }
                };
                // Without TCP_NODELAY a reply written while the previous one
                // is still unacknowledged waits for the MTA's delayed ACK.
                stream.set_nodelay(true)?;
                spawn(stream);
            }
        }
        Spec::Unix(path) => {
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path)?;
            loop {
                match listener.accept() {
                    Ok((stream, _)) => spawn(stream),
                    Err(e) => eprintln!("floor: accept: {e}"),
                }
            }
        }
    }
}

fn spawn<S: Read + Write + Send + 'static>(stream: S) {
    let spawned = thread::Builder::new().stack_size(64 * 1024).spawn(move || {
        // Any error (I/O or protocol) just ends this connection.
        let _ = session(stream);
    });
    if let Err(e) = spawned {
        eprintln!("floor: cannot spawn a thread: {e}");
    }
}

fn proto_err(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Appends one reply frame.
fn put(out: &mut Vec<u8>, code: u8, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32 + 1).to_be_bytes());
    out.push(code);
    out.extend_from_slice(payload);
}

fn session<S: Read + Write>(mut stream: S) -> io::Result<()> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut start = 0; // first unparsed byte
    let mut end = 0; // end of valid data
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let mut body_bytes: u64 = 0;
    let mut negotiated = false;
    loop {
        // Make room for more input: move the partial frame to the front and
        // grow the buffer if one frame is larger than it.
        if end == buf.len() {
            if start > 0 {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
            }
            if end == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
        }
        let n = stream.read(&mut buf[end..])?;
        if n == 0 {
            return Ok(()); // EOF: the MTA closed
        }
        end += n;

        // Handle every complete frame in the buffer.
        let mut quit = false;
        while end - start >= 4 {
            let len = be32(&buf[start..start + 4]) as usize;
            if len == 0 || len > MAX_FRAME {
                return Err(proto_err("bad frame length"));
            }
            if end - start < 4 + len {
                break; // incomplete frame: read more
            }
            let code = buf[start + 4];
            let payload = &buf[start + 5..start + 4 + len];
            start += 4 + len;
            if !negotiated && code != b'O' {
                return Err(proto_err("first command is not O"));
            }
            match code {
                b'O' => {
                    if payload.len() < 12 {
                        return Err(proto_err("short negotiation"));
                    }
                    let version = be32(payload);
                    let mut actions = be32(&payload[4..]);
                    if actions == 0 {
                        actions = 0x0F;
                    }
                    if version < 2 || actions & 0x01 == 0 {
                        return Err(proto_err("MTA offer unusable"));
                    }
                    let mut reply = [0u8; 12];
                    reply[..4].copy_from_slice(&version.min(6).to_be_bytes());
                    reply[4..8].copy_from_slice(&1u32.to_be_bytes());
                    put(&mut out, b'O', &reply);
                    negotiated = true;
                }
                b'D' | b'A' | b'Q' | b'K' => {
                    if code == b'D' && payload.is_empty() {
                        return Err(proto_err("empty macro packet"));
                    }
                    if code == b'A' || code == b'K' {
                        body_bytes = 0;
                    }
                    if code == b'Q' {
                        quit = true;
                        break;
                    }
                }
                b'M' => {
                    body_bytes = 0;
                    put(&mut out, b'c', &[]);
                }
                b'B' => {
                    body_bytes += payload.len() as u64;
                    put(&mut out, b'c', &[]);
                }
                b'E' => {
                    // Data inside E counts as a last body chunk.
                    body_bytes += payload.len() as u64;
                    let value = body_bytes.to_string();
                    let mut hdr = Vec::with_capacity(32);
                    hdr.extend_from_slice(b"X-Bench\0");
                    hdr.extend_from_slice(value.as_bytes());
                    hdr.push(0);
                    put(&mut out, b'h', &hdr);
                    put(&mut out, b'c', &[]);
                    body_bytes = 0;
                }
                b'C' | b'H' | b'R' | b'T' | b'L' | b'N' | b'U' => put(&mut out, b'c', &[]),
                _ => return Err(proto_err("unknown command")),
            }
        }
        if start == end {
            start = 0;
            end = 0;
        }
        // One write for every reply owed by this batch.
        if !out.is_empty() {
            stream.write_all(&out)?;
            out.clear();
        }
        if quit {
            return Ok(());
        }
    }
}
