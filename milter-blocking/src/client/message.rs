//! Messages and envelopes as the client sends them: RFC 5322 parsing, header
//! unfolding the way Postfix does it, body chunking.

use milter_core::limits::MAX_BODY_CHUNK;
use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;

/// One header field.
///
/// The value is kept as it appears after the colon, leading white space included,
/// with each fold as LF followed by the continuation's white space and no CR. That
/// is what an MTA sends a milter that negotiated `HDR_LEADSPC`; without it the MTA
/// drops exactly one leading space ([`HeaderField::value`]).
///
/// ```
/// use milter_blocking::client::HeaderField;
/// let h = HeaderField::new("Subject", "Hello");
/// assert_eq!(h.raw_value, b" Hello");
/// assert_eq!(h.value(), b"Hello");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeaderField {
    /// The name, without the colon.
    pub name: Vec<u8>,
    /// Everything after the colon, folds as LF + white space.
    pub raw_value: Vec<u8>,
}

impl HeaderField {
    /// A header as it would be written `name: value` (one space after the colon).
    ///
    /// ```
    /// use milter_blocking::client::HeaderField;
    /// let h = HeaderField::new("X-Spam", "no");
    /// assert_eq!(h.to_string(), "X-Spam: no");
    /// ```
    pub fn new(name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> HeaderField {
        let mut raw_value = Vec::with_capacity(value.as_ref().len() + 1);
        raw_value.push(b' ');
        raw_value.extend_from_slice(value.as_ref());
        HeaderField {
            name: name.as_ref().to_vec(),
            raw_value,
        }
    }

    /// The value as an MTA passes it to a milter without `HDR_LEADSPC`: with one
    /// leading space (never a tab) removed.
    ///
    /// ```
    /// use milter_blocking::client::Message;
    /// let m = Message::parse(b"Subject:  two spaces\r\n\r\n");
    /// assert_eq!(m.headers[0].value(), b" two spaces"); // only one is removed
    /// ```
    pub fn value(&self) -> &[u8] {
        self.raw_value.strip_prefix(b" ").unwrap_or(&self.raw_value)
    }

    /// The value as sent to a milter that did (`true`) or did not negotiate
    /// `HDR_LEADSPC`.
    ///
    /// ```
    /// use milter_blocking::client::HeaderField;
    /// let h = HeaderField::new("Subject", "hi");
    /// assert_eq!(h.value_for_milter(true), b" hi");
    /// assert_eq!(h.value_for_milter(false), b"hi");
    /// ```
    pub fn value_for_milter(&self, leading_space: bool) -> &[u8] {
        if leading_space {
            &self.raw_value
        } else {
            self.value()
        }
    }

    /// The value with white space trimmed at both ends and folds as CRLF + white
    /// space, as Stalwart sends it (whatever `HDR_LEADSPC` says).
    ///
    /// ```
    /// use milter_blocking::client::Message;
    /// let m = Message::parse(b"To:  a@b,\n\tc@d \n\n");
    /// assert_eq!(m.headers[0].value_trimmed(), b"a@b,\r\n\tc@d");
    /// ```
    pub fn value_trimmed(&self) -> Vec<u8> {
        let mut v = to_crlf(&self.raw_value);
        let end = v.trim_ascii_end().len();
        v.truncate(end);
        let start = v.len() - v.trim_ascii_start().len();
        v.drain(..start);
        v
    }

    /// Whether the name is `name`, ignoring ASCII case.
    ///
    /// ```
    /// use milter_blocking::client::HeaderField;
    /// assert!(HeaderField::new("Content-Type", "text/plain").is("content-type"));
    /// ```
    pub fn is(&self, name: impl AsRef<[u8]>) -> bool {
        self.name.eq_ignore_ascii_case(name.as_ref())
    }

    /// Appends the header as message text: `name:value` CRLF, folds as CRLF.
    ///
    /// ```
    /// use milter_blocking::client::Message;
    /// let m = Message::parse(b"Subject: a\n long one\n\n");
    /// let mut out = Vec::new();
    /// m.headers[0].write_to(&mut out);
    /// assert_eq!(out, b"Subject: a\r\n long one\r\n");
    /// ```
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.name);
        out.push(b':');
        for &b in &self.raw_value {
            if b == b'\n' {
                out.push(b'\r');
            }
            out.push(b);
        }
        out.extend_from_slice(b"\r\n");
    }
}

impl fmt::Display for HeaderField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            String::from_utf8_lossy(&self.name),
            String::from_utf8_lossy(&self.raw_value).replace('\n', "\\n")
        )
    }
}

