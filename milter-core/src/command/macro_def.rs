//! `D` — macro definitions for the command that follows.

use crate::error::DecodeError;
use crate::frame::encode_frame;
use crate::reader::{memchr0, Reader};

/// A macro packet: the code of the command the macros belong to, and the
/// name/value pairs (kept as their raw NUL-separated bytes; iterate with
/// [`MacroDef::pairs`]).
///
/// ```
/// use milter_core::MacroDef;
/// let d = MacroDef::decode(b"Cj\0mx.example.org\0{daemon_name}\0smtpd\0").unwrap();
/// assert_eq!(d.stage, b'C');
/// let pairs: Vec<_> = d.pairs().collect();
/// assert_eq!(pairs, [(&b"j"[..], &b"mx.example.org"[..]), (&b"{daemon_name}"[..], &b"smtpd"[..])]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacroDef<'a> {
    /// The command code these macros describe (`C H M R T N E`, and from Postfix
    /// also `L B U`). Any byte is accepted.
    pub stage: u8,
    /// The raw `name NUL value NUL ...` bytes.
    pub raw: &'a [u8],
}

impl<'a> MacroDef<'a> {
    /// Decodes the payload of a `D` command. An empty payload (no stage byte) is an
    /// error; a payload with only the stage byte is a packet without pairs.
    pub fn decode(payload: &'a [u8]) -> Result<MacroDef<'a>, DecodeError> {
        let mut r = Reader::new(b'D', payload);
        let stage = r.u8("stage code")?;
        Ok(MacroDef {
            stage,
            raw: r.rest(),
        })
    }

    /// The name/value pairs. A last name without a value gets an empty value;
    /// bytes after the last NUL are ignored (libmilter does the same).
    pub fn pairs(&self) -> MacroPairs<'a> {
        MacroPairs { rest: self.raw }
    }

    /// Appends the `D` packet for `stage` with these pairs.
    pub fn encode_pairs<'p, I>(out: &mut Vec<u8>, stage: u8, pairs: I)
    where
        I: IntoIterator<Item = (&'p [u8], &'p [u8])>,
    {
        let mut payload = Vec::with_capacity(64);
        payload.push(stage);
        for (name, value) in pairs {
            payload.extend_from_slice(name);
            payload.push(0);
            payload.extend_from_slice(value);
            payload.push(0);
        }
        encode_frame(out, b'D', &[&payload]);
    }

    /// Appends this packet exactly as decoded.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_frame(out, b'D', &[&[self.stage], self.raw]);
    }
}

/// Iterator over the pairs of a [`MacroDef`].
#[derive(Debug, Clone)]
pub struct MacroPairs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for MacroPairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let n = memchr0(self.rest)?;
        let name = &self.rest[..n];
        let after = &self.rest[n + 1..];
        match memchr0(after) {
            Some(v) => {
                self.rest = &after[v + 1..];
                Some((name, &after[..v]))
            }
            None => {
                // Odd number of strings (or a value without its NUL): the last name
                // has no value.
                self.rest = &[];
                Some((name, &[]))
            }
        }
    }
}
