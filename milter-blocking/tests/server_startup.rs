//! What the server tells its surroundings at start and stop: the service
//! manager (`NOTIFY_SOCKET`), and a warning when the configured connections
//! cannot fit the descriptor limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{watchdog, AllStages, TestServer};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

fn soft_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

// One test in this binary: it sets NOTIFY_SOCKET for the whole process.
#[test]
fn notifies_the_service_manager_and_warns_about_the_descriptor_limit() {
    let logs = common::capture_logs(log::LevelFilter::Info, false);
    watchdog(Duration::from_secs(60), move || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        manager
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        let mut buf = [0u8; 64];
        let mut next = || {
            let n = manager.recv(&mut buf).expect("a notification");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        let too_many = usize::try_from(soft_limit()).unwrap();
        let server = TestServer::with(|b| b.max_connections(too_many), AllStages::default);
        assert_eq!(next(), "READY=1");
        let warning = logs
            .lines()
            .into_iter()
            .find(|l| l.contains("soft limit of open files"))
            .expect("no warning about the descriptor limit");
        assert!(warning.starts_with("WARN"), "{warning}");
        assert!(warning.contains("LimitNOFILE"), "{warning}");
        server.stop(Duration::from_secs(5)).unwrap();
        assert_eq!(next(), "STOPPING=1");
        std::env::remove_var("NOTIFY_SOCKET");
        // Within the limit: no warning.
        let before = logs.lines().len();
        let server = TestServer::with(|b| b.max_connections(64).queue(8), AllStages::default);
        server.stop(Duration::from_secs(5)).unwrap();
        assert!(!logs.lines()[before..]
            .iter()
            .any(|l| l.contains("soft limit of open files")));
    });
}