/// An RFC 5322 message: header fields and a body with CRLF line ends.
///
/// ```
/// use milter_blocking::client::Message;
/// let m = Message::parse(b"Subject: Hi\nTo: a@b,\n\tc@d\n\nline 1\nline 2\n");
/// assert_eq!(m.header("subject"), Some(&b"Hi"[..]));
/// assert_eq!(m.header("To"), Some(&b"a@b,\n\tc@d"[..]));
/// assert_eq!(m.body, b"line 1\r\nline 2\r\n");
/// assert_eq!(m.to_bytes(), b"Subject: Hi\r\nTo: a@b,\r\n\tc@d\r\n\r\nline 1\r\nline 2\r\n");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The header fields, in order.
    pub headers: Vec<HeaderField>,
    /// The body (after the blank line), CRLF line ends.
    pub body: Vec<u8>,
}

impl Message {
    /// An empty message (no headers, no body).
    ///
    /// ```
    /// use milter_blocking::client::Message;
    /// let m = Message::new().with_header("Subject", "hi").with_body("Hello.\n");
    /// assert_eq!(m.body, b"Hello.\r\n");
    /// ```
    pub fn new() -> Message {
        Message::default()
    }

    /// Appends a header (builder style).
    ///
    /// ```
    /// use milter_blocking::client::Message;
    /// let m = Message::new().with_header("X-A", "1").with_header("X-A", "2");
    /// assert_eq!(m.header_all("X-A"), [&b"1"[..], &b"2"[..]]);
    /// ```
    pub fn with_header(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Message {
        self.headers.push(HeaderField::new(name, value));
        self
    }

    /// Sets the body (builder style); bare LF line ends become CRLF.
    ///
    /// ```
    /// use milter_blocking::client::Message;
    /// // A body bigger than one chunk.
    /// let m = Message::new().with_header("Subject", "big").with_body(vec![b'x'; 100_000]);
    /// assert_eq!(m.body_chunks().count(), 2);
    /// ```
    pub fn with_body(mut self, body: impl AsRef<[u8]>) -> Message {
        self.body = to_crlf(body.as_ref());
        self
    }

    /// Parses message text, with CRLF or LF line ends.
    ///
    /// The header block ends at the first empty line, or at the first line that is
    /// not a header field (no colon, or a name with white space or control
    /// characters), which then starts the body, as Postfix does. A leading mbox
    /// `From ` line is dropped (as Postfix's `sendmail` command does). Folded
    /// headers are kept with LF + white space per fold; CRs before LFs are dropped.
    /// The body gets CRLF line ends, also on a last line that has none (as it
    /// arrives over SMTP); it is not dot-unstuffed (files are not dot-stuffed).
    ///
    /// ```
    /// use milter_blocking::client::Message;
    /// let m = Message::parse(b"From: a@example.org\nSubject: a\n folded one\n\nHello.\n");
    /// assert_eq!(m.header("Subject"), Some(&b"a\n folded one"[..]));
    /// assert_eq!(m.body, b"Hello.\r\n");
    /// ```
    pub fn parse(bytes: &[u8]) -> Message {
        let mut rest = bytes;
        if rest.starts_with(b"From ") {
            rest = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => &rest[i + 1..],
                None => b"",
            };
        }
        let mut headers: Vec<HeaderField> = Vec::new();
        loop {
            let (line, next) = split_line(rest);
            if line.is_empty() {
                // End of headers (or of the input).
                rest = next;
                break;
            }
            if matches!(line[0], b' ' | b'\t') {
                if let Some(last) = headers.last_mut() {
                    last.raw_value.push(b'\n');
                    last.raw_value.extend_from_slice(line);
                    rest = next;
                    continue;
                }
                break;
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                break;
            };
            let name = trim_end(&line[..colon]);
            if name.is_empty() || name.iter().any(|&b| b <= b' ' || b == 0x7f) {
                break;
            }
            headers.push(HeaderField {
                name: name.to_vec(),
                raw_value: line[colon + 1..].to_vec(),
            });
            rest = next;
        }
        let mut body = to_crlf(rest);
        // An SMTP client ends the last line with CRLF before the final dot, so an
        // MTA always has it, even when the file lacks it.
        if !body.is_empty() && !body.ends_with(b"\n") {
            body.extend_from_slice(b"\r\n");
        }
        Message { headers, body }
    }

