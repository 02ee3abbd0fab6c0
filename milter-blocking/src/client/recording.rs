//! Recordings: the packets of one milter connection, both ways, as a text file.
//!
//! `milter-check record` writes one recording per milter connection it relays
//! (see [`RecordingProxy`](super::RecordingProxy)); `milter-check replay` and
//! [`replay`](super::replay()) play one back. The format is line-based, versioned
//! and meant to be read (and, with care, edited) by people.
//!
//! # Format, version 1
//!
//! A recording is UTF-8 text with `\n` line ends. The first line is the header;
//! every other line is one entry, in the order the proxy saw them. There are no
//! comments and no blank lines, so entry `n` (from 0) is always on line `n + 2`.
//!
//! ```text
//! milter-recording 1 mta=127.0.0.1:40312 milter=inet:7357@127.0.0.1 started=1796536296.120055
//! > 0.000000 O \0\0\0\x06\0\0\x01\xff\0\x1f\xff\xff
//! < 0.000412 O \0\0\0\x06\0\0\0\x01\0\0\0\0
//! negotiated version=6 actions=0x00000001 protocol=0x00000000
//! > 0.000530 D C{daemon_name}\0smtpd\0
//! > 0.000530 C client.example.net\04\0\xd3\x04192.0.2.1\0
//! < 0.000601 c
//! >! 0.120000 B 2000000
//! end 0.130215
//! ```
//!
//! | line | meaning |
//! | --- | --- |
//! | `milter-recording 1 mta=E milter=E started=S` | header: format version 1, the MTA's and the milter's endpoints (escaped, see below), the start as seconds since 1970 with 6 decimals |
//! | `> T C PAYLOAD` | a packet from the MTA to the milter: `T` seconds since the start (6 decimals), `C` the code byte, then one space and the payload (left out with its space when empty) |
//! | `< T C PAYLOAD` | a packet from the milter to the MTA |
//! | `negotiated version=V actions=0xA protocol=0xP` | what the milter asked for in its negotiation answer (8 hex digits each); follows the `<` line of that answer |
//! | `>! T C LEN` / `<! T C LEN` | a packet whose payload of `LEN` bytes was over the recorder's limit: relayed, not recorded |
//! | `>? T REASON` / `<? T REASON` | from here on that direction did not frame as milter packets (a zero length, say): relayed, not recorded |
//! | `end T` | both directions closed; a recording without it was cut short |
//!
//! Timestamps never decrease. Code bytes and payloads are escaped: bytes 0x20 to
//! 0x7e stand for themselves except `\`; `\\` is a backslash, `\0` NUL, `\r`, `\n`
//! and `\t` as usual, and `\xHH` (two hex digits) any other byte. In a code, a
//! space is `\x20`; in endpoints, spaces are `\x20` too; a payload's last byte is
//! escaped when it is a space, so that no line ends in white space.
//!
//! [`Recording::parse`] is strict: anything else is a [`RecordingError`] naming
//! the line.
//!
//! ```
//! use milter_blocking::client::{Direction, Recording, RecordingEntry};
//! let text = "milter-recording 1 mta=127.0.0.1:40312 milter=inet:7357@127.0.0.1 started=0.000000\n\
//!             > 0.000100 H\n\
//!             < 0.000200 c\n\
//!             end 0.000300\n";
//! let rec = Recording::parse(text)?;
//! assert_eq!(rec.entries.len(), 3);
//! let first = rec.packets().next().unwrap();
//! assert_eq!((first.direction, first.code), (Direction::ToMilter, b'H'));
//! assert_eq!(rec.to_string(), text);
//! # Ok::<(), milter_blocking::client::RecordingError>(())
//! ```

use milter_core::{Actions, ProtocolOpts};
use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The format version this library writes and reads.
pub const RECORDING_FORMAT_VERSION: u32 = 1;

/// The first word of a recording.
const MAGIC: &str = "milter-recording";

/// Which way a packet went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the MTA to the milter (a command), written `>`.
    ToMilter,
    /// From the milter to the MTA (a reply), written `<`.
    ToMta,
}

impl Direction {
    fn sign(self) -> char {
        match self {
            Direction::ToMilter => '>',
            Direction::ToMta => '<',
        }
    }
}

/// One packet of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordedPacket {
    /// Which way it went.
    pub direction: Direction,
    /// When, since the recording started.
    pub at: Duration,
    /// The command or reply code.
    pub code: u8,
    /// The bytes after the code.
    pub payload: Vec<u8>,
}

