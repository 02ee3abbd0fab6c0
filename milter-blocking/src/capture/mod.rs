//! Bounded capture of the message as received: headers with their original
//! spacing and folding, in order, and the body, in memory up to a limit and in a
//! temporary file beyond it.
//!
//! What it is for: anything that needs the message bytes as the sender wrote
//! them (DKIM and ARC verification, archiving, a content scanner that reads a
//! stream) without letting a 50 MB attachment cost 50 MB of memory per
//! connection.
//!
//! - **Headers** are kept as `Name:value` lines with CRLF line ends, folds as
//!   CRLF + the original white space, in the order the MTA sent them. The milter
//!   must negotiate `HDR_LEADSPC` (`#[milter(options(header_leading_space))]`, or
//!   `optional_options` to run with MTAs that do not offer it) for the value to
//!   keep its exact leading white space; without it the MTA has removed one
//!   space, the capture puts one back and [`MessageCapture::headers_exact`] says
//!   `false`. Headers always stay in memory, charged to the budget, and are
//!   limited per message ([`CaptureOptions::max_header_bytes`]).
//! - **The body** stays in memory while the message is under
//!   [`CaptureOptions::memory_per_message`] and the process-wide
//!   [`CaptureBudget`] has room; everything after that goes, in order, to an
//!   anonymous temporary file (removed by the system when the capture is
//!   dropped, even if the process dies). With [`BodyMode::Discard`] the body is
//!   only counted: the milter streams the chunks wherever it wants (a hash, say)
//!   and nothing is kept.
//! - [`MessageCapture::reader`] streams the captured message back (headers, the
//!   empty line, the body) without loading a spilled body into memory.
//!
//! As a per-message field it is reset (memory returned, file removed) before
//! every message and after every message ends:
//!
//! ```
//! use milter_blocking::capture::MessageCapture;
//! use milter_blocking::{handlers, Context, EomContext, HandlerResult, Header, Milter, Status};
//! use std::io::Read;
//!
//! #[derive(Milter, Default)]
//! #[milter(options(header_leading_space))]
//! struct Archive {
//!     #[milter(per_message)]
//!     capture: MessageCapture,
//! }
//!
//! #[handlers]
//! impl Milter for Archive {
//!     fn header(&mut self, ctx: &mut Context<'_>, h: &Header<'_>) -> HandlerResult {
//!         self.capture.header(ctx, h)?;
//!         Ok(Status::Continue)
//!     }
//!
//!     fn body(&mut self, _ctx: &mut Context<'_>, chunk: &[u8]) -> HandlerResult {
//!         self.capture.body(chunk)?;
//!         Ok(Status::Continue)
//!     }
//!
//!     fn eom(&mut self, _ctx: &mut EomContext<'_, Self>) -> HandlerResult {
//!         let mut message = self.capture.reader();
//!         let mut sink = std::io::sink(); // a file, a socket, a scanner...
//!         std::io::copy(&mut message, &mut sink)?;
//!         Ok(Status::Continue)
//!     }
//! }
//! ```
//!
//! A capture with other options is built by the milter's factory and cleared
//! by the milter ([`MessageCapture::clear`]) at end of message and abort; or
//! wrapped in a type whose `Default` sets the options. Headers only, for a milter
//! that hashes the body as it streams past:
//!
//! ```
//! use milter_blocking::capture::{BodyMode, CaptureOptions, MessageCapture};
//! use milter_blocking::Header;
//!
//! let mut c = MessageCapture::new(CaptureOptions::default().body(BodyMode::Discard));
//! c.record_header(&Header { name: b"Subject", value: b" hi" }, true).unwrap();
//! c.body(b"not kept\r\n").unwrap();
//! assert_eq!(c.header_block(), b"Subject: hi\r\n");
//! assert_eq!(c.body_len(), 10);
//! assert!(c.memory_used() < 100); // the header block only
//! ```

mod budget;
mod reader;
mod spool;

pub use budget::{CaptureBudget, DEFAULT_BUDGET};
pub use reader::MessageReader;

use crate::context::Context;
use milter_core::{Header, ProtocolOpts};
use spool::Spool;
use std::fmt;
use std::path::PathBuf;

/// The default [`CaptureOptions::memory_per_message`]: 1 MiB.
pub const DEFAULT_MEMORY_PER_MESSAGE: usize = 1024 * 1024;

/// The default [`CaptureOptions::max_header_bytes`]: 1 MiB (Postfix allows
/// 100 KiB per header by default, Sendmail 32 KiB for all of them).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 1024 * 1024;

