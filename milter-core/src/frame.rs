//! Packet framing: a 4-byte big-endian length, a code byte, a payload.
//!
//! [`decode_frame`] is the stateless entry point (it reports how many bytes it
//! consumed, or that it needs more); [`FrameDecoder`] buffers a byte stream and
//! pops whole frames; the `encode_*` functions append packets to a buffer.

use crate::error::DecodeError;
use crate::limits::{DEFAULT_MAX_PAYLOAD, LEN_BYTES};

/// One packet: its code byte and its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The command or reply code.
    pub code: u8,
    /// The bytes after the code.
    pub payload: &'a [u8],
}

/// Decodes one frame from the front of `bytes`.
///
/// Returns `Ok(None)` when more bytes are needed, `Ok(Some((frame, consumed)))`
/// otherwise. The length prefix is checked against `max_payload` before anything
/// else, so an oversized frame is refused as soon as its first four bytes arrive.
///
/// ```
/// use milter_core::frame::decode_frame;
/// let bytes = [0, 0, 0, 1, b'c', 0xff];
/// let (frame, used) = decode_frame(&bytes, 65535).unwrap().unwrap();
/// assert_eq!((frame.code, frame.payload, used), (b'c', &[][..], 5));
/// assert!(decode_frame(&bytes[..3], 65535).unwrap().is_none());
/// ```
pub fn decode_frame(
    bytes: &[u8],
    max_payload: usize,
) -> Result<Option<(Frame<'_>, usize)>, DecodeError> {
    let Some(len) = frame_len(bytes, max_payload)? else {
        return Ok(None);
    };
    let total = LEN_BYTES + len;
    if bytes.len() < total {
        return Ok(None);
    }
    let frame = Frame {
        code: bytes[LEN_BYTES],
        payload: &bytes[LEN_BYTES + 1..total],
    };
    Ok(Some((frame, total)))
}

/// Reads and checks the length prefix: `Ok(Some(len))` where `len` counts the
/// code byte and the payload.
fn frame_len(bytes: &[u8], max_payload: usize) -> Result<Option<usize>, DecodeError> {
    if bytes.len() < LEN_BYTES {
        return Ok(None);
    }
    let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if len == 0 {
        return Err(DecodeError::ZeroLength);
    }
    let payload = u64::from(len) - 1;
    if payload > max_payload as u64 {
        return Err(DecodeError::FrameTooLarge {
            payload,
            max: max_payload,
        });
    }
    Ok(Some(len as usize))
}

/// How much a [`FrameDecoder`] buffer grows per step when a frame is larger than
/// what is buffered: big enough that a 64 KiB body chunk takes one or two reads,
/// small enough that a peer announcing a large frame and sending nothing costs
/// little.
const GROW_STEP: usize = 64 * 1024;

/// Initial buffer capacity: the first read of a connection typically holds the
/// whole negotiation or a few small commands.
const INITIAL_CAPACITY: usize = 8 * 1024;

/// Room offered beyond the frame being assembled, for the small packets that
/// travel with it (Postfix sends a macro packet and its command in one write), so
/// that a macro packet plus a 64 KiB body chunk arrive in one read.
const SLACK: usize = 1024;