impl RecordedPacket {
    /// The packet as it was on the wire: length, code, payload.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.payload.len());
        milter_core::frame::encode_frame(&mut out, self.code, &[&self.payload]);
        out
    }
}

/// The milter's negotiation answer, as a recording states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NegotiatedFlags {
    /// Protocol version.
    pub version: u32,
    /// Actions the milter asked for.
    pub actions: Actions,
    /// Protocol options the milter asked for.
    pub protocol: ProtocolOpts,
}

/// One line of a recording after the header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordingEntry {
    /// A whole packet.
    Packet(RecordedPacket),
    /// The milter's negotiation answer, stated after its packet.
    Negotiated(NegotiatedFlags),
    /// A packet relayed but not recorded: its payload was over the limit.
    Oversized {
        /// Which way it went.
        direction: Direction,
        /// When, since the recording started.
        at: Duration,
        /// Its code.
        code: u8,
        /// Its payload length.
        len: u64,
    },
    /// From here on this direction's bytes did not frame; they were relayed, not
    /// recorded.
    Unframed {
        /// Which direction.
        direction: Direction,
        /// When, since the recording started.
        at: Duration,
        /// Why (for people).
        reason: String,
    },
    /// Both directions closed.
    End {
        /// When, since the recording started.
        at: Duration,
    },
}

impl RecordingEntry {
    /// When the entry was recorded (`None` for [`RecordingEntry::Negotiated`]).
    pub fn at(&self) -> Option<Duration> {
        match self {
            RecordingEntry::Packet(p) => Some(p.at),
            RecordingEntry::Oversized { at, .. }
            | RecordingEntry::Unframed { at, .. }
            | RecordingEntry::End { at } => Some(*at),
            RecordingEntry::Negotiated(_) => None,
        }
    }
}

/// A whole recording: its header and entries. See the [module documentation](self)
/// for the text form ([`Recording::parse`], and `Display` to write it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Recording {
    /// The MTA's endpoint (its address as the proxy saw it, `unix` for an unnamed
    /// Unix socket peer).
    pub mta: String,
    /// The milter's endpoint (the socket spec the proxy connected to).
    pub milter: String,
    /// When the recording started, since 1970-01-01 UTC.
    pub started: Duration,
    /// The entries in order; entry `n` is on line `n + 2`.
    pub entries: Vec<RecordingEntry>,
}

impl Recording {
    /// Parses the text form.
    pub fn parse(text: &str) -> Result<Recording, RecordingError> {
        let mut lines = text.split_inclusive('\n').enumerate();
        let err = |line: usize, kind| RecordingError { line, kind };
        let Some((_, first)) = lines.next() else {
            return Err(err(1, RecordingErrorKind::Empty));
        };
        let first = strip_line_end(first).ok_or(err(1, RecordingErrorKind::NoLineEnd))?;
        let mut rec = parse_header(first).map_err(|kind| err(1, kind))?;
        let mut last = Duration::ZERO;
        let mut ended = false;
        for (i, raw) in lines {
            let n = i + 1;
            let line = strip_line_end(raw).ok_or(err(n, RecordingErrorKind::NoLineEnd))?;
            if ended {
                return Err(err(n, RecordingErrorKind::AfterEnd));
            }
            let entry = parse_entry(line).map_err(|kind| err(n, kind))?;
            if let Some(at) = entry.at() {
                if at < last {
                    return Err(err(n, RecordingErrorKind::TimeGoesBack));
                }
                last = at;
            }
            ended = matches!(entry, RecordingEntry::End { .. });
            rec.entries.push(entry);
        }
        Ok(rec)
    }

    /// The packets, both ways, in order.
    pub fn packets(&self) -> impl Iterator<Item = &RecordedPacket> + '_ {
        self.entries.iter().filter_map(|e| match e {
            RecordingEntry::Packet(p) => Some(p),
            _ => None,
        })
    }

    /// The negotiation answer stated in the recording, if any.
    pub fn negotiated(&self) -> Option<NegotiatedFlags> {
        self.entries.iter().find_map(|e| match e {
            RecordingEntry::Negotiated(n) => Some(*n),
            _ => None,
        })
    }

    /// Whether the recording ends with `end` (both directions closed).
    pub fn is_complete(&self) -> bool {
        matches!(self.entries.last(), Some(RecordingEntry::End { .. }))
    }
}

