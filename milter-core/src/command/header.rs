//! `L` — one header field.

use crate::error::DecodeError;
use crate::frame::encode_frame;
use crate::reader::Reader;
use std::borrow::Cow;

/// A header as the MTA shows it: the name (no colon) and the value (without
/// HDR_LEADSPC, one leading space already removed; folds as LF + white space).
///
/// ```
/// use milter_core::Header;
/// let h = Header::decode(b"Subject\0Hello\0").unwrap();
/// assert!(h.is("subject"));
/// assert_eq!(h.value_str(), Some("Hello"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// The header name.
    pub name: &'a [u8],
    /// The header value, as bytes.
    pub value: &'a [u8],
}

impl<'a> Header<'a> {
    /// Decodes the payload of an `L` command: name NUL value NUL. Bytes after a NUL
    /// inside the value are ignored, as libmilter does.
    pub fn decode(payload: &'a [u8]) -> Result<Header<'a>, DecodeError> {
        let mut r = Reader::new(b'L', payload);
        let name = r.cstr("header name")?;
        let value = r.cstr("header value")?;
        Ok(Header { name, value })
    }

    /// Whether the name equals `name`, ignoring ASCII case.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// The name as text, if UTF-8.
    pub fn name_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.name).ok()
    }

    /// The value as text, if UTF-8 (lossless: `None` means "not UTF-8").
    pub fn value_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.value).ok()
    }

    /// The value with invalid UTF-8 replaced (for logs).
    pub fn value_lossy(&self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.value)
    }

    /// Appends the `L` packet.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_frame(out, b'L', &[self.name, b"\0", self.value, b"\0"]);
    }
}
