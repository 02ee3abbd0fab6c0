//! The socket under a client: TCP or Unix, with timeouts set only when they change.

use super::error::ClientError;
use crate::SocketSpec;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// A connected socket a [`Client`](super::Client) can talk over.
///
/// Built by [`ClientBuilder::open`](super::ClientBuilder::open), or from a stream the caller
/// made (`UnixStream::pair()` in a test) with `Stream::from`.
///
/// ```
/// use milter_blocking::client::{Client, Stream};
/// use std::io::Write;
/// use std::os::unix::net::UnixStream;
///
/// // A milter played by hand: it answers the negotiation with version 6, no
/// // actions, every stage wanted.
/// let (mta, mut milter) = UnixStream::pair()?;
/// milter.write_all(b"\0\0\0\x0dO\0\0\0\x06\0\0\0\0\0\0\0\0")?;
/// let client = Client::builder().over_stream(Stream::from(mta))?;
/// assert_eq!(client.negotiated().version, 6);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub enum Stream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix socket connection.
    Unix(UnixStream),
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Self {
        Stream::Tcp(s)
    }
}

impl From<UnixStream> for Stream {
    fn from(s: UnixStream) -> Self {
        Stream::Unix(s)
    }
}

/// A TCP connect to a port of this host that nothing listens on can succeed
/// by connecting the socket to itself, when the kernel happens to pick the
/// destination port as the source port (TCP's simultaneous open). The peer is
/// then our own socket: refused, as it would have been a moment earlier.
fn refuse_self_connection(s: &TcpStream) -> io::Result<()> {
    if s.local_addr()? == s.peer_addr()? {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "connected to itself: nothing listens on the port",
        ));
    }
    Ok(())
}

impl Stream {
    pub(crate) fn connect(spec: &SocketSpec, timeout: Duration) -> io::Result<Stream> {
        match spec {
            SocketSpec::Inet(addr) => {
                let s = TcpStream::connect_timeout(addr, timeout)?;
                refuse_self_connection(&s)?;
                // Each exchange is one write; without this, Nagle holds a second
                // small write until the first is acknowledged.
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
            SocketSpec::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path)?)),
        }
    }

    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }

    pub(crate) fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(t),
            Stream::Unix(s) => s.set_write_timeout(t),
        }
    }

    pub(crate) fn shutdown(&self) {
        // Best effort: the peer may already be gone.
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Something [`Client::connect`](super::Client::connect) can connect to: a
/// [`SocketSpec`], or a string that parses as one (`"inet:7357@127.0.0.1"`,
/// `"inet6:7357@::1"`, `"unix:/run/milter.sock"`).
pub trait ConnectTarget {
    /// The socket spec.
    fn to_spec(&self) -> Result<SocketSpec, ClientError>;
}

impl ConnectTarget for SocketSpec {
    fn to_spec(&self) -> Result<SocketSpec, ClientError> {
        Ok(self.clone())
    }
}

impl ConnectTarget for &SocketSpec {
    fn to_spec(&self) -> Result<SocketSpec, ClientError> {
        Ok((*self).clone())
    }
}

impl ConnectTarget for str {
    fn to_spec(&self) -> Result<SocketSpec, ClientError> {
        self.parse()
            .map_err(|e: crate::SocketSpecError| ClientError::Misuse(e.to_string()))
    }
}

impl ConnectTarget for &str {
    fn to_spec(&self) -> Result<SocketSpec, ClientError> {
        (**self).to_spec()
    }
}

impl ConnectTarget for String {
    fn to_spec(&self) -> Result<SocketSpec, ClientError> {
        self.as_str().to_spec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Socket, Type};
    use std::net::SocketAddr;

    #[test]
    fn a_socket_connected_to_itself_is_refused() {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&any.into()).unwrap();
        let own = socket.local_addr().unwrap();
        // Nothing listens on the port: the connect opens the socket to itself.
        socket.connect(&own).unwrap();
        let stream: TcpStream = socket.into();
        let e = refuse_self_connection(&stream).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn a_connection_to_a_listener_is_kept() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        refuse_self_connection(&stream).unwrap();
    }
}