    /// Reads and parses a message file (`.eml`).
    ///
    /// ```
    /// use milter_blocking::client::Message;
    /// let path = std::env::temp_dir().join(format!("doc-{}.eml", std::process::id()));
    /// std::fs::write(&path, "Subject: from a file\n\nHello.\n")?;
    /// let m = Message::from_file(&path)?;
    /// assert_eq!(m.header("subject"), Some(&b"from a file"[..]));
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_file(path: impl AsRef<Path>) -> std::io::Result<Message> {
        Ok(Message::parse(&std::fs::read(path)?))
    }

    /// The value (leading space removed) of the first header called `name`.
    ///
    /// ```
    /// use milter_blocking::client::Message;
    /// let m = Message::parse(b"Received: a\r\nReceived: b\r\n\r\n");
    /// assert_eq!(m.header("received"), Some(&b"a"[..]));
    /// assert_eq!(m.header("Subject"), None);
    /// ```
    pub fn header(&self, name: impl AsRef<[u8]>) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.is(name.as_ref()))
            .map(HeaderField::value)
    }

    /// The values of every header called `name`, in order.
    ///
    /// ```
    /// use milter_blocking::client::Message;
    /// let m = Message::parse(b"Received: a\r\nReceived: b\r\n\r\n");
    /// assert_eq!(m.header_all("Received"), [&b"a"[..], &b"b"[..]]);
    /// ```
    pub fn header_all(&self, name: impl AsRef<[u8]>) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|h| h.is(name.as_ref()))
            .map(HeaderField::value)
            .collect()
    }

    /// The body in the chunks an MTA sends: 65535 bytes each but the last.
    ///
    /// ```
    /// use milter_blocking::client::Message;
    /// let m = Message::new().with_body(vec![b'x'; 70_000]);
    /// let sizes: Vec<usize> = m.body_chunks().map(<[u8]>::len).collect();
    /// assert_eq!(sizes, [65535, 4465]);
    /// ```
    pub fn body_chunks(&self) -> std::slice::Chunks<'_, u8> {
        self.body.chunks(MAX_BODY_CHUNK)
    }

    /// The message as Postfix stores it when milters are in use, and so sends it
    /// to them: every header (`Name:value`, folds as LF) cut to 60,000 bytes
    /// (its cleanup server lowers `header_size_limit` to that for milters, to stay
    /// under libmilter's 65,535-byte packets). The cut falls at the last line
    /// boundary before the limit when that keeps more than 90 % of it, else at
    /// the limit itself (`cleanup_out_header`).
    ///
    /// ```
    /// use milter_blocking::client::Message;
    /// let long = format!("X-Long: {}\n\nbody\n", "x".repeat(70_000));
    /// let m = Message::parse(long.as_bytes()).as_postfix_stores_it();
    /// assert_eq!(m.headers[0].raw_value.len(), 60_000 - "X-Long:".len());
    /// ```
    pub fn as_postfix_stores_it(&self) -> Message {
        Message {
            headers: self
                .headers
                .iter()
                .map(|h| postfix_header_cut(h).into_owned())
                .collect(),
            body: self.body.clone(),
        }
    }

    /// The message as text with CRLF line ends.
    ///
    /// ```
    /// use milter_blocking::client::Message;
    /// let m = Message::parse(b"Subject: hi\n\nHello.\n");
    /// assert_eq!(m.to_bytes(), b"Subject: hi\r\n\r\nHello.\r\n");
    /// ```
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 64 * self.headers.len() + 2);
        for h in &self.headers {
            h.write_to(&mut out);
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// Postfix's header size limit while milters are in use.
const POSTFIX_MILTER_HEADER_LIMIT: usize = 60_000;

/// A header cut as Postfix's `cleanup_out_header` cuts it.
pub(crate) fn postfix_header_cut(h: &HeaderField) -> Cow<'_, HeaderField> {
    let limit = POSTFIX_MILTER_HEADER_LIMIT;
    let prefix = h.name.len() + 1;
    if prefix + h.raw_value.len() <= limit {
        return Cow::Borrowed(h);
    }
    // Offsets in `Name:value`; each line ends before its LF.
    let mut keep = limit;
    let mut start = 0;
    let text_len = prefix + h.raw_value.len();
    while start < text_len {
        let end = h.raw_value[start.saturating_sub(prefix)..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text_len, |i| start.max(prefix) + i);
        if end > limit {
            // A nice cut after the previous line if it keeps over 90 %.
            if start * 10 > limit * 9 {
                keep = start - 1;
            }
            break;
        }
        start = end + 1;
    }
    let mut cut = h.clone();
    cut.raw_value.truncate(keep.saturating_sub(prefix));
    Cow::Owned(cut)
}