/// What a capture does with the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyMode {
    /// Keep it (memory, then the temporary file).
    #[default]
    Keep,
    /// Count it only; the milter streams the chunks itself.
    Discard,
}

/// How a [`MessageCapture`] keeps a message.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    budget: &'static CaptureBudget,
    memory_per_message: usize,
    max_header_bytes: usize,
    body: BodyMode,
    spool_dir: Option<PathBuf>,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            budget: CaptureBudget::global(),
            memory_per_message: DEFAULT_MEMORY_PER_MESSAGE,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            body: BodyMode::Keep,
            spool_dir: None,
        }
    }
}

impl CaptureOptions {
    /// The budget shared with other captures (default [`CaptureBudget::global`]).
    pub fn budget(mut self, budget: &'static CaptureBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Most body bytes one message keeps in memory (default
    /// [`DEFAULT_MEMORY_PER_MESSAGE`]); 0 sends every body byte to the file.
    pub fn memory_per_message(mut self, bytes: usize) -> Self {
        self.memory_per_message = bytes;
        self
    }

    /// Most header bytes one message may have (default
    /// [`DEFAULT_MAX_HEADER_BYTES`]); a header past it is an error.
    pub fn max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes;
        self
    }

    /// Keep or only count the body (default [`BodyMode::Keep`]).
    pub fn body(mut self, mode: BodyMode) -> Self {
        self.body = mode;
        self
    }

    /// Where the temporary files go (default: the system's temporary directory,
    /// `TMPDIR` or `/tmp`).
    pub fn spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = Some(dir.into());
        self
    }
}

/// An error while capturing.
#[derive(Debug)]
#[non_exhaustive]
pub enum CaptureError {
    /// The headers add up to more than [`CaptureOptions::max_header_bytes`].
    HeadersTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The temporary file could not be created or written.
    Spool(std::io::Error),
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureError::HeadersTooLarge { limit } => {
                write!(f, "message capture: the headers exceed {limit} bytes")
            }
            CaptureError::Spool(e) => {
                write!(f, "message capture: writing the temporary file failed: {e}")
            }
        }
    }
}

impl std::error::Error for CaptureError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CaptureError::Spool(e) => Some(e),
            CaptureError::HeadersTooLarge { .. } => None,
        }
    }
}

/// One captured header: the name and the value exactly as in the message
/// (everything after the colon, folds as CRLF + white space, without the final
/// CRLF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapturedHeader<'a> {
    /// The name, without the colon.
    pub name: &'a [u8],
    /// The value after the colon, leading white space included.
    pub value: &'a [u8],
}

/// Where one header lies in the header block.
#[derive(Debug, Clone, Copy)]
struct HeaderSpan {
    start: u32,
    colon: u32,
    end: u32,
}

/// The message as received, bounded in memory. See the [module](self) docs.
#[derive(Debug)]
pub struct MessageCapture {
    options: CaptureOptions,
    /// `Name:value\r\n` for every header, back to back.
    header_block: Vec<u8>,
    spans: Vec<HeaderSpan>,
    /// Whether every header so far arrived with its leading space intact.
    exact: bool,
    /// The body's first bytes, in chunks of exactly the size received (so that
    /// the memory counted is the memory held).
    memory: Vec<Box<[u8]>>,
    memory_len: usize,
    /// The rest of the body, once memory ran out.
    spool: Option<Spool>,
    body_len: u64,
    /// Bytes charged to the budget.
    charged: usize,
}

impl Default for MessageCapture {
    fn default() -> Self {
        MessageCapture::new(CaptureOptions::default())
    }
}

impl Drop for MessageCapture {
    fn drop(&mut self) {
        self.options.budget.release(self.charged);
    }
}

impl MessageCapture {
    /// An empty capture. Allocates nothing until data arrives.
    pub fn new(options: CaptureOptions) -> MessageCapture {
        MessageCapture {
            options,
            header_block: Vec::new(),
            spans: Vec::new(),
            exact: true,
            memory: Vec::new(),
            memory_len: 0,
            spool: None,
            body_len: 0,
            charged: 0,
        }
    }

    /// The options.
    pub fn options(&self) -> &CaptureOptions {
        &self.options
    }

    /// Forgets the message: memory goes back to the budget, the temporary file
    /// is removed. The options stay.
    pub fn clear(&mut self) {
        let options = self.options.clone();
        *self = MessageCapture::new(options);
    }

    /// Records a header the MTA sent, reading from `ctx` whether `HDR_LEADSPC`
    /// was negotiated.
    pub fn header(&mut self, ctx: &Context<'_>, header: &Header<'_>) -> Result<(), CaptureError> {
        let leading_space = ctx
            .negotiated()
            .is_some_and(|n| n.protocol.contains(ProtocolOpts::HEADER_LEADING_SPACE));
        self.record_header(header, leading_space)
    }

