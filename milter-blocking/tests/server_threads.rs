//! Worker threads track concurrency: after a burst, under steady connection
//! churn from a few clients, the surplus threads leave.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{watchdog, AllStages, Mta, TestServer};
use milter_blocking::milter_core::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn threads_track_concurrency_under_connection_churn() {
    watchdog(Duration::from_secs(120), || {
        const BURST: usize = 32;
        const CLIENTS: usize = 4;
        let server = TestServer::with(
            |b| b.idle_thread_timeout(Duration::from_millis(300)),
            AllStages::default,
        );
        // A burst: BURST connections at once, then gone.
        let burst: Vec<Mta> = (0..BURST).map(|_| Mta::connect(&server.spec)).collect();
        assert_eq!(server.handle.stats().threads, BURST);
        drop(burst);
        // Then a few clients opening and closing connections without pause.
        let churning = Arc::new(AtomicBool::new(true));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (spec, churning) = (server.spec.clone(), churning.clone());
                std::thread::spawn(move || {
                    let mut n = 0usize;
                    while churning.load(Ordering::SeqCst) {
                        let mut m = Mta::connect(&spec);
                        m.connect_stage("h", "192.0.2.1", 25);
                        m.send_only(Command::Quit);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        // The surplus threads leave after their idle timeout although work
        // keeps coming: at most two per client remain (one may still be
        // finishing a connection whose client has moved on).
        let began = Instant::now();
        let mut threads = server.handle.stats().threads;
        while threads > 2 * CLIENTS && began.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(50));
            threads = server.handle.stats().threads;
        }
        churning.store(false, Ordering::SeqCst);
        let connections: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
        eprintln!(
            "[threads] after a burst of {BURST}: {threads} threads {:?} later, \
             {CLIENTS} clients churning ({connections} connections)",
            began.elapsed()
        );
        assert!(
            threads <= 2 * CLIENTS,
            "{threads} threads for {CLIENTS} clients after 30 s"
        );
    });
}
