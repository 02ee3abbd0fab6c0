//! Recognising a peer that is not a milter from the first bytes it sent.
//!
//! A milter's packets start with a 4-byte length. Text from a line-based server
//! (clamd's `UNKNOWN COMMAND`, an HTTP status line, an SMTP banner) or a TLS
//! record read as a length claims hundreds of megabytes (`UNKN` is 1,431,194,446),
//! so the frame decoder refuses it; these bytes say what the peer is instead.

/// What kind of server sent `bytes` (the start of its answer), if they look like
/// a known protocol rather than a milter packet.
pub(crate) fn not_a_milter(bytes: &[u8]) -> Option<String> {
    let text = || quote(bytes);
    if bytes.starts_with(b"UNKNOWN COMMAND") {
        return Some(format!("clamd (it answered {})", text()));
    }
    if bytes.starts_with(b"HTTP/") {
        return Some(format!("an HTTP server (it answered {})", text()));
    }
    if bytes.starts_with(b"SSH-") {
        return Some(format!("an SSH server (it sent {})", text()));
    }
    if bytes.starts_with(b"+OK") || bytes.starts_with(b"* OK") {
        return Some(format!("a POP3 or IMAP server (it sent {})", text()));
    }
    if bytes.len() >= 4
        && bytes[..3].iter().all(u8::is_ascii_digit)
        && matches!(bytes[3], b' ' | b'-')
    {
        let what = if bytes.starts_with(b"220") {
            "an SMTP server"
        } else {
            "a line-based server (SMTP, FTP, ...)"
        };
        return Some(format!("{what} (it sent {})", text()));
    }
    // A TLS record: content type 20 to 23 (alert 21, handshake 22), version 3.x.
    if bytes.len() >= 2 && (20..=23).contains(&bytes[0]) && bytes[1] == 3 {
        return Some("a TLS server (it sent a TLS record; milters speak plain text)".into());
    }
    let printable = bytes.len() >= 4
        && bytes
            .iter()
            .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    if printable {
        return Some(format!("a text protocol (it sent {})", text()));
    }
    None
}

/// The first line of `bytes`, at most 60 characters, quoted.
fn quote(bytes: &[u8]) -> String {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let s: String = String::from_utf8_lossy(line).chars().take(60).collect();
    format!("{s:?}")
}

#[cfg(test)]
mod tests {
    use super::not_a_milter;

    #[test]
    fn known_peers_are_named() {
        let name = |b: &[u8]| not_a_milter(b).unwrap_or_default();
        assert_eq!(
            name(b"UNKNOWN COMMAND\n"),
            "clamd (it answered \"UNKNOWN COMMAND\")"
        );
        assert!(name(b"HTTP/1.1 400 Bad Request\r\n\r\n").starts_with("an HTTP server"));
        assert!(name(b"220 mx.example ESMTP\r\n").starts_with("an SMTP server"));
        assert!(name(b"554-no\r\n").starts_with("a line-based server"));
        assert!(name(&[21, 3, 3, 0, 2, 2, 50]).starts_with("a TLS server"));
        assert!(name(b"hello there\n").starts_with("a text protocol"));
        // A milter packet (a small length) is not mistaken for one.
        assert_eq!(not_a_milter(&[0, 0, 0, 1, b'c']), None);
    }
}
