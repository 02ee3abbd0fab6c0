//! Reading a captured message back.

use super::spool::Spool;
use std::io::{self, Read};

/// Reads a captured message: headers, the empty line, the body. Made by
/// [`MessageCapture::reader`](super::MessageCapture::reader); reads a spilled
/// body from its file as it goes, so memory stays what the capture holds.
#[derive(Debug)]
pub struct MessageReader<'a> {
    /// What is left of the in-memory parts: the header block, the empty line,
    /// the body chunks.
    parts: Vec<&'a [u8]>,
    spool: Option<&'a Spool>,
    spool_offset: u64,
}

impl<'a> MessageReader<'a> {
    pub(super) fn new(
        header_block: &'a [u8],
        memory: &'a [Box<[u8]>],
        spool: Option<&'a Spool>,
    ) -> MessageReader<'a> {
        let mut parts: Vec<&'a [u8]> = Vec::with_capacity(memory.len() + 2);
        parts.push(header_block);
        parts.push(b"\r\n");
        parts.extend(memory.iter().map(|c| &c[..]));
        // Consumed from the end.
        parts.reverse();
        MessageReader {
            parts,
            spool,
            spool_offset: 0,
        }
    }
}

impl Read for MessageReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while let Some(part) = self.parts.last_mut() {
            if part.is_empty() {
                self.parts.pop();
                continue;
            }
            let n = part.len().min(buf.len());
            buf[..n].copy_from_slice(&part[..n]);
            *part = &part[n..];
            return Ok(n);
        }
        match self.spool {
            Some(spool) => {
                let n = spool.read_at(buf, self.spool_offset)?;
                self.spool_offset += n as u64;
                Ok(n)
            }
            None => Ok(0),
        }
    }
}
