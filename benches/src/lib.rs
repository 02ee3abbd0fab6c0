//! The benchmark load: what one MTA connection sends, shared by the throughput
//! bench and the `bench-load` program (a fixed amount of the same load, for
//! profilers such as callgrind and perf).
//!
//! Per connection: connect and helo once; per message mail, rcpt, data, 10
//! headers, eoh, the body in chunks of at most 65535 bytes, eom and abort, as
//! Postfix does, with Postfix's macros. Every reply is checked: every stage must
//! continue, and end of message must add exactly `X-Bench: <body bytes>`.

use milter_blocking::client::{Client, ClientAddress, ClientError, Response};
use milter_blocking::milter_core::client::Decision;
use milter_blocking::milter_core::Modification;
use std::net::SocketAddr;

/// A body of `len` bytes of text in CRLF lines.
pub fn body(len: usize) -> Vec<u8> {
    let line = b"The quick brown fox jumps over the lazy dog 0123456789.\r\n";
    line.iter().copied().cycle().take(len).collect()
}

/// Opens one load connection to `spec` and says connect and helo; `index`
/// makes the client's address differ between connections.
pub fn open(spec: &str, index: usize) -> Result<Client, String> {
    let mut c = Client::open(spec).map_err(|e| e.to_string())?;
    let addr: SocketAddr = ([192, 0, 2, 1], 40000u16.wrapping_add(index as u16)).into();
    expect_continue(
        c.connect("client.example.net", &ClientAddress::Ip(addr))
            .map_err(text)?,
        "connect",
    )?;
    expect_continue(c.helo("client.example.net").map_err(text)?, "helo")?;
    Ok(c)
}

/// One message of the load, sent and checked again and again.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    body: &'a [u8],
    want: Vec<u8>,
    headers: Vec<(String, String)>,
}

impl<'a> Message<'a> {
    /// A message with this body.
    pub fn new(body: &'a [u8]) -> Message<'a> {
        Message {
            body,
            want: body.len().to_string().into_bytes(),
            headers: (0..10)
                .map(|i| {
                    (
                        format!("X-Header-{i}"),
                        format!("value number {i} of the benchmark message"),
                    )
                })
                .collect(),
        }
    }

    /// Sends the message on `c` and checks every reply.
    pub fn send(&self, c: &mut Client) -> Result<(), String> {
        expect_continue(c.mail("<sender@example.org>").map_err(text)?, "mail")?;
        expect_continue(c.rcpt("<rcpt@example.org>").map_err(text)?, "rcpt")?;
        expect_continue(c.data().map_err(text)?, "data")?;
        for (n, v) in &self.headers {
            expect_continue(c.header(n, v).map_err(text)?, "header")?;
        }
        expect_continue(c.eoh().map_err(text)?, "eoh")?;
        let b = c.body_chunks(self.body).map_err(text)?;
        if let Some(r) = b.response {
            expect_continue(r, "body")?;
        }
        let eom = c.eom().map_err(text)?;
        match (&eom.decision, eom.modifications.as_slice()) {
            (Decision::Continue, [Modification::AddHeader { name, value }])
                if name == b"X-Bench" && *value == self.want => {}
            other => return Err(format!("eom: {other:?}")),
        }
        c.abort().map_err(text)
    }
}

fn text(e: ClientError) -> String {
    e.to_string()
}

fn expect_continue(r: Response, what: &str) -> Result<(), String> {
    match r {
        Response::Skipped | Response::Replied(Decision::Continue) => Ok(()),
        other => Err(format!("{what}: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_has_the_length_asked_for_in_crlf_lines() {
        let b = body(4096);
        assert_eq!(b.len(), 4096);
        assert!(b.starts_with(b"The quick brown fox"));
        assert_eq!(&b[55..57], b"\r\n");
        assert_eq!(Message::new(&b).want, b"4096");
    }
}
