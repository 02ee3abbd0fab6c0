//! Listening sockets (TCP and Unix) built with socket2, and the accepted streams.

use crate::socket_spec::SocketSpec;
use socket2::{Domain, SockAddr, Socket, Type};
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long a blocking `accept` waits before the server checks for shutdown.
/// Accept on Linux honours the socket's receive timeout.
pub(crate) const ACCEPT_POLL: Duration = Duration::from_millis(200);

/// Options for creating a listener.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// The `listen(2)` backlog (libmilter's default is 20; MTAs open a connection
    /// per SMTP session, so a busy host wants more).
    pub backlog: i32,
    /// Permissions of a Unix socket file (e.g. `0o660` so that the MTA's group can
    /// connect). `None` keeps what the umask gives.
    pub unix_mode: Option<u32>,
    /// Owner (uid) of a Unix socket file, if it should change
    /// ([`user_id`](crate::user_id) finds it by name).
    pub unix_owner: Option<u32>,
    /// Group (gid) of a Unix socket file, if it should change
    /// ([`group_id`](crate::group_id) finds it by name, e.g. `postfix`).
    pub unix_group: Option<u32>,
    /// Remove a stale Unix socket file at start: only a socket whose connection
    /// attempt is refused (nobody listens). Anything else at the path, or a
    /// connection attempt that fails otherwise (permission denied...), is
    /// reported ([`ExistingSocketFile`]) and nothing is removed.
    pub remove_stale: bool,
    /// TCP keepalive idle time for accepted connections, so that a connection
    /// whose MTA vanished (host down, no FIN) is noticed: probes start after this
    /// long without traffic and repeat every 10 s. `None` keeps the system's
    /// defaults (SO_KEEPALIVE is always on, as in libmilter).
    pub tcp_keepalive: Option<Duration>,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            backlog: 1024,
            unix_mode: None,
            unix_owner: None,
            unix_group: None,
            remove_stale: true,
            tcp_keepalive: Some(Duration::from_secs(300)),
        }
    }
}

/// A listening socket.
#[derive(Debug)]
pub struct Listener {
    socket: Socket,
    kind: ListenerKind,
    keepalive: Option<Duration>,
}

#[derive(Debug)]
enum ListenerKind {
    Tcp(SocketAddr),
    /// A Unix socket we created: removed on drop if it is still ours.
    Unix {
        path: PathBuf,
        ino: Option<(u64, u64)>,
    },
}

impl Listener {
    /// Binds a listener for a socket spec.
    pub fn bind(spec: &SocketSpec, opts: &ListenOptions) -> io::Result<Listener> {
        match spec {
            SocketSpec::Inet(addr) => {
                let socket = Socket::new(Domain::for_address(*addr), Type::STREAM, None)?;
                socket.set_reuse_address(true)?;
                if addr.is_ipv6() {
                    // inet6 means IPv6; a separate inet listener can share the port.
                    socket.set_only_v6(true)?;
                }
                socket
                    .bind(&SockAddr::from(*addr))
                    .map_err(|e| with_context(e, &format!("binding {spec}")))?;
                socket.listen(opts.backlog)?;
                let local = socket
                    .local_addr()?
                    .as_socket()
                    .ok_or_else(|| io::Error::other("not an IP socket"))?;
                Ok(Listener {
                    socket,
                    kind: ListenerKind::Tcp(local),
                    keepalive: opts.tcp_keepalive,
                })
            }
            SocketSpec::Unix(path) => bind_unix(path, opts),
        }
    }

    /// Wraps a ready `std` TCP listener.
    pub fn from_tcp(listener: TcpListener) -> io::Result<Listener> {
        let local = listener.local_addr()?;
        Ok(Listener {
            socket: Socket::from(listener),
            kind: ListenerKind::Tcp(local),
            keepalive: ListenOptions::default().tcp_keepalive,
        })
    }

    /// Wraps a ready `std` Unix listener. Its file is not removed on drop.
    pub fn from_unix(listener: UnixListener) -> io::Result<Listener> {
        let path = listener
            .local_addr()?
            .as_pathname()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Ok(Listener {
            socket: Socket::from(listener),
            kind: ListenerKind::Unix { path, ino: None },
            keepalive: None,
        })
    }

    /// Wraps a listening socket of either kind (used for sockets passed in by the
    /// service manager). Its file, if a Unix socket, is not removed on drop.
    pub(crate) fn from_socket(socket: Socket) -> io::Result<Listener> {
        let local = socket.local_addr()?;
        let kind = if let Some(addr) = local.as_socket() {
            ListenerKind::Tcp(addr)
        } else {
            let path = local
                .as_pathname()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            ListenerKind::Unix { path, ino: None }
        };
        Ok(Listener {
            socket,
            kind,
            keepalive: ListenOptions::default().tcp_keepalive,
        })
    }

