//! `size-limit`: refuses messages whose body is too big, and messages that carry
//! an attachment of a forbidden type (`.exe`, `.scr`, `.js`, ...).
//!
//! - Size: the body bytes are counted as the MTA sends them; above `--max-bytes N`
//!   (default 10 MiB; `K`, `M`, `G` suffixes mean KiB, MiB, GiB) the message is
//!   refused with `552 5.3.4 Message body exceeds the limit of N bytes`.
//! - Attachments: the MIME part headers in the body are scanned for a file name,
//!   from `Content-Disposition: ...; filename=` or `Content-Type: ...; name=`
//!   (quoted or not, folded or not, RFC 2231 `filename*=` with or without
//!   continuations, RFC 2047 encoded words: mail-parser decodes them all), also
//!   in nested multiparts and in attached messages, and in the message's own
//!   headers for a single-part message. A name ending in a forbidden extension (case ignored, trailing dots
//!   and spaces too, as Windows does) refuses the message with
//!   `550 5.7.1 Attachments of type .exe are not accepted`. `--forbid exe,scr,...`
//!   replaces the default list.
//!
//! What it shows:
//! - per-message scanning state (`#[milter(per_message)]`) that survives chunk
//!   boundaries: the MTA cuts the body into 65535-byte chunks anywhere, also
//!   inside a header line or between CR and LF, so the scanner carries the
//!   unfinished line (bounded) over to the next chunk;
//! - a streaming scanner that only finds where the part header blocks are, and
//!   hands each block to a MIME library (mail-parser) to read, so the body is
//!   never kept;
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

use clap::Parser;
use mail_parser::{HeaderName, MessageParser};
use milter_blocking::{handlers, Context, EomContext, HandlerResult, Header, Milter, Status};
use std::sync::Arc;

/// Extensions refused by default: programs and scripts Windows runs when opened,
/// and the disk images and shortcuts used to smuggle them in.
const DEFAULT_FORBIDDEN: &[&str] = &[
    "exe", "scr", "com", "pif", "bat", "cmd", "cpl", "msi", "msp", "js", "jse", "vbs", "vbe",
    "wsf", "wsh", "hta", "ps1", "jar", "lnk", "reg", "iso", "img",
];

/// The longest body line kept for scanning; the rest of a longer line is dropped
/// (RFC 5322 allows 998 bytes; boundaries are at most 70).
const MAX_LINE: usize = 4096;

/// The longest MIME part header block kept; lines past it are dropped.
const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// The most multipart boundaries tracked in one message (nesting depth, in
/// practice).
const MAX_BOUNDARIES: usize = 32;

#[derive(Debug)]
struct Config {
    max_bytes: u64,
    /// Lower case, without the dot.
    forbidden: Vec<String>,
    /// Reads Content-Type and Content-Disposition, skips every other header.
    parser: MessageParser,
}

impl Config {
    /// The forbidden extension `filename` ends in, if any.
    fn forbidden_extension(&self, filename: &str) -> Option<&str> {
        let name = filename.trim_end_matches(['.', ' ', '\t', '"']);
        let (_, extension) = name.rsplit_once('.')?;
        self.forbidden
            .iter()
            .find(|f| extension.eq_ignore_ascii_case(f))
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
    names: Vec<String>,
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
                    filename: name,
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
                .message_header(&self.config.parser, h.name, h.value, &mut self.msg.names);
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
        self.msg
            .mime
            .body(&self.config.parser, chunk, &mut self.msg.names);
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
/// body chunk by chunk. It only finds where the part header blocks are (the
/// delimiter lines of every multipart, the header block of an attached message);
/// mail-parser reads each block's Content-Type and Content-Disposition.
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
    /// The part header block being read: one unfolded header a line, CRLF ends.
    block: Vec<u8>,
}

impl MimeScanner {
    /// One of the message's own headers (value as the MTA sends it: folds as LF
    /// and white space).
    fn message_header(
        &mut self,
        parser: &MessageParser,
        name: &[u8],
        value: &[u8],
        names: &mut Vec<String>,
    ) {
        if !(name.eq_ignore_ascii_case(b"Content-Type")
            || name.eq_ignore_ascii_case(b"Content-Disposition"))
        {
            return;
        }
        let mut h = Vec::with_capacity(name.len() + value.len() + 8);
        h.extend_from_slice(name);
        h.extend_from_slice(b": ");
        // Unfolded (see `line_done`).
        h.extend(value.iter().filter(|&&b| b != b'\n' && b != b'\r'));
        h.extend_from_slice(b"\r\n");
        self.block_done(parser, &h, names);
        if self.embedded {
            // A message/rfc822 message: the body starts with its header block.
            self.embedded = false;
            self.in_headers = true;
        }
    }

