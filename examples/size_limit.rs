//! `size-limit`: refuses messages whose body is too big, and messages that carry
//! an attachment of a forbidden type (`.exe`, `.scr`, `.js`, ...).
//!
//! - Size: the body bytes are counted as the MTA sends them; above `--max-bytes N`
//!   (default 10 MiB; `K`, `M`, `G` suffixes mean KiB, MiB, GiB) the message is
//!   refused with `552 5.3.4 Message body exceeds the limit of N bytes`.
//! - Attachments: the MIME part headers in the body are scanned for a file name,
//!   from `Content-Disposition: ...; filename=` or `Content-Type: ...; name=`
//!   (quoted or not, folded or not, RFC 2231 `filename*=` with or without
//!   continuations, RFC 2047 encoded words), also in nested multiparts and in
//!   attached messages, and in the message's own headers for a single-part
//!   message. A name ending in a forbidden extension (case ignored, trailing dots
//!   and spaces too, as Windows does) refuses the message with
//!   `550 5.7.1 Attachments of type .exe are not accepted`. `--forbid exe,scr,...`
//!   replaces the default list.
//!
//! What it shows:
//! - per-message scanning state (`#[milter(per_message)]`) that survives chunk
//!   boundaries: the MTA cuts the body into 65535-byte chunks anywhere, also
//!   inside a header line or between CR and LF, so the scanner carries the
//!   unfinished line (bounded) over to the next chunk;
//! - `Status::Skip` (negotiated with `options(skip)`): once the milter has
//!   decided, it tells the MTA to stop sending the body, and gives its verdict at
//!   end of message;
//! - a header handler that returns nothing, so the MTA does not wait for a reply
//!   to each header; every stage before DATA is negotiated away.
//!
//! Run: `cargo run -p milter-examples --bin size-limit -- inet:7373@127.0.0.1`
//! (`--max-bytes 25M`, `--forbid exe,js`; `--shadow` to log what it would refuse
//! without refusing anything).
//!
//! Postfix (`main.cf`): `smtpd_milters = inet:127.0.0.1:7373`
//! Sendmail (`.mc`): `INPUT_MAIL_FILTER(`size-limit', `S=inet:7373@127.0.0.1, F=T')`

use milter_blocking::{handlers, Context, EomContext, HandlerResult, Header, Milter, Status};
use std::sync::Arc;

/// The default limit on the body: 10 MiB.
const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// Extensions refused by default: programs and scripts Windows runs when opened,
/// and the disk images and shortcuts used to smuggle them in.
const DEFAULT_FORBIDDEN: &[&str] = &[
    "exe", "scr", "com", "pif", "bat", "cmd", "cpl", "msi", "msp", "js", "jse", "vbs", "vbe",
    "wsf", "wsh", "hta", "ps1", "jar", "lnk", "reg", "iso", "img",
];

/// The longest body line kept for scanning; the rest of a longer line is dropped
/// (RFC 5322 allows 998 bytes; boundaries are at most 70).
const MAX_LINE: usize = 4096;

/// The longest MIME part header kept, folds included.
const MAX_HEADER: usize = 16 * 1024;

/// The most multipart boundaries tracked in one message (nesting depth, in
/// practice).
const MAX_BOUNDARIES: usize = 32;

#[derive(Debug)]
struct Config {
    max_bytes: u64,
    /// Lower case, without the dot.
    forbidden: Vec<String>,
}

impl Config {
    /// The forbidden extension `filename` ends in, if any.
    fn forbidden_extension(&self, filename: &[u8]) -> Option<&str> {
        let end = filename
            .iter()
            .rposition(|b| !matches!(b, b'.' | b' ' | b'\t' | b'"'))
            .map_or(0, |i| i + 1);
        let name = &filename[..end];
        let dot = name.iter().rposition(|&b| b == b'.')?;
        let extension = &name[dot + 1..];
        self.forbidden
            .iter()
            .find(|f| extension.eq_ignore_ascii_case(f.as_bytes()))
            .map(String::as_str)
    }
}

/// Why a message is refused.
#[derive(Debug)]
enum Finding {
    TooBig,
    Forbidden { extension: String, filename: String },
}

/// Everything about the message in progress.
#[derive(Debug, Default)]
struct Scan {
    body_bytes: u64,
    finding: Option<Finding>,
    mime: MimeScanner,
    /// File names found and not yet checked (reused buffer).
    names: Vec<Vec<u8>>,
}

#[derive(Milter)]
#[milter(options(skip))]
struct SizeLimit {
    /// Shared by all connections.
    config: Arc<Config>,
    #[milter(per_message)]
    msg: Scan,
}

