//! More connections than the configured maximum: up to `queue` wait for a thread,
//! the rest are closed at once (and logged), and the connections being served
//! keep their throughput meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{watchdog, Capture, Mta, TestServer};
use milter_blocking::milter_core::client::Decision;
use milter_blocking::{Milter, OptNeg, Spec};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn logs() -> &'static Capture {
    common::capture_logs(log::LevelFilter::Info, false)
}

#[derive(Default)]
struct Plain;

impl milter_blocking::Declaration for Plain {}

#[milter_blocking::handlers]
impl Milter for Plain {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec::ALL_STAGES;
    }
}

#[test]
fn over_the_maximum_connections_queue_then_are_refused_while_served_ones_keep_their_pace() {
    const MAX: usize = 4;
    const QUEUE: usize = 2;
    watchdog(Duration::from_secs(90), || {
        logs();
        let server = TestServer::with(|b| b.max_connections(MAX).queue(QUEUE), Plain::default);
        // MAX healthy MTAs, each on its own connection, sending messages.
        let done = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let healthy: Vec<_> = (0..MAX)
            .map(|_| {
                let (spec, done, stop) = (server.spec.clone(), done.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut m = Mta::connect(&spec);
                    m.connect_stage("h", "192.0.2.1", 25);
                    while !stop.load(Ordering::SeqCst) {
                        m.message_body_only();
                        assert_eq!(m.eom().decision, Decision::Continue);
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.handle.stats().open < MAX {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
        let measure = |d: Duration| {
            let before = done.load(Ordering::SeqCst);
            std::thread::sleep(d);
            done.load(Ordering::SeqCst) - before
        };
        let window = Duration::from_millis(1500);
        let baseline = measure(window);

        // QUEUE connections wait for a thread: accepted, not answered.
        let mut queued: Vec<Mta> = (0..QUEUE)
            .map(|_| Mta::open(&server.spec, OptNeg::POSTFIX_3))
            .collect();
        for q in &mut queued {
            assert!(
                q.quiet(Duration::from_millis(300)),
                "a queued connection was answered"
            );
        }
        // Everything beyond is closed at once, for as long as the flood lasts.
        let flooding = Arc::new(AtomicBool::new(true));
        let flood = {
            let (spec, flooding) = (server.spec.clone(), flooding.clone());
            std::thread::spawn(move || {
                let (mut refused, mut slowest) = (0usize, Duration::ZERO);
                while flooding.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let mut m = Mta::open(&spec, OptNeg::POSTFIX_3);
                    assert!(
                        m.closed_by_milter(Duration::from_secs(5)),
                        "a connection beyond the queue was not closed"
                    );
                    slowest = slowest.max(started.elapsed());
                    refused += 1;
                }
                (refused, slowest)
            })
        };
        let during = measure(window);
        flooding.store(false, Ordering::SeqCst);
        let (refused, slowest) = flood.join().unwrap();
        eprintln!(
            "[overload] {MAX} served connections: {baseline} messages per {window:?} alone, \
             {during} while {refused} connections beyond the queue were refused \
             (slowest refusal {slowest:?})"
        );
        assert!(refused >= 50, "only {refused} refusals in {window:?}");
        assert!(
            slowest < Duration::from_secs(1),
            "a refusal took {slowest:?}"
        );
        assert!(
            during * 3 >= baseline,
            "throughput fell from {baseline} to {during} messages per {window:?}"
        );
        // Aggregated: one line at the first refusal, then one per second with
        // a count, together accounting for every refusal.
        let refusal_lines = || -> Vec<String> {
            logs()
                .lines()
                .into_iter()
                .filter(|l| {
                    l.starts_with("WARN")
                        && l.contains("refused")
                        && l.contains("all threads busy and the queue is full")
                })
                .collect()
        };
        let counted = |lines: &[String]| -> usize {
            lines
                .iter()
                .map(|l| {
                    let count = l.trim_start_matches("WARN ").split(' ').next();
                    count.and_then(|n| n.parse().ok()).unwrap_or(1)
                })
                .sum()
        };
        let until = Instant::now() + Duration::from_secs(10);
        while counted(&refusal_lines()) < refused && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        let lines = refusal_lines();
        assert_eq!(counted(&lines), refused, "{lines:#?}");
        eprintln!(
            "[overload] {refused} refusals logged in {} lines",
            lines.len()
        );
        assert!(
            lines.len() <= 2 + (window.as_secs() as usize + 10),
            "{} refusal lines for {refused} refusals",
            lines.len()
        );

        // When the served connections leave, the queued ones get their threads.
        stop.store(true, Ordering::SeqCst);
        for h in healthy {
            h.join().unwrap();
        }
        for q in &mut queued {
            q.negotiate().expect("a queued connection was not served");
            q.message_until_eom();
            assert_eq!(q.eom().decision, Decision::Continue);
        }
        let stats = server.handle.stats();
        assert!(stats.threads <= MAX, "{stats:?}");
    });
}

/// When a worker thread cannot be started (here: a stack no system can
/// give), the connection is closed and the log says why, not "the queue is
/// full".
#[test]
fn a_thread_that_cannot_start_is_named_in_the_log() {
    watchdog(Duration::from_secs(60), || {
        let _ = logs();
        let server = TestServer::with(|b| b.thread_stack_size(1 << 60), Plain::default);
        let mut m = Mta::open(&server.spec, OptNeg::POSTFIX_3);
        assert!(m.closed_by_milter(Duration::from_secs(10)));
        let common::Conn::Tcp(tcp) = &m.conn else {
            unreachable!()
        };
        let client = tcp.local_addr().unwrap().to_string();
        drop(server);
        let lines = logs().lines();
        let mine: Vec<_> = lines.iter().filter(|l| l.contains(&client)).collect();
        assert_eq!(
            mine,
            [&format!(
                "WARN connection from {client} refused: a worker thread could not be started; closed"
            )],
            "{lines:#?}"
        );
    });
}
