//! Unix sockets (permissions, stale files, removal at exit) and IPv6.
#![allow(clippy::unwrap_used)]

mod common;

use common::{watchdog, Mta, TestServer};
use milter_blocking::milter_core::client::Decision;
use milter_blocking::{ListenOptions, Milter, Server, Spec};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
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

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("milter-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn unix_socket_mode_stale_removal_and_cleanup() {
    watchdog(Duration::from_secs(30), || {
        let dir = temp_dir("unix");
        let path = dir.join("milter.sock");
        // A stale socket file: bound once, nobody listening now.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let server = Server::builder()
            .listen_options(ListenOptions {
                unix_mode: Some(0o660),
                ..ListenOptions::default()
            })
            .listen(&format!("unix:{}", path.display()))
            .unwrap()
            .build(Plain::default)
            .unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        let server = TestServer::run(server);
        let mut mta = Mta::connect(&server.spec);
        mta.message_until_eom();
        assert_eq!(mta.eom().decision, Decision::Continue);
        drop(mta);
        server.stop(Duration::from_secs(5)).unwrap();
        assert!(!path.exists(), "socket file removed at exit");
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn never_removes_a_file_that_is_not_a_socket_or_a_live_socket() {
    watchdog(Duration::from_secs(30), || {
        let dir = temp_dir("unix-refuse");
        let file = dir.join("not-a-socket");
        std::fs::write(&file, b"precious").unwrap();
        let err = Server::builder()
            .listen(&format!("unix:{}", file.display()))
            .unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"precious");

        let live = dir.join("live.sock");
        let _other = std::os::unix::net::UnixListener::bind(&live).unwrap();
        let err = Server::builder()
            .listen(&format!("local:{}", live.display()))
            .unwrap_err();
        assert!(err.to_string().contains("another process"), "{err}");
        assert!(live.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn serves_ipv6_and_ipv4() {
    watchdog(Duration::from_secs(30), || {
        let server = Server::builder()
            .listen("inet6:0@::1")
            .unwrap()
            .listen("inet:0@127.0.0.1")
            .unwrap()
            .build(Plain::default)
            .unwrap();
        let specs = server.local_specs();
        assert!(specs[0].to_string().starts_with("inet6:"), "{specs:?}");
        let server = TestServer::run(server);
        for spec in &specs {
            let mut mta = Mta::connect(spec);
            mta.message_until_eom();
            assert_eq!(mta.eom().decision, Decision::Continue);
        }
        drop(server);
    });
}
