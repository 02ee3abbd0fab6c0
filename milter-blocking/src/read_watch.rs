//! Read timeouts kept by a watchdog instead of a kernel timer on every read.
//!
//! A socket read timeout (`SO_RCVTIMEO`) makes the kernel arm and cancel a
//! timer each time a read blocks: a dozen times per message, at a cost that
//! shows in the server's system time. Instead, a connection about to block
//! notes a coarse timestamp in its registry entry, and the accept loop, which
//! wakes at least once per [`ReadWatch::period`], cuts (`shutdown(Read)`) every
//! connection that has waited longer than the limit. The cut read returns end
//! of input, and the connection sees that it was a timeout.
//!
//! The timestamp is the time of the watchdog's latest tick, read from one
//! shared atomic: no clock call per read. A connection whose timestamp is the
//! tick `T[k]` began its read before the next tick `T[k+1]`, so it is cut only
//! once `T[k+1]` is at least the limit in the past: never early, and late by at
//! most the spacing of the published ticks plus a period.
//!
//! The watch remembers the ticks of the last `limit`, so it publishes at most
//! [`MAX_TICKS`] of them per limit: for a timeout up to about 200 s that is
//! every tick (a read is cut at most about two periods late), for a longer one
//! every `limit / MAX_TICKS` (the default 7210 s: at most about 7.5 s late),
//! and the memory stays a few KiB whatever the timeout.

use crate::cache_line::CacheLine;
use crate::registry::{LiveConnection, Registry};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shortest period between two checks.
const MIN_PERIOD: Duration = Duration::from_millis(10);
/// Longest period between two checks.
const MAX_PERIOD: Duration = Duration::from_millis(200);
/// Most ticks published per `limit`, which bounds the ticks remembered.
const MAX_TICKS: u32 = 1024;

/// The read timeout of every connection of a server, and its watchdog's clock.
#[derive(Debug)]
pub(crate) struct ReadWatch {
    limit: Duration,
    period: Duration,
    start: Instant,
    /// Milliseconds since `start` at the latest tick, plus one (0 means "not
    /// reading" in a connection's entry). Read before every blocking read.
    now: CacheLine<AtomicU64>,
    /// Times of the recent ticks, oldest first, and when the next is due.
    ticks: Mutex<Ticks>,
}

#[derive(Debug)]
struct Ticks {
    recent: VecDeque<u64>,
    due: Instant,
}

impl ReadWatch {
    /// A watch cutting reads that wait longer than `limit`.
    pub(crate) fn new(limit: Duration) -> ReadWatch {
        let start = Instant::now();
        ReadWatch {
            limit,
            period: (limit / 8).clamp(MIN_PERIOD, MAX_PERIOD),
            start,
            now: CacheLine(AtomicU64::new(1)),
            ticks: Mutex::new(Ticks {
                recent: VecDeque::from([1]),
                due: start,
            }),
        }
    }

    /// The timeout.
    pub(crate) fn limit(&self) -> Duration {
        self.limit
    }

    /// How often [`check`](Self::check) must be called.
    pub(crate) fn period(&self) -> Duration {
        self.period
    }

    /// Marks `conn` as waiting in a read until the guard is dropped.
    pub(crate) fn reading<'a>(&self, conn: &'a LiveConnection) -> Reading<'a> {
        // Relaxed: a tick seen a little late only makes the timeout later.
        conn.begin_read(self.now.load(Ordering::Relaxed));
        Reading(conn)
    }

    /// Ticks the clock and cuts the reads that waited past the limit, at most
    /// once per period (earlier calls return at once). Returns how many reads
    /// it cut.
    pub(crate) fn check(&self, registry: &Registry) -> usize {
        self.check_at(Instant::now(), registry)
    }

    /// [`check`](Self::check) as if the time were `now`.
    fn check_at(&self, now: Instant, registry: &Registry) -> usize {
        let mut ticks = self.ticks.lock().unwrap_or_else(|p| p.into_inner());
        if now < ticks.due {
            return 0;
        }
        ticks.due = now + self.period;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let tick = ms(now.duration_since(self.start)).saturating_add(1);
        let spacing = ms(self.limit / MAX_TICKS);
        if ticks
            .recent
            .back()
            .is_none_or(|&last| tick >= last.saturating_add(spacing))
        {
            self.now.store(tick, Ordering::Relaxed);
            ticks.recent.push_back(tick);
        }
        // The latest tick at least `limit` ago: a read stamped with an earlier
        // tick began before it, so it has waited at least `limit`.
        let horizon = tick.saturating_sub(ms(self.limit));
        while ticks.recent.len() > 1 && ticks.recent[1] <= horizon {
            ticks.recent.pop_front();
        }
        match ticks.recent.front() {
            Some(&oldest) if oldest <= horizon => registry.cut_reads_before(oldest),
            _ => 0,
        }
    }
}

