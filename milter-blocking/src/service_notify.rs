//! Telling the service manager the server's state (`sd_notify(3)`'s protocol:
//! one datagram to the Unix socket named by `NOTIFY_SOCKET`): `READY=1` once
//! the server listens, `STOPPING=1` when its shutdown begins. Nothing is sent
//! when `NOTIFY_SOCKET` is unset (not started by systemd with `Type=notify`).

use std::io;
use std::os::unix::net::UnixDatagram;

/// Sends `state` to the service manager if it asked for notifications; a
/// failure is logged (the server runs on either way).
pub(crate) fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&target.to_string_lossy(), state) {
        log::warn!("cannot notify the service manager ({state}) at NOTIFY_SOCKET: {e}");
    }
}

fn send(target: &str, state: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    if let Some(name) = target.strip_prefix('@') {
        send_abstract(&socket, name, state)
    } else {
        socket.send_to(state.as_bytes(), target).map(drop)
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(socket: &UnixDatagram, name: &str, state: &str) -> io::Result<()> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    socket.send_to_addr(state.as_bytes(), &addr).map(drop)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_: &UnixDatagram, _: &str, _: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket addresses exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_to_an_abstract_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("milter-notify-test-{}", std::process::id());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let manager = UnixDatagram::bind_addr(&addr).unwrap();
            send(&format!("@{name}"), "STOPPING=1").unwrap();
            let n = manager.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"STOPPING=1");
        }
        assert!(send(dir.path().join("nobody").to_str().unwrap(), "READY=1").is_err());
    }
}