/// The next line without its line end (LF or CRLF), and the rest.
fn split_line(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let line = &s[..i];
            (line.strip_suffix(b"\r").unwrap_or(line), &s[i + 1..])
        }
        None => (s.strip_suffix(b"\r").unwrap_or(s), b""),
    }
}

fn trim_end(s: &[u8]) -> &[u8] {
    let end = s
        .iter()
        .rposition(|&b| !matches!(b, b' ' | b'\t'))
        .map_or(0, |i| i + 1);
    &s[..end]
}

/// Text with every line ending in CRLF: a bare LF gets a CR, a CR already before an
/// LF stays single, a lone CR is kept as is.
pub(crate) fn to_crlf(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + s.len() / 32 + 2);
    let mut prev = 0u8;
    for &b in s {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// An envelope address with its ESMTP parameters.
///
/// ```
/// use milter_blocking::client::Address;
/// let a = Address::parse("a@example.org SIZE=100 BODY=8BITMIME");
/// assert_eq!(a.address, "<a@example.org>");
/// assert_eq!(a.args, ["SIZE=100", "BODY=8BITMIME"]);
/// assert_eq!(Address::new("").address, "<>");
/// assert_eq!(Address::new("<x@y>").address, "<x@y>");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// The address token as sent in `M`/`R` (normally in angle brackets).
    pub address: String,
    /// ESMTP parameters, one per element (`SIZE=100`).
    pub args: Vec<String>,
}

impl Address {
    /// An address without parameters; angle brackets are added unless present.
    ///
    /// ```
    /// use milter_blocking::client::Address;
    /// assert_eq!(Address::new("a@example.org").address, "<a@example.org>");
    /// assert_eq!(Address::new("").address, "<>"); // the null sender of bounces
    /// ```
    pub fn new(address: &str) -> Address {
        let a = address.trim();
        let address = if a.starts_with('<') && a.ends_with('>') {
            a.to_string()
        } else {
            format!("<{a}>")
        };
        Address {
            address,
            args: Vec::new(),
        }
    }

    /// The token exactly as given (no brackets added).
    ///
    /// ```
    /// use milter_blocking::client::Address;
    /// // Without brackets, as some clients send it.
    /// assert_eq!(Address::verbatim("a@example.org").address, "a@example.org");
    /// ```
    pub fn verbatim(address: &str) -> Address {
        Address {
            address: address.to_string(),
            args: Vec::new(),
        }
    }

    /// `address [PARAM ...]`, split at white space; brackets added as by
    /// [`Address::new`].
    ///
    /// ```
    /// use milter_blocking::client::Address;
    /// let a = Address::parse("<a@example.org> SIZE=100");
    /// assert_eq!((a.address.as_str(), a.args.len()), ("<a@example.org>", 1));
    /// ```
    pub fn parse(s: &str) -> Address {
        let mut words = s.split_whitespace();
        let mut a = Address::new(words.next().unwrap_or(""));
        a.args = words.map(str::to_string).collect();
        a
    }

    /// Adds an ESMTP parameter (builder style).
    ///
    /// ```
    /// use milter_blocking::client::Address;
    /// let a = Address::new("b@example.com").with_arg("NOTIFY=NEVER");
    /// assert_eq!(a.to_string(), "<b@example.com> NOTIFY=NEVER");
    /// ```
    pub fn with_arg(mut self, arg: &str) -> Address {
        self.args.push(arg.to_string());
        self
    }

    /// The address without angle brackets.
    ///
    /// ```
    /// use milter_blocking::client::Address;
    /// assert_eq!(Address::new("a@example.org").bare(), "a@example.org");
    /// ```
    pub fn bare(&self) -> &str {
        let a = self.address.trim();
        a.strip_prefix('<')
            .and_then(|a| a.strip_suffix('>'))
            .unwrap_or(a)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)?;
        for a in &self.args {
            write!(f, " {a}")?;
        }
        Ok(())
    }
}