impl SizeLimit {
    /// Checks the file names the scanner found; the first forbidden one decides.
    fn check_names(&mut self) {
        for name in self.msg.names.drain(..) {
            if self.msg.finding.is_some() {
                continue;
            }
            if let Some(extension) = self.config.forbidden_extension(&name) {
                self.msg.finding = Some(Finding::Forbidden {
                    extension: extension.to_string(),
                    filename: String::from_utf8_lossy(&name).into_owned(),
                });
            }
        }
    }
}

#[handlers]
impl Milter for SizeLimit {
    /// Returns nothing: the MTA need not wait for a reply to each header.
    fn header(&mut self, _ctx: &mut Context<'_>, h: &Header<'_>) {
        if self.msg.finding.is_none() {
            self.msg
                .mime
                .message_header(h.name, h.value, &mut self.msg.names);
            self.check_names();
        }
    }

    fn body(&mut self, _ctx: &mut Context<'_>, chunk: &[u8]) -> Status {
        if self.msg.finding.is_some() {
            return Status::Skip;
        }
        self.msg.body_bytes += chunk.len() as u64;
        if self.msg.body_bytes > self.config.max_bytes {
            self.msg.finding = Some(Finding::TooBig);
            return Status::Skip;
        }
        self.msg.mime.body(chunk, &mut self.msg.names);
        self.check_names();
        if self.msg.finding.is_some() {
            // Decided: the rest of the body cannot change the verdict.
            Status::Skip
        } else {
            Status::Continue
        }
    }

    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        let queue_id = ctx.queue_id().unwrap_or("unknown");
        let Some(finding) = &self.msg.finding else {
            return Ok(Status::Continue);
        };
        Ok(match finding {
            Finding::TooBig => {
                log::info!(
                    "{}: queue id {queue_id}: body over {} bytes: refused",
                    ctx.connection(),
                    self.config.max_bytes
                );
                Status::reply(
                    552,
                    Some("5.3.4"),
                    &format!(
                        "Message body exceeds the limit of {} bytes",
                        self.config.max_bytes
                    ),
                )?
            }
            Finding::Forbidden {
                extension,
                filename,
            } => {
                log::info!(
                    "{}: queue id {queue_id}: attachment {filename:?}: .{extension} is forbidden: refused",
                    ctx.connection()
                );
                // The reply names the extension from our list, never the sender's
                // file name, which could hold anything.
                Status::reply(
                    550,
                    Some("5.7.1"),
                    &format!("Attachments of type .{extension} are not accepted"),
                )?
            }
        })
    }
}

/// Finds the file names of MIME parts, fed the message's headers and then its
/// body chunk by chunk.
#[derive(Debug, Default)]
struct MimeScanner {
    /// `--boundary` of every multipart seen so far.
    delimiters: Vec<Vec<u8>>,
    /// Reading a part's header block (after a delimiter line).
    in_headers: bool,
    /// The part being read is an attached message: its own header block follows
    /// the part's.
    embedded: bool,
    /// The body line not finished in the last chunk.
    line: Vec<u8>,
    /// The part header being read, unfolded.
    header: Vec<u8>,
}

impl MimeScanner {
    /// One of the message's own headers (value as the MTA sends it: folds as LF
    /// and white space).
    fn message_header(&mut self, name: &[u8], value: &[u8], names: &mut Vec<Vec<u8>>) {
        let mut h = Vec::with_capacity(name.len() + value.len() + 1);
        h.extend_from_slice(name);
        h.push(b':');
        h.extend(value.iter().filter(|&&b| b != b'\n' && b != b'\r'));
        self.header_done(&h, names);
        if self.embedded {
            // A message/rfc822 message: the body starts with its header block.
            self.embedded = false;
            self.in_headers = true;
        }
    }

