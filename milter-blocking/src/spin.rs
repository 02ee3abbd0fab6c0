//! Busy-polling a connection for a moment before blocking in `read`.
//!
//! A milter conversation is a dozen strict round trips per message: the milter
//! answers, then waits for the MTA's next command, which follows within tens of
//! microseconds. A thread that blocks in `read` for that gap is put to sleep
//! and must be woken by the kernel when the command arrives; on an otherwise
//! idle CPU (and on virtual machines in particular, where an idle virtual CPU
//! is descheduled by the host) that wake-up costs more than the work of the
//! whole stage. When few connections are open, so that CPUs are to spare, the
//! server instead polls the socket without blocking for a short, bounded time
//! and only then blocks. Under load (more open connections than the limit) it
//! never spins, so spinning never takes CPU time from a connection with work.

use crate::cache_line::CacheLine;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Default time to poll before blocking: longer than the MTA's usual reaction
/// time between two commands on a loopback or local-network socket, short
/// enough that an idle connection costs nothing measurable.
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(50);

/// When and how long connections poll before they block.
#[derive(Debug, Clone)]
pub(crate) struct SpinPolicy {
    /// How long to poll; zero turns polling off.
    pub(crate) duration: Duration,
    /// Poll only while at most this many connections are being served.
    pub(crate) max_open: usize,
    /// Connections being served right now (read before every blocking read).
    pub(crate) open: Arc<CacheLine<AtomicUsize>>,
}

impl SpinPolicy {
    /// A policy polling for `duration` while at most `max_open` connections
    /// are served.
    pub(crate) fn new(duration: Duration, max_open: usize) -> SpinPolicy {
        SpinPolicy {
            duration,
            max_open,
            open: Arc::new(CacheLine(AtomicUsize::new(0))),
        }
    }

    /// The default limit: one connection per CPU beyond the first, so that
    /// the MTA's side always has a CPU of its own. With one CPU (or an affinity
    /// mask of one) that is none: spinning there only delays the MTA.
    pub(crate) fn default_max_open() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get() - 1)
            .unwrap_or(0)
    }

    /// Counts a connection as served until the guard is dropped.
    pub(crate) fn enter(&self) -> OpenGuard {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(Arc::clone(&self.open))
    }

    /// How long to poll now: `None` when polling is off or the server is busy.
    pub(crate) fn budget(&self) -> Option<Duration> {
        if self.duration.is_zero() || self.open.load(Ordering::Relaxed) > self.max_open {
            None
        } else {
            Some(self.duration)
        }
    }
}

/// Marks one connection as served; see [`SpinPolicy::enter`].
#[derive(Debug)]
pub(crate) struct OpenGuard(Arc<CacheLine<AtomicUsize>>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_only_up_to_the_limit() {
        let p = SpinPolicy::new(Duration::from_micros(10), 1);
        assert_eq!(p.budget(), Some(Duration::from_micros(10)));
        let a = p.enter();
        assert_eq!(p.budget(), Some(Duration::from_micros(10)));
        let b = p.enter();
        assert_eq!(p.budget(), None);
        drop(a);
        assert_eq!(p.budget(), Some(Duration::from_micros(10)));
        drop(b);
        assert_eq!(p.open.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn zero_duration_is_off() {
        let p = SpinPolicy::new(Duration::ZERO, 8);
        let _g = p.enter();
        assert_eq!(p.budget(), None);
    }

    #[test]
    fn default_limit_leaves_one_cpu() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(SpinPolicy::default_max_open(), cpus - 1);
        let p = SpinPolicy::new(Duration::from_micros(10), 0);
        let _g = p.enter();
        assert_eq!(p.budget(), None, "a limit of 0 never polls");
    }
}