    fn body(&mut self, parser: &MessageParser, chunk: &[u8], names: &mut Vec<String>) {
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.keep(&rest[..i]);
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.line_done(parser, &line, names);
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

    fn line_done(&mut self, parser: &MessageParser, line: &[u8], names: &mut Vec<String>) {
        if let Some(closing) = self.delimiter(line) {
            self.block_end(parser, names);
            self.in_headers = !closing;
            self.embedded = false;
            return;
        }
        if !self.in_headers {
            return;
        }
        if line.is_empty() {
            self.block_end(parser, names);
            // After an attached message's part headers come its own headers.
            self.in_headers = std::mem::take(&mut self.embedded);
        } else if self.block.len() + line.len() + 2 <= MAX_HEADER_BLOCK {
            if matches!(line[0], b' ' | b'\t') && self.block.ends_with(b"\r\n") {
                // Unfolded here: mail-parser 0.11 loses a parameter whose value
                // starts on a continuation line (`filename=` CRLF ` "a.exe"`).
                self.block.truncate(self.block.len() - 2);
            }
            self.block.extend_from_slice(line);
            self.block.extend_from_slice(b"\r\n");
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

    fn block_end(&mut self, parser: &MessageParser, names: &mut Vec<String>) {
        if !self.block.is_empty() {
            let block = std::mem::take(&mut self.block);
            self.block_done(parser, &block, names);
            self.block = block;
            self.block.clear();
        }
    }

    /// A complete header block: mail-parser decodes the parameters of its
    /// Content-Type (`name=`, the multipart boundary) and Content-Disposition
    /// (`filename=`) in every form, quoted or not, folded or not, RFC 2231
    /// (`filename*=`, continuations) and RFC 2047 encoded words.
    fn block_done(&mut self, parser: &MessageParser, block: &[u8], names: &mut Vec<String>) {
        let mut block = block.to_vec();
        block.extend_from_slice(b"\r\n");
        let Some(headers) = parser.parse_headers(&block) else {
            return;
        };
        for header in headers.headers() {
            let Some(value) = header.value().as_content_type() else {
                continue;
            };
            let file_name = match header.name {
                HeaderName::ContentType => {
                    let mime_type = (value.ctype(), value.subtype().unwrap_or_default());
                    if mime_type.0.eq_ignore_ascii_case("multipart") {
                        let boundary = value.attribute("boundary").filter(|b| !b.is_empty());
                        if let Some(b) = boundary {
                            if self.delimiters.len() < MAX_BOUNDARIES {
                                self.delimiters.push([b"--", b.as_bytes()].concat());
                            }
                        }
                    }
                    self.embedded = mime_type.0.eq_ignore_ascii_case("message")
                        && mime_type.1.eq_ignore_ascii_case("rfc822");
                    "name"
                }
                HeaderName::ContentDisposition => "filename",
                _ => continue,
            };
            let attributes = value.attributes().unwrap_or_default();
            names.extend(
                attributes
                    .iter()
                    .filter(|a| a.name.eq_ignore_ascii_case(file_name))
                    .map(|a| a.value.to_string()),
            );
        }
    }
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

/// Refuses messages whose body is too big, and messages that carry an
/// attachment of a forbidden type.
#[derive(Parser)]
#[command(name = "size-limit")]
struct Cli {
    #[command(flatten)]
    listen: milter_examples::ListenArgs,
    /// The largest body accepted, in bytes (K, M and G mean KiB, MiB and GiB).
    #[arg(long, value_name = "N[K|M|G]", default_value = "10M", value_parser = parse_size)]
    max_bytes: u64,
    /// The file name extensions refused, replacing the default list.
    #[arg(long, value_name = "EXT,EXT,...", value_delimiter = ',',
          default_values = DEFAULT_FORBIDDEN.iter().copied())]
    forbid: Vec<String>,
}

fn main() {
    let cli: Cli = milter_examples::parse_args("inet:7373@127.0.0.1");
    let forbidden: Vec<String> = cli
        .forbid
        .iter()
        .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .collect();
    milter_examples::init_logging();
    log::info!(
        "refusing bodies over {} bytes and attachments of type {}",
        cli.max_bytes,
        forbidden
            .iter()
            .map(|e| format!(".{e}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let config = Arc::new(Config {
        max_bytes: cli.max_bytes,
        forbidden,
        parser: MessageParser::new()
            .header_content_type(HeaderName::ContentType)
            .header_content_type(HeaderName::ContentDisposition)
            .default_header_ignore(),
    });
    milter_examples::run_with("size-limit", &cli.listen, move || SizeLimit {
        config: Arc::clone(&config),
        msg: Scan::default(),
    });
}
