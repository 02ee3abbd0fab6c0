//! Safety of Unix socket files: whatever sits at the socket path, the server
//! removes it at start only if it is a stale socket (never a regular file, a
//! directory, a symlink, a FIFO, or a socket someone listens on), creates the
//! socket with the configured permissions, and at exit removes only the socket
//! it created (not a file that replaced it). Complements tests/server_sockets.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{watchdog, Mta, TestServer};
use milter_blocking::milter_core::client::Decision;
use milter_blocking::{ListenOptions, Milter, Server, ServerError, Spec};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

#[derive(Default)]
struct Plain;

impl milter_blocking::Declaration for Plain {}

#[milter_blocking::handlers]
impl Milter for Plain {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec::ALL_STAGES;
    }
}

fn listen(path: &Path, opts: ListenOptions) -> Result<Server, ServerError> {
    Server::builder()
        .listen_options(opts)
        .listen(&format!("unix:{}", path.display()))?
        .build(Plain::default)
}

/// Binds, expecting a refusal that mentions `needle`.
fn refused(path: &Path, needle: &str) {
    let err = listen(path, ListenOptions::default()).unwrap_err();
    assert!(err.to_string().contains(needle), "{err}");
}

fn serve_one_message(server: Server) -> TestServer {
    let server = TestServer::run(server);
    let mut m = Mta::connect(&server.spec);
    m.message_until_eom();
    assert_eq!(m.eom().decision, Decision::Continue);
    server
}

#[test]
fn never_removes_what_is_not_a_stale_socket() {
    watchdog(Duration::from_secs(30), || {
        let dir = tempfile::tempdir().unwrap();
        let not_socket = "exists and is not a socket; refusing to remove it";

        // A directory (with something in it).
        let d = dir.path().join("dir.sock");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("keep"), b"x").unwrap();
        refused(&d, not_socket);
        assert_eq!(std::fs::read(d.join("keep")).unwrap(), b"x");

        // A symlink to a regular file: neither the link nor its target goes.
        let target = dir.path().join("precious");
        std::fs::write(&target, b"precious").unwrap();
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        refused(&link, not_socket);
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");

        // A symlink to a stale socket: the link is not a socket; it is not
        // followed, and neither it nor the socket it points to is removed.
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let link_to_socket = dir.path().join("link-to-socket.sock");
        std::os::unix::fs::symlink(&stale, &link_to_socket).unwrap();
        refused(&link_to_socket, not_socket);
        assert!(std::fs::symlink_metadata(&link_to_socket).is_ok());
        assert!(std::fs::symlink_metadata(&stale)
            .unwrap()
            .file_type()
            .is_socket());

        // A dangling symlink.
        let dangling = dir.path().join("dangling.sock");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        refused(&dangling, not_socket);
        assert!(std::fs::symlink_metadata(&dangling).is_ok());

        // A FIFO.
        let fifo = dir.path().join("fifo.sock");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if matches!(made, Ok(s) if s.success()) {
            refused(&fifo, not_socket);
            assert!(std::fs::symlink_metadata(&fifo)
                .unwrap()
                .file_type()
                .is_fifo());
        } else {
            eprintln!("mkfifo unavailable: FIFO case skipped");
        }

        // An empty regular file.
        let empty = dir.path().join("empty.sock");
        std::fs::write(&empty, b"").unwrap();
        refused(&empty, not_socket);
        assert!(empty.exists());

        // A stale socket with stale removal switched off.
        let err = listen(
            &stale,
            ListenOptions {
                remove_stale: false,
                ..ListenOptions::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert!(std::fs::symlink_metadata(&stale)
            .unwrap()
            .file_type()
            .is_socket());

        // And with it on (the default), the stale socket is replaced and served.
        let server = serve_one_message(listen(&stale, ListenOptions::default()).unwrap());
        server.stop(Duration::from_secs(5)).unwrap();
        assert!(!stale.exists(), "removed at clean exit");
    });
}

/// A socket somebody listens on is never taken over, however it answers:
/// accepting at once, or with its backlog full (the check must not wait), or
/// with mode 0 (root connects anyway). Only a socket nobody listens on is
/// stale, whatever its mode.
#[test]
fn a_live_socket_is_never_taken_over() {
    use std::os::unix::fs::FileTypeExt;
    watchdog(Duration::from_secs(30), || {
        let dir = tempfile::tempdir().unwrap();
        let live = "another process is listening on";

        // A listener whose backlog is full.
        let busy = dir.path().join("busy.sock");
        let listener =
            socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        listener
            .bind(&socket2::SockAddr::unix(&busy).unwrap())
            .unwrap();
        listener.listen(0).unwrap();
        let mut queued = Vec::new();
        loop {
            let c =
                socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
            c.set_nonblocking(true).unwrap();
            match c.connect(&socket2::SockAddr::unix(&busy).unwrap()) {
                Ok(()) => queued.push(c),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling the backlog: {e}"),
            }
            assert!(queued.len() < 1000, "the backlog never filled");
        }
        refused(&busy, live);
        assert!(std::fs::symlink_metadata(&busy)
            .unwrap()
            .file_type()
            .is_socket());
        drop(queued);

        // A live socket of mode 0.
        let closed_mode = dir.path().join("mode0.sock");
        let owner = std::os::unix::net::UnixListener::bind(&closed_mode).unwrap();
        std::fs::set_permissions(&closed_mode, std::fs::Permissions::from_mode(0o0)).unwrap();
        let err = listen(&closed_mode, ListenOptions::default()).unwrap_err();
        // As root the check connects and finds the listener; as another user
        // it cannot tell, and says so: either way the socket stays.
        assert!(
            err.to_string().contains(live) || err.to_string().contains("cannot tell whether"),
            "{err}"
        );
        assert!(closed_mode.exists());
        let kept = std::fs::symlink_metadata(&closed_mode).unwrap();
        drop(owner);

        // The same socket once nobody listens: stale, replaced, served.
        assert_eq!(kept.permissions().mode() & 0o777, 0);
        if err.to_string().contains(live) {
            let server = serve_one_message(listen(&closed_mode, ListenOptions::default()).unwrap());
            server.stop(Duration::from_secs(5)).unwrap();
        }
    });
}

#[test]
fn the_socket_gets_the_configured_permissions() {
    watchdog(Duration::from_secs(30), || {
        let dir = tempfile::tempdir().unwrap();
        // 0o666 is wider than the usual umask (022): the mode is set after bind,
        // not left to the umask.
        for mode in [0o600, 0o660, 0o666, 0o700] {
            let path = dir.path().join(format!("m{mode:o}.sock"));
            let server = listen(
                &path,
                ListenOptions {
                    unix_mode: Some(mode),
                    ..ListenOptions::default()
                },
            )
            .unwrap();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert!(meta.file_type().is_socket());
            assert_eq!(meta.permissions().mode() & 0o7777, mode, "mode {mode:o}");
            let server = serve_one_message(server);
            server.stop(Duration::from_secs(5)).unwrap();
            assert!(!path.exists());
        }
    });
}

#[test]
fn at_exit_only_the_socket_the_server_created_is_removed() {
    watchdog(Duration::from_secs(30), || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("milter.sock");

        // Replaced by a regular file while running: the file stays.
        let server = serve_one_message(listen(&path, ListenOptions::default()).unwrap());
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"someone else's").unwrap();
        server.stop(Duration::from_secs(5)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
        std::fs::remove_file(&path).unwrap();

        // Replaced by another server's socket: that socket stays (and works).
        let first = serve_one_message(listen(&path, ListenOptions::default()).unwrap());
        std::fs::remove_file(&path).unwrap();
        let second = serve_one_message(listen(&path, ListenOptions::default()).unwrap());
        first.stop(Duration::from_secs(5)).unwrap();
        assert!(std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket());
        let mut m = Mta::connect(&second.spec);
        m.message_until_eom();
        assert_eq!(m.eom().decision, Decision::Continue);
        drop(m);
        second.stop(Duration::from_secs(5)).unwrap();
        assert!(!path.exists());

        // Replaced by a directory: it stays.
        let server = serve_one_message(listen(&path, ListenOptions::default()).unwrap());
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        server.stop(Duration::from_secs(5)).unwrap();
        assert!(path.is_dir());
        std::fs::remove_dir(&path).unwrap();

        // Built but never run: dropping the server removes its socket.
        let server = listen(&path, ListenOptions::default()).unwrap();
        assert!(path.exists());
        drop(server);
        assert!(
            !path.exists(),
            "socket of a server that never ran is left behind"
        );
    });
}