/// The SMTP client's address as the MTA reports it in `C`.
///
/// Parses from `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711`,
/// `unix:/path` and `unknown`; an address without a port gets
/// [`ClientAddress::DEFAULT_PORT`].
///
/// ```
/// use milter_blocking::client::ClientAddress;
/// let a: ClientAddress = "[2001:db8::1]:25".parse().unwrap();
/// assert_eq!(a.to_string(), "[2001:db8::1]:25");
/// let u: ClientAddress = "unknown".parse().unwrap();
/// assert_eq!(u, ClientAddress::Unknown);
/// assert!("300.1.1.1".parse::<ClientAddress>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientAddress {
    /// An IPv4 or IPv6 client.
    Ip(SocketAddr),
    /// A client on a Unix socket (family `L`).
    Unix(String),
    /// No address known (family `U`).
    Unknown,
}

impl ClientAddress {
    /// The source port used when a parsed address has none.
    pub const DEFAULT_PORT: u16 = 41234;

    /// The address without the port (`192.0.2.1`, `2001:db8::1`, the path), as in
    /// the macro `{client_addr}`.
    ///
    /// ```
    /// use milter_blocking::client::ClientAddress;
    /// let a: ClientAddress = "[2001:db8::1]:25".parse().unwrap();
    /// assert_eq!(a.addr_text(), "2001:db8::1");
    /// ```
    pub fn addr_text(&self) -> String {
        match self {
            ClientAddress::Ip(a) => a.ip().to_string(),
            ClientAddress::Unix(p) => p.clone(),
            ClientAddress::Unknown => String::new(),
        }
    }

    /// The port (0 for non-IP clients).
    ///
    /// ```
    /// use milter_blocking::client::ClientAddress;
    /// assert_eq!("192.0.2.1:4711".parse::<ClientAddress>().unwrap().port(), 4711);
    /// assert_eq!(ClientAddress::Unknown.port(), 0);
    /// ```
    pub fn port(&self) -> u16 {
        match self {
            ClientAddress::Ip(a) => a.port(),
            _ => 0,
        }
    }
}

impl Default for ClientAddress {
    /// `192.0.2.1` (TEST-NET-1) port [`ClientAddress::DEFAULT_PORT`]: a remote
    /// client, so milters that wave local clients through do their work.
    fn default() -> Self {
        ClientAddress::Ip(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            ClientAddress::DEFAULT_PORT,
        ))
    }
}

impl From<SocketAddr> for ClientAddress {
    fn from(a: SocketAddr) -> Self {
        ClientAddress::Ip(a)
    }
}

impl From<IpAddr> for ClientAddress {
    fn from(ip: IpAddr) -> Self {
        ClientAddress::Ip(SocketAddr::new(ip, ClientAddress::DEFAULT_PORT))
    }
}

impl FromStr for ClientAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("unknown") {
            return Ok(ClientAddress::Unknown);
        }
        if let Some(p) = s.strip_prefix("unix:") {
            return Ok(ClientAddress::Unix(p.to_string()));
        }
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(ClientAddress::Ip(a));
        }
        let ip = s
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(s);
        ip.parse::<IpAddr>().map(ClientAddress::from).map_err(|_| {
            format!("bad client address {s:?} (an IPv4 or IPv6 address, optionally with a port, unix:PATH or unknown)")
        })
    }
}

impl fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAddress::Ip(a) => write!(f, "{a}"),
            ClientAddress::Unix(p) => write!(f, "unix:{p}"),
            ClientAddress::Unknown => f.write_str("unknown"),
        }
    }
}

/// The SMTP session and transaction around a message: who connected, what they
/// said at HELO, the sender and the recipients.
///
/// ```
/// use milter_blocking::client::Envelope;
/// let env = Envelope::new("a@example.org").rcpt("b@example.com").helo("client.test");
/// assert_eq!(env.sender.address, "<a@example.org>");
/// assert_eq!(env.recipients[0].address, "<b@example.com>");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The client's host name (`C` packet, macro `{client_name}`); Postfix reports
    /// `[addr]` when the name did not verify, `unknown` without an address.
    pub client_name: String,
    /// The client's address.
    pub client_addr: ClientAddress,
    /// The HELO/EHLO argument; `None` sends no `H`.
    pub helo: Option<String>,
    /// MAIL FROM.
    pub sender: Address,
    /// RCPT TO, in order.
    pub recipients: Vec<Address>,
}

impl Envelope {
    /// An envelope from `sender` (parsed as by [`Address::parse`]) with no
    /// recipients, client `client.example.net [192.0.2.1]`, HELO
    /// `client.example.net`.
    ///
    /// ```
    /// use milter_blocking::client::Envelope;
    /// let e = Envelope::new("alice@example.org");
    /// assert_eq!(e.sender.address, "<alice@example.org>");
    /// assert!(e.recipients.is_empty());
    /// ```
    pub fn new(sender: &str) -> Envelope {
        Envelope {
            client_name: "client.example.net".to_string(),
            client_addr: ClientAddress::default(),
            helo: Some("client.example.net".to_string()),
            sender: Address::parse(sender),
            recipients: Vec::new(),
        }
    }