    /// The address this listener is bound to, as a spec a client can connect to.
    pub fn local_spec(&self) -> SocketSpec {
        match &self.kind {
            ListenerKind::Tcp(a) => SocketSpec::Inet(*a),
            ListenerKind::Unix { path, .. } => SocketSpec::Unix(path.clone()),
        }
    }

    pub(crate) fn set_accept_timeout(&self, t: Duration) -> io::Result<()> {
        self.socket.set_read_timeout(Some(t))
    }

    /// Accepts one connection; `Ok(None)` when the accept timeout passed.
    pub(crate) fn accept(&self) -> io::Result<Option<Stream>> {
        match self.socket.accept() {
            Ok((sock, addr)) => {
                sock.set_read_timeout(None)?;
                sock.set_nonblocking(false)?;
                match &self.kind {
                    ListenerKind::Tcp(_) => {
                        sock.set_tcp_nodelay(true)?;
                        sock.set_keepalive(true)?;
                        if let Some(idle) = self.keepalive {
                            let ka = socket2::TcpKeepalive::new()
                                .with_time(idle)
                                .with_interval(Duration::from_secs(10));
                            sock.set_tcp_keepalive(&ka)?;
                        }
                        let stream: TcpStream = sock.into();
                        Ok(Some(Stream::tcp(stream, addr.as_socket())))
                    }
                    ListenerKind::Unix { .. } => Ok(Some(Stream::unix(sock.into()))),
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let ListenerKind::Unix {
            path,
            ino: Some(ino),
        } = &self.kind
        {
            // Remove the socket file only if it is still the one we created.
            if let Ok(meta) = fs::symlink_metadata(path) {
                if meta.file_type().is_socket() && (meta.dev(), meta.ino()) == *ino {
                    let _ = fs::remove_file(path);
                }
            }
        }
    }
}

fn with_context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Why a file already at a Unix socket path was left alone at start. It is
/// the inner error of the `io::Error` that [`Listener::bind`] returns
/// (`io::Error::get_ref` and `downcast_ref` reach it).
#[derive(Debug)]
#[non_exhaustive]
pub enum ExistingSocketFile {
    /// The path is not a socket (a file, a directory, a symlink, a FIFO...).
    NotASocket(PathBuf),
    /// A socket at the path, and `ListenOptions::remove_stale` is off.
    RemovalDisabled(PathBuf),
    /// Another process accepts connections on the socket.
    Live(PathBuf),
    /// Connecting to the socket failed otherwise than "connection refused"
    /// (permission denied, the file vanished...): whether it is in use cannot
    /// be told, so it is left alone.
    Unverified {
        /// The socket path.
        path: PathBuf,
        /// Why connecting to it failed.
        source: io::Error,
    },
}

impl std::fmt::Display for ExistingSocketFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExistingSocketFile::NotASocket(p) => write!(
                f,
                "{} exists and is not a socket; refusing to remove it",
                p.display()
            ),
            ExistingSocketFile::RemovalDisabled(p) => {
                write!(f, "socket {} already exists", p.display())
            }
            ExistingSocketFile::Live(p) => write!(
                f,
                "another process is listening on {}; not removing it",
                p.display()
            ),
            ExistingSocketFile::Unverified { path, source } => write!(
                f,
                "cannot tell whether socket {} is in use (connecting to it failed: {source}); \
                 not removing it",
                path.display()
            ),
        }
    }
}