    fn body(&mut self, chunk: &[u8], names: &mut Vec<Vec<u8>>) {
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.keep(&rest[..i]);
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.line_done(&line, names);
            line.clear();
            self.line = line;
            rest = &rest[i + 1..];
        }
        self.keep(rest);
    }

    /// Appends to the unfinished line, up to [`MAX_LINE`].
    fn keep(&mut self, part: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.line.len());
        self.line.extend_from_slice(&part[..part.len().min(room)]);
    }

    fn line_done(&mut self, line: &[u8], names: &mut Vec<Vec<u8>>) {
        if let Some(closing) = self.delimiter(line) {
            self.header_end(names);
            self.in_headers = !closing;
            self.embedded = false;
            return;
        }
        if !self.in_headers {
            return;
        }
        match line.first() {
            None => {
                self.header_end(names);
                // After an attached message's part headers come its own headers.
                self.in_headers = std::mem::take(&mut self.embedded);
            }
            Some(b' ' | b'\t') => {
                let room = MAX_HEADER.saturating_sub(self.header.len());
                self.header.extend_from_slice(&line[..line.len().min(room)]);
            }
            Some(_) => {
                self.header_end(names);
                self.header
                    .extend_from_slice(&line[..line.len().min(MAX_HEADER)]);
            }
        }
    }

    /// Whether `line` is a delimiter of a known multipart, and if so whether it
    /// is the closing one (`--boundary--`).
    fn delimiter(&self, line: &[u8]) -> Option<bool> {
        if !line.starts_with(b"--") {
            return None;
        }
        self.delimiters.iter().find_map(|d| {
            let rest = line.strip_prefix(d.as_slice())?;
            let (closing, padding) = match rest.strip_prefix(b"--") {
                Some(p) => (true, p),
                None => (false, rest),
            };
            padding
                .iter()
                .all(|b| matches!(b, b' ' | b'\t'))
                .then_some(closing)
        })
    }

    fn header_end(&mut self, names: &mut Vec<Vec<u8>>) {
        if !self.header.is_empty() {
            let h = std::mem::take(&mut self.header);
            self.header_done(&h, names);
            self.header = h;
            self.header.clear();
        }
    }

    /// One complete, unfolded header `name: value`.
    fn header_done(&mut self, h: &[u8], names: &mut Vec<Vec<u8>>) {
        let Some(colon) = h.iter().position(|&b| b == b':') else {
            return;
        };
        let name = h[..colon].trim_ascii();
        let (mime_type, params) = parse_params(&h[colon + 1..]);
        if name.eq_ignore_ascii_case(b"Content-Type") {
            if mime_type.starts_with(b"multipart/") {
                if let Some(b) = param(&params, b"boundary").filter(|b| !b.is_empty()) {
                    if self.delimiters.len() < MAX_BOUNDARIES {
                        self.delimiters.push([b"--".as_slice(), b].concat());
                    }
                }
            }
            self.embedded = mime_type == b"message/rfc822";
            names.extend(file_name(&params, b"name"));
        } else if name.eq_ignore_ascii_case(b"Content-Disposition") {
            names.extend(file_name(&params, b"filename"));
        }
    }
}

/// MIME parameters: lower-case names and unquoted values.
type Params = Vec<(Vec<u8>, Vec<u8>)>;

/// Splits `type/subtype; a=1; b="x; y"` into the lower-case type and the
/// parameters (lower-case names, unquoted values).
fn parse_params(value: &[u8]) -> (Vec<u8>, Params) {
    let mut items = Vec::new();
    let mut item = Vec::new();
    let (mut quoted, mut escaped) = (false, false);
    for &b in value {
        match b {
            _ if escaped => {
                item.push(b);
                escaped = false;
            }
            b'\\' if quoted => {
                item.push(b);
                escaped = true;
            }
            b'"' => {
                item.push(b);
                quoted = !quoted;
            }
            b';' if !quoted => items.push(std::mem::take(&mut item)),
            _ => item.push(b),
        }
    }
    items.push(item);
    let mut items = items.into_iter();
    let mime_type = items
        .next()
        .unwrap_or_default()
        .trim_ascii()
        .to_ascii_lowercase();
    let params = items
        .filter_map(|item| {
            let eq = item.iter().position(|&b| b == b'=')?;
            let name = item[..eq].trim_ascii().to_ascii_lowercase();
            Some((name, unquote(item[eq + 1..].trim_ascii())))
        })
        .collect();
    (mime_type, params)
}

/// The content of a quoted string (backslash escapes removed), or the token.
fn unquote(v: &[u8]) -> Vec<u8> {
    let Some(inner) = v.strip_prefix(b"\"") else {
        return v.to_vec();
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut escaped = false;
    for &b in inner {
        match b {
            _ if escaped => {
                out.push(b);
                escaped = false;
            }
            b'\\' => escaped = true,
            b'"' => break,
            _ => out.push(b),
        }
    }
    out
}

fn param<'a>(params: &'a Params, name: &[u8]) -> Option<&'a [u8]> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// The file names a parameter `base` gives, in every form: `base=` (RFC 2047
/// encoded words decoded), `base*=` (RFC 2231) and `base*0=`, `base*1*=`, ...
/// (RFC 2231 continuations).
fn file_name(params: &Params, base: &[u8]) -> Vec<Vec<u8>> {
    let mut names = Vec::new();
    let mut pieces: Vec<(u32, bool, &[u8])> = Vec::new();
    for (name, value) in params {
        let Some(rest) = name.strip_prefix(base) else {
            continue;
        };
        match rest {
            b"" => names.push(decode_words(value)),
            b"*" => names.push(decode_extended(value, true)),
            _ => {
                let Some(rest) = rest.strip_prefix(b"*") else {
                    continue;
                };
                let (digits, encoded) = match rest.strip_suffix(b"*") {
                    Some(d) => (d, true),
                    None => (rest, false),
                };
                let index = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse::<u32>().ok());
                if let Some(index) = index {
                    pieces.push((index, encoded, value));
                }
            }
        }
    }
    if !pieces.is_empty() {
        pieces.sort_by_key(|p| p.0);
        let mut joined = Vec::new();
        for (index, encoded, value) in pieces {
            if encoded {
                joined.extend(decode_extended(value, index == 0));
            } else {
                joined.extend_from_slice(value);
            }
        }
        names.push(joined);
    }
    names
}