    /// Records a header as the MTA sent it: `leading_space` tells whether
    /// `HDR_LEADSPC` was negotiated (the value then starts with its original
    /// white space; otherwise the MTA removed one space, which is put back).
    /// Folds may come as LF + white space (as MTAs send them) or CRLF; both are
    /// kept as CRLF.
    pub fn record_header(
        &mut self,
        header: &Header<'_>,
        leading_space: bool,
    ) -> Result<(), CaptureError> {
        let added_space = usize::from(!leading_space);
        let needed = header.name.len() + 1 + added_space + header.value.len() + 2;
        let limit = self.options.max_header_bytes.min(u32::MAX as usize);
        // A bare LF in a fold grows by one byte; count the worst case first.
        let lfs = header.value.iter().filter(|&&b| b == b'\n').count();
        if self.header_block.len() + needed + lfs > limit {
            return Err(CaptureError::HeadersTooLarge {
                limit: self.options.max_header_bytes,
            });
        }
        if !leading_space {
            self.exact = false;
        }
        let before = self.header_block.capacity();
        let start = self.header_block.len() as u32;
        self.header_block.extend_from_slice(header.name);
        let colon = self.header_block.len() as u32;
        self.header_block.push(b':');
        if !leading_space {
            self.header_block.push(b' ');
        }
        let mut previous = 0u8;
        for &b in header.value {
            if b == b'\n' && previous != b'\r' {
                self.header_block.push(b'\r');
            }
            self.header_block.push(b);
            previous = b;
        }
        self.header_block.extend_from_slice(b"\r\n");
        self.spans.push(HeaderSpan {
            start,
            colon,
            end: self.header_block.len() as u32,
        });
        let grown = self.header_block.capacity() - before;
        self.options.budget.charge(grown);
        self.charged += grown;
        Ok(())
    }

    /// Records one body chunk: in memory while the message is under its limit
    /// and the budget has room, else in the temporary file. With
    /// [`BodyMode::Discard`], only counts it.
    pub fn body(&mut self, chunk: &[u8]) -> Result<(), CaptureError> {
        self.body_len += chunk.len() as u64;
        if self.options.body == BodyMode::Discard || chunk.is_empty() {
            return Ok(());
        }
        if self.spool.is_none()
            && self.memory_len + chunk.len() <= self.options.memory_per_message
            && self.options.budget.try_reserve(chunk.len())
        {
            self.charged += chunk.len();
            self.memory_len += chunk.len();
            self.memory.push(chunk.into());
            return Ok(());
        }
        let spool = match &mut self.spool {
            Some(s) => s,
            None => self.spool.insert(
                Spool::create(self.options.spool_dir.as_deref()).map_err(CaptureError::Spool)?,
            ),
        };
        spool.append(chunk).map_err(CaptureError::Spool)
    }

    /// The header block as received: every header as `Name:value` CRLF, in
    /// order, without the empty line that ends it.
    pub fn header_block(&self) -> &[u8] {
        &self.header_block
    }

    /// The headers, in order.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = CapturedHeader<'_>> + '_ {
        self.spans.iter().map(|s| CapturedHeader {
            name: &self.header_block[s.start as usize..s.colon as usize],
            value: &self.header_block[s.colon as usize + 1..s.end as usize - 2],
        })
    }

    /// Whether every header came with its leading white space
    /// (`HDR_LEADSPC`), so the header block is byte for byte the message's.
    pub fn headers_exact(&self) -> bool {
        self.exact
    }

    /// Body bytes received (kept or not).
    pub fn body_len(&self) -> u64 {
        self.body_len
    }

    /// Whether part of the body went to the temporary file.
    pub fn is_spilled(&self) -> bool {
        self.spool.is_some()
    }

    /// Body bytes in the temporary file.
    pub fn spilled_bytes(&self) -> u64 {
        self.spool.as_ref().map_or(0, Spool::len)
    }

    /// Bytes this capture holds in memory, as charged to the budget.
    pub fn memory_used(&self) -> usize {
        self.charged
    }

    /// A reader of the whole message: the header block, the empty line, the
    /// body kept (nothing with [`BodyMode::Discard`]). A spilled body is read
    /// from the file as the reader goes.
    pub fn reader(&self) -> MessageReader<'_> {
        MessageReader::new(&self.header_block, &self.memory, self.spool.as_ref())
    }
}

#[cfg(test)]
mod tests;
