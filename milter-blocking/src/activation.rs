//! Sockets passed in by the service manager (systemd socket activation:
//! `LISTEN_FDS` and `LISTEN_PID`, the protocol of `sd_listen_fds(3)`).

use crate::listener::Listener;
use socket2::Socket;
use std::io;

/// The first passed descriptor (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// Most descriptors accepted from `LISTEN_FDS`, a bound against a corrupt
/// environment.
const MAX_LISTEN_FDS: i32 = 64;

/// Takes the listening sockets the service manager passed to this process, if
/// any: `Ok(vec![])` when `LISTEN_FDS` is unset or `LISTEN_PID` names another
/// process. Like `sd_listen_fds(1)`, it removes the variables from the
/// environment so that child processes do not take the sockets too. Each socket
/// must be a listening TCP or Unix stream socket.
///
/// Call it once, early, before other code could have opened descriptors 3 and up
/// by other means.
pub fn take_listeners() -> io::Result<Vec<Listener>> {
    let Some(n) = passed_fds()? else {
        return Ok(Vec::new());
    };
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    let mut listeners = Vec::with_capacity(n as usize);
    for fd in LISTEN_FDS_START..LISTEN_FDS_START + n {
        let socket = adopt(fd)?;
        socket.set_cloexec(true)?;
        socket.set_nonblocking(false)?;
        if !socket.is_listener()? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("descriptor {fd} from LISTEN_FDS is not a listening socket"),
            ));
        }
        listeners.push(Listener::from_socket(socket)?);
    }
    Ok(listeners)
}

/// How many descriptors were passed to this process.
fn passed_fds() -> io::Result<Option<i32>> {
    let (Ok(pid), Ok(fds)) = (std::env::var("LISTEN_PID"), std::env::var("LISTEN_FDS")) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    match fds.trim().parse::<i32>() {
        Ok(n) if (0..=MAX_LISTEN_FDS).contains(&n) => Ok(Some(n)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("LISTEN_FDS={fds:?} is not a number from 0 to {MAX_LISTEN_FDS}"),
        )),
    }
}

/// Takes ownership of an inherited descriptor.
#[allow(unsafe_code)]
fn adopt(fd: i32) -> io::Result<Socket> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // Check that the descriptor is open before claiming it (fstat via a
    // borrowed duplicate would need unsafe too; /proc is enough on Linux and
    // everywhere systemd runs).
    if std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_err() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("LISTEN_FDS names descriptor {fd}, which is not open"),
        ));
    }
    // SAFETY: the service manager protocol hands descriptors LISTEN_FDS_START ..
    // LISTEN_FDS_START + LISTEN_FDS to this process (LISTEN_PID was checked
    // against our pid) for it to own; the descriptor is open (checked above), and
    // `take_listeners` removes the variables first, so no other caller in this
    // process adopts the same descriptor through this function. Nothing else in
    // this crate touches raw descriptors.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(Socket::from(owned))
}
