//! Naming what a peer that does not speak the milter protocol sent: a
//! misconfigured MTA or a stray client is common (a port scanner, a health
//! check over HTTP, an SMTP client pointed at the milter port, a TLS
//! handshake), and "packet announces a 1886352244-byte payload" (the ASCII
//! text `post`) does not say so.

/// How many first bytes of a connection are kept to describe a foreign peer.
pub(crate) const KEPT: usize = 16;

/// What the first bytes of a connection look like, when they are clearly not
/// a milter packet (whose first bytes are a length below 16 MiB, so its
/// first byte is 0); `None` otherwise.
pub(crate) fn describe(first: &[u8]) -> Option<String> {
    if first.first().is_none_or(|&b| b == 0) {
        return None;
    }
    let what = if first.len() >= 3 && first[0] == 0x16 && first[1] == 3 && first[2] <= 4 {
        "a TLS handshake"
    } else if starts_with_any(
        first,
        &[
            "GET ",
            "POST ",
            "HEAD ",
            "PUT ",
            "DELETE ",
            "OPTIONS ",
            "CONNECT ",
            "PATCH ",
            "PRI * HTTP/2",
        ],
    ) {
        "an HTTP request"
    } else if starts_with_any(
        first,
        &[
            "EHLO",
            "HELO",
            "LHLO",
            "MAIL FROM",
            "RCPT TO",
            "QUIT",
            "NOOP",
            "RSET",
            "STARTTLS",
        ],
    ) {
        "SMTP"
    } else if first.starts_with(b"SSH-") {
        "an SSH client"
    } else if first
        .iter()
        .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        "text"
    } else {
        return None;
    };
    Some(format!(
        "the first bytes ({}) look like {what}: the peer does not speak the milter protocol \
         (check what connects to this socket)",
        first.escape_ascii()
    ))
}

fn starts_with_any(bytes: &[u8], prefixes: &[&str]) -> bool {
    prefixes
        .iter()
        .any(|p| bytes.len() >= p.len() && bytes[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn what(bytes: &[u8]) -> String {
        describe(bytes).unwrap_or_default()
    }

    #[test]
    fn names_common_foreign_protocols() {
        assert!(what(b"POST / HTTP/1.1\r\n").contains("look like an HTTP request"));
        assert!(what(b"GET /health HTTP").contains("(GET /health HTTP) look like an HTTP"));
        assert!(what(b"ehlo mx.example\r\n").contains("look like SMTP"));
        assert!(what(&[0x16, 3, 1, 2, 0, 1, 0, 1, 0xfc]).contains("look like a TLS handshake"));
        assert!(what(b"SSH-2.0-OpenSSH_9.2").contains("look like an SSH client"));
        assert!(what(b"hello there\n").contains("look like text"));
        assert!(what(b"x\x01\x02").is_empty());
        // A milter packet: a 4-byte length whose first byte is 0.
        assert_eq!(describe(b"\0\0\0\x0dO\0\0\0\x06"), None);
        assert_eq!(describe(b""), None);
    }
}