impl std::error::Error for ExistingSocketFile {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ExistingSocketFile::Unverified { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<ExistingSocketFile> for io::Error {
    fn from(e: ExistingSocketFile) -> io::Error {
        let kind = match e {
            ExistingSocketFile::NotASocket(_) => io::ErrorKind::AlreadyExists,
            _ => io::ErrorKind::AddrInUse,
        };
        io::Error::new(kind, e)
    }
}

/// Whether the socket at `path` is stale: only "connection refused" (nobody
/// listens) says so. Any other failure is reported, and the file left alone:
/// a second instance running as another user gets "permission denied" on a
/// live socket, and must not take its path.
fn check_stale(path: &Path) -> Result<(), ExistingSocketFile> {
    stale_verdict(path, probe(path))
}

/// Connects to the socket without blocking (a listener whose backlog is full
/// answers "try again" instead of keeping the start waiting).
fn probe(path: &Path) -> io::Result<()> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.connect(&SockAddr::unix(path)?)
}

/// The verdict on a probe's result (see [`check_stale`]).
fn stale_verdict(path: &Path, probed: io::Result<()>) -> Result<(), ExistingSocketFile> {
    match probed {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
        // Accepted, or queued behind a full backlog: somebody listens.
        Ok(()) => Err(ExistingSocketFile::Live(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            Err(ExistingSocketFile::Live(path.to_path_buf()))
        }
        Err(source) => Err(ExistingSocketFile::Unverified {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn bind_unix(path: &Path, opts: &ListenOptions) -> io::Result<Listener> {
    match fs::symlink_metadata(path) {
        Ok(meta) => {
            if !meta.file_type().is_socket() {
                return Err(ExistingSocketFile::NotASocket(path.to_path_buf()).into());
            }
            if !opts.remove_stale {
                return Err(ExistingSocketFile::RemovalDisabled(path.to_path_buf()).into());
            }
            check_stale(path)?;
            fs::remove_file(path)
                .map_err(|e| with_context(e, &format!("removing stale {}", path.display())))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(with_context(e, &format!("checking {}", path.display()))),
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket
        .bind(&SockAddr::unix(path)?)
        .map_err(|e| with_context(e, &format!("binding unix:{}", path.display())))?;
    // From here on the file is ours: remove it again if anything fails.
    let finish = || -> io::Result<fs::Metadata> {
        if let Some(mode) = opts.unix_mode {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
        }
        if opts.unix_owner.is_some() || opts.unix_group.is_some() {
            std::os::unix::fs::lchown(path, opts.unix_owner, opts.unix_group)
                .map_err(|e| with_context(e, &format!("changing owner of {}", path.display())))?;
        }
        socket.listen(opts.backlog)?;
        fs::symlink_metadata(path)
    };
    let meta = match finish() {
        Ok(meta) => meta,
        Err(e) => {
            let _ = fs::remove_file(path);
            return Err(e);
        }
    };
    Ok(Listener {
        socket,
        kind: ListenerKind::Unix {
            path: path.to_path_buf(),
            ino: Some((meta.dev(), meta.ino())),
        },
        keepalive: None,
    })
}

/// An accepted connection: one socket, one descriptor, shared by the
/// connection's thread and the server's connection table.
///
/// Cloning shares the socket (no `dup`): the server can always shut down a
/// connection from outside, even when the process is out of descriptors, and a
/// connection costs one descriptor. The descriptor is closed when the last
/// clone is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Stream {
    socket: Arc<SharedSocket>,
    peer: Option<SocketAddr>,
}

#[derive(Debug)]
enum SharedSocket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub(crate) fn tcp(s: TcpStream, peer: Option<SocketAddr>) -> Stream {
        Stream {
            socket: Arc::new(SharedSocket::Tcp(s)),
            peer,
        }
    }

    pub(crate) fn unix(s: UnixStream) -> Stream {
        Stream {
            socket: Arc::new(SharedSocket::Unix(s)),
            peer: None,
        }
    }

    pub(crate) fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    pub(crate) fn set_timeouts(
        &self,
        read: Option<Duration>,
        write: Option<Duration>,
    ) -> io::Result<()> {
        match &*self.socket {
            SharedSocket::Tcp(s) => {
                s.set_read_timeout(read)?;
                s.set_write_timeout(write)
            }
            SharedSocket::Unix(s) => {
                s.set_read_timeout(read)?;
                s.set_write_timeout(write)
            }
        }
    }

    pub(crate) fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match &*self.socket {
            SharedSocket::Tcp(s) => s.set_nonblocking(on),
            SharedSocket::Unix(s) => s.set_nonblocking(on),
        }
    }

    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match &*self.socket {
            SharedSocket::Tcp(s) => s.shutdown(how),
            SharedSocket::Unix(s) => s.shutdown(how),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &*self.socket {
            SharedSocket::Tcp(s) => (&*s).read(buf),
            SharedSocket::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &*self.socket {
            SharedSocket::Tcp(s) => (&*s).write(buf),
            SharedSocket::Unix(s) => (&*s).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(e: io::ErrorKind) -> Result<(), ExistingSocketFile> {
        stale_verdict(Path::new("/run/m.sock"), Err(io::Error::from(e)))
    }

    #[test]
    fn only_connection_refused_makes_a_socket_stale() {
        assert!(verdict(io::ErrorKind::ConnectionRefused).is_ok());
        assert!(matches!(
            stale_verdict(Path::new("/run/m.sock"), Ok(())),
            Err(ExistingSocketFile::Live(_))
        ));
        assert!(matches!(
            verdict(io::ErrorKind::WouldBlock),
            Err(ExistingSocketFile::Live(_))
        ));
        for kind in [
            io::ErrorKind::PermissionDenied,
            io::ErrorKind::NotFound,
            io::ErrorKind::TimedOut,
            io::ErrorKind::Other,
        ] {
            let e = verdict(kind).unwrap_err();
            assert!(
                matches!(e, ExistingSocketFile::Unverified { .. }),
                "{kind:?}: {e}"
            );
            assert!(e.to_string().contains("not removing it"), "{e}");
        }
        let denied = stale_verdict(
            Path::new("/run/m.sock"),
            Err(io::Error::from_raw_os_error(13)),
        )
        .unwrap_err();
        assert_eq!(
            denied.to_string(),
            "cannot tell whether socket /run/m.sock is in use (connecting to it failed: \
             Permission denied (os error 13)); not removing it"
        );
    }
}