impl fmt::Display for Recording {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        write_header(&mut s, &self.mta, &self.milter, self.started);
        for e in &self.entries {
            write_entry(&mut s, e);
        }
        f.write_str(&s)
    }
}

/// Writes a recording as it happens: the header at once, then each entry as one
/// line, flushed, so that a crash loses at most the entry being written.
#[derive(Debug)]
pub struct RecordingWriter<W: Write> {
    out: W,
    start: Instant,
    last: Duration,
    line: String,
}

impl<W: Write> RecordingWriter<W> {
    /// Writes the header (started now) and returns the writer.
    pub fn new(mut out: W, mta: &str, milter: &str) -> io::Result<RecordingWriter<W>> {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut line = String::new();
        write_header(&mut line, mta, milter, started);
        out.write_all(line.as_bytes())?;
        out.flush()?;
        Ok(RecordingWriter {
            out,
            start: Instant::now(),
            last: Duration::ZERO,
            line,
        })
    }

    /// Time since the header was written, truncated to microseconds and never
    /// less than the time of the previous entry.
    pub fn elapsed(&mut self) -> Duration {
        let e = self.start.elapsed();
        let e = Duration::new(e.as_secs(), e.subsec_micros() * 1000).max(self.last);
        self.last = e;
        e
    }

    /// Writes one entry and flushes.
    pub fn entry(&mut self, entry: &RecordingEntry) -> io::Result<()> {
        self.line.clear();
        write_entry(&mut self.line, entry);
        self.out.write_all(self.line.as_bytes())?;
        self.out.flush()
    }
}

/// A recording that does not parse: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingError {
    /// The line (from 1).
    pub line: usize,
    /// What is wrong with it.
    pub kind: RecordingErrorKind,
}

impl fmt::Display for RecordingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "recording line {}: {}", self.line, self.kind)
    }
}

impl std::error::Error for RecordingError {}

/// What is wrong with a line of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordingErrorKind {
    /// The text is empty.
    Empty,
    /// A line does not end in `\n` (the file was cut short).
    NoLineEnd,
    /// The first line does not start with `milter-recording`.
    NotARecording,
    /// The format version is not one this library reads.
    UnsupportedVersion(String),
    /// The header lacks a field or has a malformed one.
    BadHeader(String),
    /// The line starts with no known entry kind.
    UnknownEntry(String),
    /// A field is missing or malformed.
    BadField {
        /// Which field.
        field: &'static str,
        /// The text found.
        found: String,
    },
    /// A backslash escape that is not one of `\\ \0 \r \n \t \xHH`.
    BadEscape(String),
    /// A timestamp smaller than the previous one.
    TimeGoesBack,
    /// A line after `end`.
    AfterEnd,
}

impl fmt::Display for RecordingErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordingErrorKind::Empty => f.write_str("the recording is empty"),
            RecordingErrorKind::NoLineEnd => {
                f.write_str("the line has no line end (was the file cut short?)")
            }
            RecordingErrorKind::NotARecording => {
                write!(f, "not a recording: the first word is not {MAGIC:?}")
            }
            RecordingErrorKind::UnsupportedVersion(v) => write!(
                f,
                "format version {v:?} is not supported (this library reads {RECORDING_FORMAT_VERSION})"
            ),
            RecordingErrorKind::BadHeader(why) => write!(f, "bad header: {why}"),
            RecordingErrorKind::UnknownEntry(w) => write!(
                f,
                "unknown entry {w:?} (expected >, <, >!, <!, >?, <?, negotiated or end)"
            ),
            RecordingErrorKind::BadField { field, found } => {
                write!(f, "bad {field}: {found:?}")
            }
            RecordingErrorKind::BadEscape(e) => write!(
                f,
                "bad escape {e:?} (expected \\\\, \\0, \\r, \\n, \\t or \\xHH)"
            ),
            RecordingErrorKind::TimeGoesBack => {
                f.write_str("the timestamp is smaller than the previous one")
            }
            RecordingErrorKind::AfterEnd => f.write_str("an entry after `end`"),
        }
    }
}

// ----- writing -----

fn write_time(out: &mut String, t: Duration) {
    let _ = write!(out, "{}.{:06}", t.as_secs(), t.subsec_micros());
}

