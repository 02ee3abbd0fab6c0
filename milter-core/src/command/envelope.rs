//! `M` and `R` — envelope sender and recipient with their ESMTP arguments.

use crate::error::DecodeError;
use crate::frame::encode_frame;
use crate::reader::{memchr0, Reader};
use std::borrow::Cow;

/// An envelope address (sender or recipient) and its ESMTP arguments.
///
/// ```
/// use milter_core::EnvelopeAddr;
/// let m = EnvelopeAddr::decode(b'M', b"<Alice@Example.org>\0SIZE=10\0BODY=8BITMIME\0").unwrap();
/// assert_eq!(m.address, b"<Alice@Example.org>");
/// assert_eq!(m.bare(), b"Alice@Example.org");
/// assert_eq!(m.args().collect::<Vec<_>>(), [&b"SIZE=10"[..], &b"BODY=8BITMIME"[..]]);
/// assert!(m.has_arg("body=8bitmime"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeAddr<'a> {
    /// The address as the SMTP client gave it, normally in angle brackets
    /// (`<>` for the null sender).
    pub address: &'a [u8],
    /// The ESMTP arguments as raw `arg NUL arg NUL ...` bytes; see
    /// [`EnvelopeAddr::args`].
    pub args_raw: &'a [u8],
}

impl<'a> EnvelopeAddr<'a> {
    /// An address without arguments.
    pub const fn new(address: &'a [u8]) -> Self {
        EnvelopeAddr {
            address,
            args_raw: &[],
        }
    }

    /// Decodes the payload of an `M` or `R` command (`code` is only used in error
    /// messages). Bytes after the last NUL are dropped, as libmilter does.
    pub fn decode(code: u8, payload: &'a [u8]) -> Result<EnvelopeAddr<'a>, DecodeError> {
        let mut r = Reader::new(code, payload);
        let address = r.cstr("address")?;
        let rest = r.rest();
        let args_raw = match rest.iter().rposition(|&b| b == 0) {
            Some(last) => &rest[..=last],
            None => &[],
        };
        Ok(EnvelopeAddr { address, args_raw })
    }

    /// The ESMTP arguments, one per item (`SIZE=1024`, `BODY=8BITMIME`).
    pub fn args(&self) -> Args<'a> {
        Args {
            rest: self.args_raw,
        }
    }

    /// Whether an argument equals `arg`, ignoring ASCII case.
    pub fn has_arg(&self, arg: &str) -> bool {
        self.args().any(|a| a.eq_ignore_ascii_case(arg.as_bytes()))
    }

    /// The address with surrounding white space and one pair of angle brackets
    /// removed.
    pub fn bare(&self) -> &'a [u8] {
        bare_address(self.address)
    }

    /// The address as text, if it is UTF-8 (lossless: `None` means "not UTF-8",
    /// never a changed string).
    pub fn as_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.address).ok()
    }

    /// The address as text with invalid UTF-8 replaced (for logs).
    pub fn to_str_lossy(&self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.address)
    }

    /// Appends the packet with command code `code` (`b'M'` or `b'R'`).
    pub fn encode(&self, code: u8, out: &mut Vec<u8>) {
        encode_frame(out, code, &[self.address, b"\0", self.args_raw]);
    }

    /// Appends an `M`/`R` packet from an address and separate arguments.
    pub fn encode_parts<A: AsRef<[u8]>>(code: u8, address: &[u8], args: &[A], out: &mut Vec<u8>) {
        let mut parts: Vec<&[u8]> = Vec::with_capacity(2 + 2 * args.len());
        parts.push(address);
        parts.push(b"\0");
        for a in args {
            parts.push(a.as_ref());
            parts.push(b"\0");
        }
        encode_frame(out, code, &parts);
    }
}

/// Strips surrounding white space and one pair of angle brackets.
///
/// ```
/// assert_eq!(milter_core::bare_address(b" <a@b> "), b"a@b");
/// assert_eq!(milter_core::bare_address(b"<>"), b"");
/// ```
pub fn bare_address(address: &[u8]) -> &[u8] {
    let a = address.trim_ascii();
    match a {
        [b'<', inner @ .., b'>'] => inner,
        _ => a,
    }
}

/// Iterator over ESMTP arguments.
#[derive(Debug, Clone)]
pub struct Args<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Args<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let n = memchr0(self.rest)?;
        let arg = &self.rest[..n];
        self.rest = &self.rest[n + 1..];
        Some(arg)
    }
}