/// An RFC 2231 value: `charset'language'percent-encoded` (the prefix only on the
/// first piece).
fn decode_extended(value: &[u8], with_charset: bool) -> Vec<u8> {
    let mut v = value;
    if with_charset {
        let quotes: Vec<usize> = v
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\'')
            .map(|(i, _)| i)
            .take(2)
            .collect();
        if let [_, second] = quotes[..] {
            v = &v[second + 1..];
        }
    }
    percent_decode(v, false)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `%XX` (or with `q_encoding`, `=XX` and `_` for space) decoded; anything
/// malformed is kept as it is.
fn percent_decode(v: &[u8], q_encoding: bool) -> Vec<u8> {
    let escape = if q_encoding { b'=' } else { b'%' };
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        let b = v[i];
        if b == escape && i + 2 < v.len() {
            if let (Some(h), Some(l)) = (hex(v[i + 1]), hex(v[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(if q_encoding && b == b'_' { b' ' } else { b });
        i += 1;
    }
    out
}

/// Base64 decoded, ignoring anything that is not in its alphabet.
fn base64_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in v {
        let d = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = acc << 6 | u32::from(d);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Text with RFC 2047 encoded words (`=?charset?B?...?=`, `=?charset?Q?...?=`)
/// decoded to their bytes (the charset is not converted: an extension is ASCII in
/// every charset mail uses for file names); white space between two encoded
/// words is dropped, as the RFC says.
fn decode_words(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut rest = v;
    let mut after_word = false;
    while !rest.is_empty() {
        if let Some((decoded, used)) = encoded_word(rest) {
            if after_word {
                // Only white space since the last word: drop it.
                let keep = out.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
                out.truncate(keep.map_or(0, |i| i + 1));
            }
            out.extend(decoded);
            rest = &rest[used..];
            after_word = true;
            continue;
        }
        let b = rest[0];
        if !matches!(b, b' ' | b'\t') {
            after_word = false;
        }
        out.push(b);
        rest = &rest[1..];
    }
    out
}

/// The encoded word at the start of `s`: its decoded bytes and its length.
fn encoded_word(s: &[u8]) -> Option<(Vec<u8>, usize)> {
    let body = s.strip_prefix(b"=?")?;
    let q1 = body.iter().position(|&b| b == b'?')?;
    let encoding = *body.get(q1 + 1)?;
    if body.get(q1 + 2) != Some(&b'?') {
        return None;
    }
    let text_start = q1 + 3;
    let text_len = body[text_start..].windows(2).position(|w| w == b"?=")?;
    let text = &body[text_start..text_start + text_len];
    let decoded = match encoding.to_ascii_uppercase() {
        b'B' => base64_decode(text),
        b'Q' => percent_decode(text, true),
        _ => return None,
    };
    Some((decoded, 2 + text_start + text_len + 2))
}

/// `10485760`, `512K`, `25M`, `1G` (binary multiples).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" | "KIB" => 10,
        "M" | "MIB" => 20,
        "G" | "GIB" => 30,
        _ => {
            return Err(format!(
                "bad size {s:?}: a number, optionally with K, M or G"
            ))
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("bad size {s:?}: a number, optionally with K, M or G"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

fn main() {
    let name = "size-limit";
    let usage = "[--shadow] [--max-bytes N[K|M|G]] [--forbid EXT,EXT,...] [SOCKET]";
    let command_line = milter_examples::CommandLine::from_env_or_exit(
        name,
        usage,
        "inet:7373@127.0.0.1",
        &["max-bytes", "forbid"],
    );
    let max_bytes = match command_line.value("max-bytes").map(parse_size) {
        None => DEFAULT_MAX_BYTES,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("{name}: --max-bytes: {e}\nusage: {name} {usage}");
            std::process::exit(2);
        }
    };
    let forbidden: Vec<String> = match command_line.value("forbid") {
        None => DEFAULT_FORBIDDEN.iter().map(|e| e.to_string()).collect(),
        Some(list) => list
            .split(',')
            .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
            .filter(|e| !e.is_empty())
            .collect(),
    };
    milter_examples::init_logging();
    log::info!(
        "refusing bodies over {max_bytes} bytes and attachments of type {}",
        forbidden
            .iter()
            .map(|e| format!(".{e}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let config = Arc::new(Config {
        max_bytes,
        forbidden,
    });
    milter_examples::run_with(name, &command_line, move || SizeLimit {
        config: Arc::clone(&config),
        msg: Scan::default(),
    });
}