/// Appends `bytes` escaped; `space` says whether a space is written as `\x20`.
fn escape_into(out: &mut String, bytes: &[u8], space: bool) {
    for (i, &b) in bytes.iter().enumerate() {
        let last = i + 1 == bytes.len();
        match b {
            b'\\' => out.push_str("\\\\"),
            0 => out.push_str("\\0"),
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b' ' if space || last => out.push_str("\\x20"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
}

fn write_header(out: &mut String, mta: &str, milter: &str, started: Duration) {
    let _ = write!(out, "{MAGIC} {RECORDING_FORMAT_VERSION} mta=");
    escape_into(out, mta.as_bytes(), true);
    out.push_str(" milter=");
    escape_into(out, milter.as_bytes(), true);
    out.push_str(" started=");
    write_time(out, started);
    out.push('\n');
}

fn write_entry(out: &mut String, entry: &RecordingEntry) {
    match entry {
        RecordingEntry::Packet(p) => {
            out.push(p.direction.sign());
            out.push(' ');
            write_time(out, p.at);
            out.push(' ');
            escape_into(out, &[p.code], true);
            if !p.payload.is_empty() {
                out.push(' ');
                escape_into(out, &p.payload, false);
            }
        }
        RecordingEntry::Negotiated(n) => {
            let _ = write!(
                out,
                "negotiated version={} actions=0x{:08x} protocol=0x{:08x}",
                n.version,
                n.actions.bits(),
                n.protocol.bits()
            );
        }
        RecordingEntry::Oversized {
            direction,
            at,
            code,
            len,
        } => {
            out.push(direction.sign());
            out.push_str("! ");
            write_time(out, *at);
            out.push(' ');
            escape_into(out, &[*code], true);
            let _ = write!(out, " {len}");
        }
        RecordingEntry::Unframed {
            direction,
            at,
            reason,
        } => {
            out.push(direction.sign());
            out.push_str("? ");
            write_time(out, *at);
            if !reason.is_empty() {
                out.push(' ');
                escape_into(out, reason.as_bytes(), false);
            }
        }
        RecordingEntry::End { at } => {
            out.push_str("end ");
            write_time(out, *at);
        }
    }
    out.push('\n');
}

// ----- parsing -----

fn strip_line_end(line: &str) -> Option<&str> {
    line.strip_suffix('\n')
}

fn bad(field: &'static str, found: &str) -> RecordingErrorKind {
    RecordingErrorKind::BadField {
        field,
        found: found.to_owned(),
    }
}

fn unescape(text: &str) -> Result<Vec<u8>, RecordingErrorKind> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c != b'\\' {
            if !(0x20..=0x7e).contains(&c) {
                return Err(bad(
                    "byte (only printable ASCII is written raw)",
                    &text[i..],
                ));
            }
            out.push(c);
            i += 1;
            continue;
        }
        let esc = |len: usize| {
            let end = (i + len).min(b.len());
            RecordingErrorKind::BadEscape(String::from_utf8_lossy(&b[i..end]).into_owned())
        };
        match b.get(i + 1) {
            Some(b'\\') => out.push(b'\\'),
            Some(b'0') => out.push(0),
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'x') => {
                let hex = b.get(i + 2..i + 4).ok_or_else(|| esc(4))?;
                let hex = std::str::from_utf8(hex).map_err(|_| esc(4))?;
                if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                    return Err(esc(4));
                }
                out.push(u8::from_str_radix(hex, 16).map_err(|_| esc(4))?);
                i += 4;
                continue;
            }
            _ => return Err(esc(2)),
        }
        i += 2;
    }
    Ok(out)
}

fn parse_time(field: &'static str, text: &str) -> Result<Duration, RecordingErrorKind> {
    let (secs, frac) = text.split_once('.').ok_or_else(|| bad(field, text))?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(secs) || frac.len() != 6 || !digits(frac) {
        return Err(bad(field, text));
    }
    let secs: u64 = secs.parse().map_err(|_| bad(field, text))?;
    let micros: u32 = frac.parse().map_err(|_| bad(field, text))?;
    Ok(Duration::new(secs, micros * 1000))
}

fn parse_code(text: &str) -> Result<u8, RecordingErrorKind> {
    match unescape(text)?.as_slice() {
        [c] => Ok(*c),
        _ => Err(bad("code (one byte)", text)),
    }
}