#[test]
fn bad_socket_paths_fail_cleanly() {
    watchdog(Duration::from_secs(30), || {
        let dir = tempfile::tempdir().unwrap();
        // Longer than sun_path.
        let long = dir.path().join("x".repeat(120));
        assert!(listen(&long, ListenOptions::default()).is_err());
        assert!(!long.exists());
        // Missing parent directory.
        let orphan = dir.path().join("missing").join("milter.sock");
        let err = listen(&orphan, ListenOptions::default()).unwrap_err();
        assert!(err.to_string().contains("milter.sock"), "{err}");
        // Nothing was left in the directory by the failures.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    });
}

/// An error after the socket file was created (here: an owner the system
/// refuses) must not leave the file behind.
#[test]
fn a_failure_after_bind_removes_the_socket_file() {
    watchdog(Duration::from_secs(30), || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("owner.sock");
        // An unmapped or invalid owner: EINVAL or EPERM, depending on the system.
        let result = listen(
            &path,
            ListenOptions {
                unix_owner: Some(u32::MAX - 1),
                ..ListenOptions::default()
            },
        );
        match result {
            Err(e) => {
                eprintln!("[sockets] chown refused as expected: {e}");
                assert!(
                    std::fs::symlink_metadata(&path).is_err(),
                    "a failed listen left its socket file behind: {e}"
                );
            }
            Ok(server) => {
                eprintln!(
                    "[sockets] this system accepts uid {}; case not exercised",
                    u32::MAX - 1
                );
                drop(server);
            }
        }
    });
}