/// Buffers a byte stream and pops whole frames.
///
/// Feed it with [`FrameDecoder::push`] (or read straight into
/// [`FrameDecoder::spare`] and call [`FrameDecoder::commit`]), then call
/// [`FrameDecoder::next_frame`] until it returns `Ok(None)`.
///
/// ```
/// use milter_core::frame::FrameDecoder;
/// let mut d = FrameDecoder::new();
/// d.push(&[0, 0, 0, 2, b'H']);
/// assert!(d.next_frame().unwrap().is_none()); // need more
/// d.push(&[0, 0, 0, 0, 1, b'A']);
/// let f = d.next_frame().unwrap().unwrap();
/// assert_eq!((f.code, f.payload), (b'H', &[0u8][..]));
/// let f = d.next_frame().unwrap().unwrap();
/// assert_eq!(f.code, b'A');
/// assert!(d.next_frame().unwrap().is_none());
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// The largest frame seen so far (bounded by one growth step), so that later
    /// reads offer room for one like it in a single read.
    largest: usize,
    /// Start of the unconsumed bytes.
    start: usize,
    /// End of the valid bytes.
    end: usize,
    max_payload: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder accepting payloads up to [`DEFAULT_MAX_PAYLOAD`].
    pub fn new() -> Self {
        Self::with_max_payload(DEFAULT_MAX_PAYLOAD)
    }

    /// A decoder accepting payloads up to `max_payload` bytes.
    pub fn with_max_payload(max_payload: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            largest: 0,
            start: 0,
            end: 0,
            max_payload,
        }
    }

    /// The configured maximum payload.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Appends bytes to the buffer.
    pub fn push(&mut self, bytes: &[u8]) {
        let spare = self.spare();
        if spare.len() >= bytes.len() {
            spare[..bytes.len()].copy_from_slice(bytes);
            self.commit(bytes.len());
        } else {
            self.compact();
            self.buf.truncate(self.end);
            self.buf.extend_from_slice(bytes);
            self.end = self.buf.len();
        }
    }

    /// Writable space at the end of the buffer, to read into directly; call
    /// [`FrameDecoder::commit`] with the number of bytes written.
    ///
    /// The space offered is at least 1 byte and at most what the frame being
    /// assembled still needs plus one growth step; it never grows by more than
    /// 64 KiB at a time, whatever a length prefix claims.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let (need, want) = self.wanted_space();
        // Move the bytes buffered to the front only when the rest of the frame
        // in progress does not fit behind them: a frame that fits is read in
        // place, without copying its first part (the slack is only a bonus).
        if self.buf.len() - self.end < need {
            self.compact();
            if self.buf.len() - self.end < want {
                let new_len = (self.end + want).max(INITIAL_CAPACITY);
                self.buf.resize(new_len, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes of [`FrameDecoder::spare`] as filled.
    ///
    /// # Panics
    /// If `n` is more than the spare space (a bug in the caller).
    pub fn commit(&mut self, n: usize) {
        assert!(self.end + n <= self.buf.len(), "commit beyond spare space");
        self.end += n;
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The bytes buffered and not yet returned as frames: what the peer sent when
    /// they do not frame (a peer that is not a milter, say).
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Whether [`FrameDecoder::next_frame`] would return something other than
    /// `Ok(None)`: a complete frame, or an error.
    pub fn frame_ready(&self) -> bool {
        !matches!(
            decode_frame(&self.buf[self.start..self.end], self.max_payload),
            Ok(None)
        )
    }

    /// Pops the next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, DecodeError> {
        let avail = &self.buf[self.start..self.end];
        match decode_frame(avail, self.max_payload)? {
            None => Ok(None),
            Some((_, used)) => {
                let at = self.start;
                self.start += used;
                self.largest = self.largest.max(used.min(GROW_STEP + LEN_BYTES + 1));
                let bytes = &self.buf[at..at + used];
                Ok(Some(Frame {
                    code: bytes[LEN_BYTES],
                    payload: &bytes[LEN_BYTES + 1..],
                }))
            }
        }
    }

    /// Releases memory beyond `keep` bytes once the buffer is drained, so one large
    /// frame does not pin a large buffer for the rest of a long connection.
    pub fn shrink_to(&mut self, keep: usize) {
        if self.start == self.end && self.buf.len() > keep {
            self.start = 0;
            self.end = 0;
            self.buf.truncate(keep);
            self.buf.shrink_to(keep);
        }
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// How much free space the next read needs (below which the buffer is
    /// compacted) and should have (what it grows to): `(need, want)`.
    fn wanted_space(&self) -> (usize, usize) {
        let avail = &self.buf[self.start..self.end];
        let have = avail.len();
        match frame_len(avail, self.max_payload) {
            Ok(Some(len)) if have < LEN_BYTES + len => {
                // Room for the rest of this frame, bounded by one growth step, plus
                // room for what usually travels with it.
                let rest = (LEN_BYTES + len - have).min(GROW_STEP);
                (rest, rest + SLACK)
            }
            // Between frames: room for a frame as large as the largest seen (a
            // connection that only ever sees small packets keeps a small buffer).
            _ => {
                let want = (INITIAL_CAPACITY / 2).max(self.largest + SLACK);
                (want, want)
            }
        }
    }
}

/// Appends a packet with the given code and payload parts (concatenated).
///
/// # Panics
/// If the payload is longer than `u32::MAX - 1` bytes (the encoders' callers bound
/// sizes far below that).
pub fn encode_frame(out: &mut Vec<u8>, code: u8, parts: &[&[u8]]) {
    let payload: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(payload + 1).expect("packet payload exceeds u32");
    out.reserve(LEN_BYTES + 1 + payload);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(code);
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// Appends a packet with an empty payload (`00 00 00 01 code`).
#[inline]
pub fn encode_empty(out: &mut Vec<u8>, code: u8) {
    out.extend_from_slice(&[0, 0, 0, 1, code]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_zero_length() {
        assert_eq!(
            decode_frame(&[0, 0, 0, 0, b'c'], 10),
            Err(DecodeError::ZeroLength)
        );
    }

    #[test]
    fn rejects_frame_over_limit_before_payload_arrives() {
        let e = decode_frame(&[0xff, 0xff, 0xff, 0xff], 65535).unwrap_err();
        assert_eq!(
            e,
            DecodeError::FrameTooLarge {
                payload: 0xffff_fffe,
                max: 65535
            }
        );
        // Exactly at the limit is fine (and needs more bytes).
        assert_eq!(decode_frame(&[0, 1, 0, 0], 65535), Ok(None));
        assert!(decode_frame(&[0, 1, 0, 1], 65535).is_err());
    }

    #[test]
    fn decoder_reassembles_split_frames() {
        let mut wire = Vec::new();
        encode_frame(&mut wire, b'H', &[b"mx.example\0"]);
        encode_empty(&mut wire, b'N');
        for split in 0..=wire.len() {
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            for part in [&wire[..split], &wire[split..]] {
                d.push(part);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push((f.code, f.payload.to_vec()));
                }
            }
            assert_eq!(got, vec![(b'H', b"mx.example\0".to_vec()), (b'N', vec![])]);
        }
    }

    #[test]
    fn spare_never_grows_by_the_claimed_length() {
        let mut d = FrameDecoder::new();
        d.push(&[0x00, 0x0f, 0xff, 0xff, b'L']); // claims ~1 MiB
        let spare = d.spare().len();
        assert!(spare <= GROW_STEP + SLACK + 16, "spare {spare}");
    }

    /// A decoder that has decoded one full 64 KiB body chunk, and the chunk.
    fn after_a_full_chunk() -> (FrameDecoder, Vec<u8>) {
        let mut d = FrameDecoder::new();
        let mut chunk = Vec::new();
        encode_frame(&mut chunk, b'B', &[&[b'x'; 65535]]);
        d.push(&chunk);
        assert_eq!(d.next_frame().unwrap().unwrap().payload.len(), 65535);
        (d, chunk)
    }

    #[test]
    fn offers_room_for_a_macro_packet_and_a_large_chunk_after_seeing_one() {
        let (mut d, wire) = after_a_full_chunk();
        // Now a D packet plus another full chunk fit in the space offered.
        assert!(d.spare().len() >= 20 + wire.len(), "{}", d.spare().len());
        // A decoder that saw only small frames keeps a small buffer.
        let mut small = FrameDecoder::new();
        small.push(&[0, 0, 0, 1, b'c']);
        assert!(small.next_frame().unwrap().is_some());
        assert!(small.spare().len() <= INITIAL_CAPACITY);
    }

    #[test]
    fn a_chunk_that_fits_behind_a_macro_packet_is_not_moved() {
        let (mut d, chunk) = after_a_full_chunk();
        // A macro packet and the first part of the next chunk in one read.
        let mut wire = Vec::new();
        encode_frame(&mut wire, b'D', &[b"B", b"i\0QUEUEID\0"]);
        wire.extend_from_slice(&chunk[..30_000]);
        d.push(&wire);
        assert_eq!(d.next_frame().unwrap().unwrap().code, b'D');
        assert!(d.next_frame().unwrap().is_none());
        let before = d.start;
        let spare = d.spare().len();
        assert_eq!(d.start, before, "the partial chunk was moved");
        assert!(spare >= chunk.len() - 30_000, "spare {spare}");
        let rest = &chunk[30_000..];
        d.spare()[..rest.len()].copy_from_slice(rest);
        d.commit(rest.len());
        assert_eq!(d.next_frame().unwrap().unwrap().payload.len(), 65535);
    }

    #[test]
    fn reads_into_spare_space() {
        let mut d = FrameDecoder::new();
        let bytes = [0, 0, 0, 1, b'c'];
        let spare = d.spare();
        spare[..5].copy_from_slice(&bytes);
        d.commit(5);
        assert_eq!(d.next_frame().unwrap().unwrap().code, b'c');
        assert_eq!(d.buffered(), 0);
    }
}