fn parse_header(line: &str) -> Result<Recording, RecordingErrorKind> {
    let mut words = line.split(' ');
    if words.next() != Some(MAGIC) {
        return Err(RecordingErrorKind::NotARecording);
    }
    let version = words.next().unwrap_or("");
    if version != RECORDING_FORMAT_VERSION.to_string() {
        return Err(RecordingErrorKind::UnsupportedVersion(version.into()));
    }
    let mut field = |key: &str| -> Result<String, RecordingErrorKind> {
        let w = words.next().unwrap_or("");
        let v = w
            .strip_prefix(key)
            .and_then(|r| r.strip_prefix('='))
            .ok_or_else(|| {
                RecordingErrorKind::BadHeader(format!("expected {key}=…, found {w:?}"))
            })?;
        Ok(v.to_owned())
    };
    let text = |v: String| -> Result<String, RecordingErrorKind> {
        String::from_utf8(unescape(&v)?)
            .map_err(|_| RecordingErrorKind::BadHeader(format!("endpoint {v:?} is not UTF-8")))
    };
    let mta = text(field("mta")?)?;
    let milter = text(field("milter")?)?;
    let started = parse_time("start time", &field("started")?)?;
    if let Some(extra) = words.next() {
        return Err(RecordingErrorKind::BadHeader(format!(
            "unexpected {extra:?} after the start time"
        )));
    }
    Ok(Recording {
        mta,
        milter,
        started,
        entries: Vec::new(),
    })
}