/// A connection waiting in a read; see [`ReadWatch::reading`].
#[derive(Debug)]
pub(crate) struct Reading<'a>(&'a LiveConnection);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.0.end_read();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener::Stream;
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    /// A registered connection, its socket, and the peer.
    fn entry(registry: &Registry, id: u64) -> (Arc<LiveConnection>, Stream, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let ours = Stream::unix(ours);
        (registry.add(id, &ours), ours, theirs)
    }

    #[test]
    fn period_is_an_eighth_of_the_limit_within_bounds() {
        assert_eq!(
            ReadWatch::new(Duration::from_millis(400)).period(),
            Duration::from_millis(50)
        );
        assert_eq!(
            ReadWatch::new(Duration::from_millis(1)).period(),
            MIN_PERIOD
        );
        assert_eq!(
            ReadWatch::new(Duration::from_secs(7210)).period(),
            MAX_PERIOD
        );
    }

    #[test]
    fn checks_at_most_once_per_period() {
        let registry = Registry::default();
        let watch = ReadWatch::new(Duration::from_secs(60));
        watch.check(&registry);
        let first = watch.now.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(2));
        watch.check(&registry);
        assert_eq!(
            watch.now.load(Ordering::Relaxed),
            first,
            "ticked twice in a period"
        );
    }

    #[test]
    fn cuts_a_read_only_after_the_limit() {
        let registry = Registry::default();
        let limit = Duration::from_millis(80);
        let watch = ReadWatch::new(limit);
        let (waiting, mut socket, _peer) = entry(&registry, 1);
        let (busy, _, _peer2) = entry(&registry, 2);
        let began = Instant::now();
        let reading = watch.reading(&waiting);
        let mut cut_after = None;
        while began.elapsed() < Duration::from_secs(5) {
            if watch.check(&registry) > 0 {
                cut_after = Some(began.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let cut_after = cut_after.expect("the waiting read was never cut");
        assert!(
            cut_after >= limit,
            "cut after {cut_after:?}, before the limit"
        );
        assert!(waiting.read_timed_out());
        assert!(!busy.read_timed_out(), "a connection not reading was cut");
        drop(reading);
        // The cut is a shutdown of the reading side: a read sees end of input.
        assert_eq!(socket.read(&mut [0u8; 8]).unwrap(), 0);
        // Only once.
        std::thread::sleep(watch.period());
        assert_eq!(watch.check(&registry), 0);
    }

    #[test]
    fn a_long_timeout_remembers_a_bounded_number_of_ticks() {
        let registry = Registry::default();
        let limit = Duration::from_secs(7210);
        let watch = ReadWatch::new(limit);
        let (conn, _, _peer) = entry(&registry, 1);
        let period = watch.period();
        let slack = limit / MAX_TICKS + 2 * period;
        let mut reading = None;
        let mut began = None;
        let mut most = 0;
        // Three hours of checks, one per period; a read begins after 1000 s.
        for step in 1..=(3 * 3600 * 1000 / period.as_millis() as u32) {
            let at = watch.start + period * step;
            if watch.check_at(at, &registry) > 0 {
                let waited = at - began.expect("cut a read that never began");
                assert!(waited >= limit, "cut after {waited:?}");
                assert!(waited <= limit + slack, "cut {waited:?} after it began");
                assert!(conn.read_timed_out());
                drop(reading.take());
                began = Some(at + limit * 10); // no second cut
            }
            if began.is_none() && at >= watch.start + Duration::from_secs(1000) {
                reading = Some(watch.reading(&conn));
                began = Some(at);
            }
            most = most.max(watch.ticks.lock().unwrap().recent.len());
        }
        assert!(conn.read_timed_out(), "the read was never cut");
        // A few KiB (the ticks of one limit are MAX_TICKS and one or two more).
        assert!(most <= 2048, "remembered {most} ticks");
    }

    #[test]
    fn an_endless_timeout_never_cuts() {
        let registry = Registry::default();
        let watch = ReadWatch::new(Duration::MAX);
        let (conn, _, _peer) = entry(&registry, 1);
        let _reading = watch.reading(&conn);
        for step in 1..100 {
            assert_eq!(
                watch.check_at(watch.start + watch.period() * step, &registry),
                0
            );
        }
        assert!(!conn.read_timed_out());
    }

    #[test]
    fn a_read_that_ended_is_not_cut() {
        let registry = Registry::default();
        let watch = ReadWatch::new(Duration::from_millis(20));
        let (conn, _, _peer) = entry(&registry, 1);
        drop(watch.reading(&conn));
        let began = Instant::now();
        while began.elapsed() < Duration::from_millis(150) {
            assert_eq!(watch.check(&registry), 0);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!conn.read_timed_out());
    }
}
