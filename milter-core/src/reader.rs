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
    // Eight bytes at a time: `w - 0x01..01` borrows into the top bit of a byte
    // only where that byte is zero (or where an earlier zero byte borrowed), and
    // `!w` keeps only bytes whose top bit was clear, so the test is exact about
    // whether the word holds a zero; the byte scan below then finds the first.
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut offset = 0;
    for c in bytes.chunks_exact(8) {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        if w.wrapping_sub(LOW) & !w & HIGH != 0 {
            break;
        }
        offset += 8;
    }
    bytes[offset..]
        .iter()
        .position(|&b| b == 0)
        .map(|i| i + offset)
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
    fn finds_the_first_nul_at_every_position() {
        for len in 0..40 {
            for at in 0..len {
                let mut v = vec![0xffu8; len];
                v[at] = 0;
                if at + 3 < len {
                    v[at + 3] = 0;
                }
                assert_eq!(memchr0(&v), Some(at), "len {len} at {at}");
                // Bytes 0x80..0xff and 0x01 around the NUL do not confuse it.
                let mut w: Vec<u8> = (0..len).map(|i| [1u8, 0x80, 0x81, 0x7f][i % 4]).collect();
                w[at] = 0;
                assert_eq!(memchr0(&w), Some(at), "len {len} at {at}");
            }
            assert_eq!(memchr0(&vec![0x80u8; len]), None);
            assert_eq!(memchr0(&vec![1u8; len]), None);
        }
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