fn parse_entry(line: &str) -> Result<RecordingEntry, RecordingErrorKind> {
    let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
    let direction = match kind.as_bytes().first() {
        Some(b'>') => Some(Direction::ToMilter),
        Some(b'<') => Some(Direction::ToMta),
        _ => None,
    };
    match (direction, kind.get(1..)) {
        (Some(direction), Some("")) => {
            let mut parts = rest.splitn(3, ' ');
            let at = parse_time("timestamp", parts.next().unwrap_or(""))?;
            let code = parse_code(parts.next().unwrap_or(""))?;
            let payload = match parts.next() {
                None => Vec::new(),
                Some("") => return Err(bad("payload (empty after a space)", "")),
                Some(p) => unescape(p)?,
            };
            Ok(RecordingEntry::Packet(RecordedPacket {
                direction,
                at,
                code,
                payload,
            }))
        }
        (Some(direction), Some("!")) => {
            let mut parts = rest.split(' ');
            let at = parse_time("timestamp", parts.next().unwrap_or(""))?;
            let code = parse_code(parts.next().unwrap_or(""))?;
            let len_text = parts.next().unwrap_or("");
            let len = len_text
                .parse()
                .ok()
                .filter(|_| len_text.bytes().all(|c| c.is_ascii_digit()))
                .ok_or_else(|| bad("length", len_text))?;
            if let Some(extra) = parts.next() {
                return Err(bad("end of line", extra));
            }
            Ok(RecordingEntry::Oversized {
                direction,
                at,
                code,
                len,
            })
        }
        (Some(direction), Some("?")) => {
            let (at, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            let at = parse_time("timestamp", at)?;
            let reason =
                String::from_utf8(unescape(reason)?).map_err(|_| bad("reason (UTF-8)", reason))?;
            Ok(RecordingEntry::Unframed {
                direction,
                at,
                reason,
            })
        }
        _ if kind == "end" => Ok(RecordingEntry::End {
            at: parse_time("timestamp", rest)?,
        }),
        _ if kind == "negotiated" => parse_negotiated(rest),
        _ => Err(RecordingErrorKind::UnknownEntry(kind.into())),
    }
}

fn parse_negotiated(rest: &str) -> Result<RecordingEntry, RecordingErrorKind> {
    let mut words = rest.split(' ');
    let mut field = |key: &'static str| -> Result<&str, RecordingErrorKind> {
        let w = words.next().unwrap_or("");
        w.strip_prefix(key)
            .and_then(|r| r.strip_prefix('='))
            .ok_or_else(|| bad(key, w))
    };
    let version_text = field("version")?;
    let version = version_text
        .parse()
        .ok()
        .filter(|_| version_text.bytes().all(|c| c.is_ascii_digit()))
        .ok_or_else(|| bad("version", version_text))?;
    let hex = |key: &'static str, v: &str| -> Result<u32, RecordingErrorKind> {
        let h = v
            .strip_prefix("0x")
            .filter(|h| h.len() == 8)
            .ok_or_else(|| bad(key, v))?;
        if !h.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad(key, v));
        }
        u32::from_str_radix(h, 16).map_err(|_| bad(key, v))
    };
    let actions = hex("actions", field("actions")?)?;
    let protocol = hex("protocol", field("protocol")?)?;
    if let Some(extra) = words.next() {
        return Err(bad("end of line", extra));
    }
    Ok(RecordingEntry::Negotiated(NegotiatedFlags {
        version,
        actions: Actions::from_bits_retain(actions),
        protocol: ProtocolOpts::from_bits_retain(protocol),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEAD: &str =
        "milter-recording 1 mta=127.0.0.1:5 milter=inet:7@127.0.0.1 started=1.000000\n";

    fn err(text: &str) -> RecordingError {
        Recording::parse(text).unwrap_err()
    }

    #[test]
    fn escapes_nul_controls_backslash_and_a_trailing_space() {
        let mut s = String::new();
        escape_into(&mut s, b"a b\0\r\n\t\\\xff ", false);
        assert_eq!(s, "a b\\0\\r\\n\\t\\\\\\xff\\x20");
        assert_eq!(unescape(&s).unwrap(), b"a b\0\r\n\t\\\xff ");
    }

    #[test]
    fn a_packet_with_spaces_in_its_payload_keeps_them() {
        let text = format!("{HEAD}> 0.000001 L Subject\\0hello world\\0\n");
        let rec = Recording::parse(&text).unwrap();
        let p = rec.packets().next().unwrap();
        assert_eq!(p.payload, b"Subject\0hello world\0");
        assert_eq!(rec.to_string(), text);
    }

    #[test]
    fn every_entry_kind_round_trips() {
        let text = format!(
            "{HEAD}> 0.000000 O \\0\\0\\0\\x06\n< 0.000010 O \\0\\0\\0\\x06\\0\\0\\0\\x01\\0\\0\\0\\0\n\
             negotiated version=6 actions=0x00000001 protocol=0x00000000\n\
             >! 0.000020 B 2000000\n<? 0.000030 zero length: not milter protocol\nend 0.000040\n"
        );
        let rec = Recording::parse(&text).unwrap();
        assert_eq!(rec.entries.len(), 6);
        assert!(rec.is_complete());
        assert_eq!(
            rec.negotiated(),
            Some(NegotiatedFlags {
                version: 6,
                actions: Actions::ADD_HEADER,
                protocol: ProtocolOpts::empty()
            })
        );
        assert_eq!(rec.to_string(), text);
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(err("").kind, RecordingErrorKind::Empty);
        assert_eq!(err("hello\n").kind, RecordingErrorKind::NotARecording);
        let e = err("milter-recording 2 mta=a milter=b started=0.000000\n");
        assert_eq!(e.kind, RecordingErrorKind::UnsupportedVersion("2".into()));
        let e = err(&format!("{HEAD}> 0.000001 c\n> 0.1 c\n"));
        assert_eq!(e.line, 3);
        assert!(matches!(
            e.kind,
            RecordingErrorKind::BadField {
                field: "timestamp",
                ..
            }
        ));
        let e = err(&format!("{HEAD}> 0.000002 c\n< 0.000001 c\n"));
        assert_eq!((e.line, e.kind), (3, RecordingErrorKind::TimeGoesBack));
        let e = err(&format!("{HEAD}> 0.000001 c \\q\n"));
        assert_eq!(
            (e.line, e.kind),
            (2, RecordingErrorKind::BadEscape("\\q".into()))
        );
        // A backslash before a character of more than one byte.
        let e = err(&format!("{HEAD}> 0.000001 c \\é\n"));
        assert_eq!(
            (e.line, e.kind),
            (2, RecordingErrorKind::BadEscape("\\\u{fffd}".into()))
        );
        let e = err(&format!("{HEAD}> 0.000001 c \\x4\n"));
        assert!(matches!(e.kind, RecordingErrorKind::BadEscape(_)));
        let e = err(&format!("{HEAD}end 0.000001\n> 0.000002 c\n"));
        assert_eq!((e.line, e.kind), (3, RecordingErrorKind::AfterEnd));
        let e = err(&format!("{HEAD}# note\n"));
        assert!(matches!(e.kind, RecordingErrorKind::UnknownEntry(_)));
        let e = err(&format!("{HEAD}> 0.000001 cc\n"));
        assert!(matches!(e.kind, RecordingErrorKind::BadField { .. }));
        let e = err(&format!("{HEAD}> 0.000001 c"));
        assert_eq!((e.line, e.kind), (2, RecordingErrorKind::NoLineEnd));
        let e = err(&format!(
            "{HEAD}negotiated version=6 actions=0x1 protocol=0x00000000\n"
        ));
        assert!(matches!(
            e.kind,
            RecordingErrorKind::BadField {
                field: "actions",
                ..
            }
        ));
        assert_eq!(e.to_string(), "recording line 2: bad actions: \"0x1\"");
    }

    #[test]
    fn the_writer_writes_what_parse_reads() {
        let mut out = Vec::new();
        let mut w = RecordingWriter::new(&mut out, "unix", "unix:/run/m sock").unwrap();
        let at = w.elapsed();
        w.entry(&RecordingEntry::Packet(RecordedPacket {
            direction: Direction::ToMilter,
            at,
            code: b'Q',
            payload: Vec::new(),
        }))
        .unwrap();
        let at = w.elapsed();
        w.entry(&RecordingEntry::End { at }).unwrap();
        let rec = Recording::parse(std::str::from_utf8(&out).unwrap()).unwrap();
        assert_eq!(rec.milter, "unix:/run/m sock");
        assert_eq!(rec.entries.len(), 2);
        assert!(rec.is_complete());
    }

    fn direction() -> impl Strategy<Value = Direction> {
        prop_oneof![Just(Direction::ToMilter), Just(Direction::ToMta)]
    }

    fn entry() -> impl Strategy<Value = RecordingEntry> {
        prop_oneof![
            6 => (direction(), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300))
                .prop_map(|(direction, code, payload)| RecordingEntry::Packet(RecordedPacket {
                    direction,
                    at: Duration::ZERO,
                    code,
                    payload,
                })),
            1 => (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(v, a, p)| {
                RecordingEntry::Negotiated(NegotiatedFlags {
                    version: v,
                    actions: Actions::from_bits_retain(a),
                    protocol: ProtocolOpts::from_bits_retain(p),
                })
            }),
            1 => (direction(), any::<u8>(), any::<u64>()).prop_map(|(direction, code, len)| {
                RecordingEntry::Oversized { direction, at: Duration::ZERO, code, len }
            }),
            1 => (direction(), "\\PC{0,40}").prop_map(|(direction, reason)| {
                RecordingEntry::Unframed { direction, at: Duration::ZERO, reason }
            }),
        ]
    }

    fn set_at(e: &mut RecordingEntry, t: Duration) {
        match e {
            RecordingEntry::Packet(p) => p.at = t,
            RecordingEntry::Oversized { at, .. }
            | RecordingEntry::Unframed { at, .. }
            | RecordingEntry::End { at } => *at = t,
            RecordingEntry::Negotiated(_) => {}
        }
    }

    proptest! {
        /// Whatever the text, parsing returns (an error or a recording), never
        /// panics; lines are built from the format's own pieces so that most get
        /// past the first checks.
        #[test]
        fn parsing_any_text_never_panics(
            lines in proptest::collection::vec(
                prop_oneof![
                    Just("milter-recording 1 mta=a milter=b started=0.000000".to_owned()),
                    r"(>|<|>!|<!|>\?|end|negotiated)? ?[0-9.]{0,9} ?[\\xé0a-f ]{0,6}\PC{0,8}",
                    r"\PC{0,20}",
                ],
                0..8,
            ),
            end in any::<bool>(),
        ) {
            let mut text = lines.join("\n");
            if end {
                text.push('\n');
            }
            let _ = Recording::parse(&text);
        }

        #[test]
        fn arbitrary_recordings_round_trip(
            mut entries in proptest::collection::vec(entry(), 0..40),
            steps in proptest::collection::vec(0u64..5_000_000, 40),
            mta in "\\PC{0,30}",
            milter in "\\PC{0,30}",
            started in 0u64..4_000_000_000_000_000,
            end in any::<bool>(),
        ) {
            let mut t = 0u64;
            for (e, step) in entries.iter_mut().zip(&steps) {
                t += step;
                set_at(e, Duration::from_micros(t));
            }
            if end {
                entries.push(RecordingEntry::End { at: Duration::from_micros(t) });
            }
            let rec = Recording {
                mta,
                milter,
                started: Duration::from_micros(started),
                entries,
            };
            let text = rec.to_string();
            prop_assert!(!text.lines().any(|l| l.ends_with(' ')));
            prop_assert_eq!(Recording::parse(&text), Ok(rec));
        }
    }
}
