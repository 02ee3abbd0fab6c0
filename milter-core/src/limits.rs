//! Named bounds of the protocol and of this implementation.

/// Size of the length prefix of every packet (`MILTER_LEN_BYTES`).
pub const LEN_BYTES: usize = 4;

/// Size of the fixed part of an option negotiation packet (`MILTER_OPTLEN`):
/// version, actions and protocol flags, each a `u32`.
pub const OPTNEG_LEN: usize = 12;

/// Largest body chunk (`B`) and replacement-body chunk (`b`) anyone sends
/// (`MILTER_CHUNK_SIZE`). Every MTA expects chunks of at most this size, whatever
/// packet size was negotiated.
pub const MAX_BODY_CHUNK: usize = 65_535;

/// Largest payload libmilter sends or accepts without size negotiation
/// (`MILTER_MAX_DATA_SIZE`). Our server never *sends* a larger payload, because
/// libmilter-based peers and Sendmail refuse them.
pub const MAX_SEND_PAYLOAD: usize = 65_535;

/// Default largest payload the decoders *accept*: 1 MiB − 1, libmilter's largest
/// negotiable size (`MILTER_MDS_1M`).
///
/// Why not libmilter's unnegotiated 65535: Postfix sends every header as one `L`
/// packet and allows headers up to its `header_size_limit` (102400 bytes by default)
/// without any size negotiation, so a 64 KiB cap would break real mail. The limit is
/// checked against the length prefix before a single byte of the payload is
/// buffered, so a hostile length costs nothing; a frame is buffered only as its
/// bytes actually arrive.
pub const DEFAULT_MAX_PAYLOAD: usize = 1_048_575;

/// The highest protocol version this implementation speaks.
pub const PROTOCOL_VERSION: u32 = 6;

/// The lowest protocol version an MTA may offer (libmilter refuses 1 and 0).
pub const MIN_PROTOCOL_VERSION: u32 = 2;

/// Longest line of text in a custom SMTP reply, as libmilter enforces it.
pub const MAX_REPLY_LINE: usize = 980;

/// Most lines in a multi-line custom SMTP reply (`smfi_setmlreply`'s limit).
pub const MAX_REPLY_LINES: usize = 32;

/// Default most bytes of macro names and values one session holds, over all
/// its sets (real MTAs send a few hundred bytes per stage); see
/// [`MacroStore`](crate::MacroStore).
pub const DEFAULT_MAX_MACRO_BYTES: usize = 256 * 1024;

/// Most macros (name/value pairs) one session holds in indexed sets (those
/// over 512 bytes, 16 bytes of index per pair); smaller sets, searched pair
/// by pair, are bounded by their size alone.
pub const MAX_MACROS: usize = 4096;
