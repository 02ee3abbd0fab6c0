//! The client's error type: whose fault it is, and during what.

use std::fmt;
use std::io;
use std::time::Duration;

/// What went wrong while talking to a milter.
///
/// Each variant says whose fault it is: the caller's ([`ClientError::Misuse`]), the
/// milter's ([`ClientError::Protocol`], [`ClientError::Disconnected`]), the clock's
/// ([`ClientError::Timeout`]) or the operating system's ([`ClientError::Connect`],
/// [`ClientError::Io`]). [`ClientError::kind`] gives the family without the details.
///
/// After any error but [`ClientError::Misuse`] the connection is unusable: further
/// calls fail with a misuse error that names the first failure.
///
/// ```
/// use milter_blocking::client::{Client, ErrorKind};
/// let err = Client::open("unix:/nonexistent/milter.sock").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Connect);
/// eprintln!("{err}"); // names the socket and the cause
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The caller used the client wrongly (a call after `quit`, a body chunk over
    /// 65535 bytes, a stage sent while a reply is due, a bad socket spec, ...).
    /// Nothing was sent.
    Misuse(String),
    /// The connection to the milter could not be made.
    Connect {
        /// The socket spec, as given.
        spec: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// The milter broke the protocol.
    Protocol {
        /// What the client was doing (`"reply to rcpt"`, `"negotiation"`, ...).
        during: String,
        /// What is wrong.
        reason: String,
        /// The start of the offending packet (code byte, then payload; at most 64
        /// bytes), or the raw bytes that do not form a packet.
        bytes: Vec<u8>,
    },
    /// The peer is not a milter: what it sent looks like another protocol
    /// (clamd, HTTP, SMTP, TLS, ...). Usually a wrong socket in the configuration.
    NotAMilter {
        /// What the client was doing.
        during: String,
        /// What the peer looks like (`clamd (it answered "UNKNOWN COMMAND")`).
        peer: String,
        /// The first bytes the peer sent (at most 64).
        bytes: Vec<u8>,
    },
    /// The milter closed the connection while a reply was due.
    Disconnected {
        /// What the client was doing.
        during: String,
    },
    /// The milter did not answer (or did not take the data) in time.
    Timeout {
        /// What the client was doing.
        during: String,
        /// The limit that was exceeded.
        after: Duration,
    },
    /// Reading from or writing to the socket failed.
    Io {
        /// What the client was doing.
        during: String,
        /// The operating system's error.
        source: io::Error,
    },
}

/// The family of a [`ClientError`], for callers that only branch on it (the
/// `milter-check` exit code, for one).
///
/// ```
/// use milter_blocking::client::{Client, ErrorKind};
/// // milter-check turns the kind into its exit status, say.
/// let status = match Client::open("unix:/nonexistent/milter.sock") {
///     Ok(_) => 0,
///     Err(e) => match e.kind() {
///         ErrorKind::Connect => 69,
///         ErrorKind::Timeout => 75,
///         _ => 70,
///     },
/// };
/// assert_eq!(status, 69);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`ClientError::Misuse`].
    Misuse,
    /// [`ClientError::Connect`].
    Connect,
    /// [`ClientError::Protocol`], [`ClientError::NotAMilter`] and
    /// [`ClientError::Disconnected`].
    Protocol,
    /// [`ClientError::Timeout`].
    Timeout,
    /// [`ClientError::Io`].
    Io,
}

impl ClientError {
    /// The family of this error.
    ///
    /// ```
    /// use milter_blocking::client::{Client, ErrorKind};
    /// let err = Client::open("unix:/nonexistent/milter.sock").unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Connect);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Misuse(_) => ErrorKind::Misuse,
            ClientError::Connect { .. } => ErrorKind::Connect,
            ClientError::Protocol { .. }
            | ClientError::NotAMilter { .. }
            | ClientError::Disconnected { .. } => ErrorKind::Protocol,
            ClientError::Timeout { .. } => ErrorKind::Timeout,
            ClientError::Io { .. } => ErrorKind::Io,
        }
    }

    /// The offending bytes of a protocol error (the first bytes a peer that is not
    /// a milter sent).
    ///
    /// ```
    /// use milter_blocking::client::Client;
    /// use std::io::Write;
    /// use std::os::unix::net::UnixStream;
    ///
    /// // A fake milter that answers the negotiation with an unknown reply `z`.
    /// let (mta, mut milter) = UnixStream::pair()?;
    /// milter.write_all(b"\0\0\0\x01z")?;
    /// let err = Client::builder().over_stream(mta).unwrap_err();
    /// println!("{err}: {:?}", err.offending_bytes());
    /// assert!(err.offending_bytes().is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn offending_bytes(&self) -> Option<&[u8]> {
        match self {
            ClientError::Protocol { bytes, .. } | ClientError::NotAMilter { bytes, .. } => {
                Some(bytes)
            }
            _ => None,
        }
    }

    pub(crate) fn misuse(msg: impl Into<String>) -> Self {
        ClientError::Misuse(msg.into())
    }

    /// Converts the core session's error, naming what the client was doing.
    pub(crate) fn from_core(e: milter_core::ClientError, during: &str) -> Self {
        match e {
            milter_core::ClientError::Misuse(m) => ClientError::Misuse(m),
            milter_core::ClientError::Protocol { reason, bytes } => ClientError::Protocol {
                during: during.to_string(),
                reason,
                bytes,
            },
            milter_core::ClientError::Decode(d) => ClientError::Protocol {
                during: during.to_string(),
                reason: d.to_string(),
                bytes: Vec::new(),
            },
            other => ClientError::Protocol {
                during: during.to_string(),
                reason: other.to_string(),
                bytes: Vec::new(),
            },
        }
    }

    /// Classifies an I/O error: a timeout or an I/O failure.
    pub(crate) fn from_io(e: io::Error, during: &str, limit: Option<Duration>) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout {
                during: during.to_string(),
                after: limit.unwrap_or_default(),
            },
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted => ClientError::Disconnected {
                during: format!("{during} ({e})"),
            },
            _ => ClientError::Io {
                during: during.to_string(),
                source: e,
            },
        }
    }

    /// A copy for remembering why the connection became unusable.
    pub(crate) fn summary(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Misuse(m) => write!(f, "client misuse: {m}"),
            ClientError::Connect { spec, source } => {
                write!(f, "cannot connect to {spec}: {source}")
            }
            ClientError::Protocol {
                during,
                reason,
                bytes,
            } => {
                write!(f, "milter broke the protocol during {during}: {reason}")?;
                if !bytes.is_empty() {
                    write!(f, " (bytes: {})", hex(bytes))?;
                }
                Ok(())
            }
            ClientError::NotAMilter {
                during,
                peer,
                bytes,
            } => write!(
                f,
                "the peer is not a milter: during {during} it answered like {peer} (bytes: {})",
                hex(bytes)
            ),
            ClientError::Disconnected { during } => {
                write!(f, "milter closed the connection during {during}")
            }
            ClientError::Timeout { during, after } => {
                write!(f, "milter timed out during {during} (after {after:?})")
            }
            ClientError::Io { during, source } => write!(f, "I/O error during {during}: {source}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Connect { source, .. } | ClientError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Renders bytes as space-separated hex pairs.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}