    /// Adds a recipient, parsed as by [`Address::parse`] (builder style).
    ///
    /// ```
    /// use milter_blocking::client::Envelope;
    /// let e = Envelope::new("a@example.org").rcpt("b@example.com").rcpt("c@example.com NOTIFY=NEVER");
    /// assert_eq!(e.recipients[1].args, ["NOTIFY=NEVER"]);
    /// ```
    pub fn rcpt(mut self, rcpt: &str) -> Envelope {
        self.recipients.push(Address::parse(rcpt));
        self
    }

    /// Sets the HELO name (builder style).
    ///
    /// ```
    /// use milter_blocking::client::Envelope;
    /// let e = Envelope::new("a@example.org").helo("mail.example.org");
    /// assert_eq!(e.helo.as_deref(), Some("mail.example.org"));
    /// ```
    pub fn helo(mut self, helo: &str) -> Envelope {
        self.helo = Some(helo.to_string());
        self
    }

    /// Sets the client's name and address (builder style).
    ///
    /// ```
    /// use milter_blocking::client::{ClientAddress, Envelope};
    /// // A local client: milters often wave these through.
    /// let e = Envelope::new("a@example.org").client("localhost", "127.0.0.1".parse::<ClientAddress>().unwrap());
    /// assert_eq!(e.client_addr.addr_text(), "127.0.0.1");
    /// ```
    pub fn client(mut self, name: &str, addr: ClientAddress) -> Envelope {
        self.client_name = name.to_string();
        self.client_addr = addr;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfolds_like_postfix() {
        let m = Message::parse(
            b"Subject:  two spaces\r\nX-Tab:\tvalue\r\nX-Fold: a\r\n  b\r\n\tc\r\nX-Empty:\r\n\r\nbody",
        );
        assert_eq!(m.headers[0].value(), b" two spaces");
        assert_eq!(m.headers[0].value_for_milter(true), b"  two spaces");
        assert_eq!(m.headers[1].value(), b"\tvalue");
        assert_eq!(m.headers[2].value(), b"a\n  b\n\tc");
        assert_eq!(m.headers[3].value(), b"");
        assert_eq!(m.body, b"body\r\n");
    }

    #[test]
    fn non_header_line_starts_the_body() {
        let m = Message::parse(b"From someone Mon Jan 1\nA: 1\nnot a header\nmore\n");
        assert_eq!(m.headers.len(), 1);
        assert_eq!(m.body, b"not a header\r\nmore\r\n");
        let m = Message::parse(b"");
        assert!(m.headers.is_empty() && m.body.is_empty());
        let m = Message::parse(b"\r\nonly body");
        assert!(m.headers.is_empty());
        assert_eq!(m.body, b"only body\r\n");
    }

    #[test]
    fn postfix_cuts_long_headers_like_its_cleanup_server() {
        let cut = |text: &str| {
            let m = Message::parse(format!("{text}\n\n").as_bytes()).as_postfix_stores_it();
            let h = &m.headers[0];
            String::from_utf8(h.raw_value.clone()).unwrap().len() + h.name.len() + 1
        };
        let x = |n| "x".repeat(n);
        // Short enough: untouched.
        assert_eq!(cut(&format!("A: {}", x(59_997))), 60_000);
        // One long line: cut at the limit ("unkind cut").
        assert_eq!(cut(&format!("A: {}", x(80_000))), 60_000);
        // A fold line that crosses the limit, starting after 90 %: dropped with
        // its LF ("nice cut").
        let nice = format!("A: {}\n {}", x(55_000), x(10_000));
        assert_eq!(cut(&nice), "A: ".len() + 55_000);
        // Starting before 90 %: cut at the limit.
        let unkind = format!("A: {}\n {}", x(50_000), x(20_000));
        assert_eq!(cut(&unkind), 60_000);
    }

    #[test]
    fn crlf_conversion() {
        assert_eq!(to_crlf(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\rd");
    }

    #[test]
    fn chunks_are_at_most_65535() {
        let m = Message::new().with_body(vec![b'x'; 65535 * 2 + 1]);
        let sizes: Vec<usize> = m.body_chunks().map(<[u8]>::len).collect();
        assert_eq!(sizes, [65535, 65535, 1]);
    }
}
