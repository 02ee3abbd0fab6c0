//! A private cursor over a packet payload.

use crate::error::DecodeError;

/// Reads fields off a payload, front to back, with the code for error messages.
pub(crate) struct Reader<'a> {
    code: u8,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(code: u8, payload: &'a [u8]) -> Self {
        Reader {
            code,
            rest: payload,
        }
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        let (&b, rest) = self.rest.split_first().ok_or(DecodeError::Truncated {
            code: self.code,
            field,
        })?;
        self.rest = rest;
        Ok(b)
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated {
                code: self.code,
                field,
            });
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    /// A NUL-terminated string, without its NUL.
    pub(crate) fn cstr(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.rest.is_empty() {
            return Err(DecodeError::Truncated {
                code: self.code,
                field,
            });
        }
        match memchr0(self.rest) {
            Some(i) => {
                let s = &self.rest[..i];
                self.rest = &self.rest[i + 1..];
                Ok(s)
            }
            None => Err(DecodeError::MissingNul {
                code: self.code,
                field,
            }),
        }
    }

    /// Everything that is left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Fails if bytes are left.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                code: self.code,
                count: self.rest.len(),
            })
        }
    }
}

/// Position of the first NUL byte.
#[inline]
pub(crate) fn memchr0(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_in_order() {
        let mut r = Reader::new(b'C', b"host\x004\x00\x19addr\x00");
        assert_eq!(r.cstr("host").unwrap(), b"host");
        assert_eq!(r.u8("family").unwrap(), b'4');
        assert_eq!(r.u16("port").unwrap(), 25);
        assert_eq!(r.cstr("addr").unwrap(), b"addr");
        assert!(r.is_empty());
        assert!(r.finish().is_ok());
    }

    #[test]
    fn unterminated_string_is_an_error() {
        let mut r = Reader::new(b'H', b"abc");
        assert_eq!(
            r.cstr("name"),
            Err(DecodeError::MissingNul {
                code: b'H',
                field: "name"
            })
        );
    }
}
