//! The memory all captures of a process may hold together.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The default process-wide budget: 64 MiB.
pub const DEFAULT_BUDGET: usize = 64 * 1024 * 1024;

/// A limit on the bytes all [`MessageCapture`](super::MessageCapture)s sharing it
/// hold in memory at once; data that does not fit goes to a temporary file.
///
/// One counter, updated atomically by every connection's capture: no lock, no
/// thread. Captures use [`CaptureBudget::global`] unless their
/// [`CaptureOptions`](super::CaptureOptions) name another one.
///
/// ```
/// use milter_blocking::capture::CaptureBudget;
///
/// // A budget of its own, for one kind of capture.
/// static SMALL: CaptureBudget = CaptureBudget::new(1024 * 1024);
/// assert_eq!(SMALL.used(), 0);
///
/// // Or the process-wide one, sized at start-up.
/// CaptureBudget::global().set_limit(256 * 1024 * 1024);
/// assert_eq!(CaptureBudget::global().limit(), 256 * 1024 * 1024);
/// ```
#[derive(Debug)]
pub struct CaptureBudget {
    limit: AtomicUsize,
    used: AtomicUsize,
}

static GLOBAL: CaptureBudget = CaptureBudget::new(DEFAULT_BUDGET);

impl CaptureBudget {
    /// A budget of `limit` bytes.
    pub const fn new(limit: usize) -> CaptureBudget {
        CaptureBudget {
            limit: AtomicUsize::new(limit),
            used: AtomicUsize::new(0),
        }
    }

    /// The process-wide budget ([`DEFAULT_BUDGET`] unless changed).
    pub fn global() -> &'static CaptureBudget {
        &GLOBAL
    }

    /// Changes the limit. Memory already held stays held; new data spills while
    /// the use is above the new limit.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// The bytes held now by the captures that share this budget.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes if they fit under the limit.
    pub(crate) fn try_reserve(&self, n: usize) -> bool {
        let limit = self.limit();
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= limit)
            })
            .is_ok()
    }

    /// Takes `n` bytes whatever the limit (memory that cannot go to a file, such
    /// as the header block, bounded per message by its own limit).
    pub(crate) fn charge(&self, n: usize) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    /// Gives `n` bytes back.
    pub(crate) fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_up_to_the_limit_and_releases() {
        let b = CaptureBudget::new(100);
        assert!(b.try_reserve(60));
        assert!(!b.try_reserve(41));
        assert!(b.try_reserve(40));
        assert_eq!(b.used(), 100);
        b.release(60);
        assert_eq!(b.used(), 40);
        b.charge(100);
        assert_eq!(b.used(), 140);
        assert!(!b.try_reserve(1));
        b.set_limit(1000);
        assert!(b.try_reserve(1));
        assert!(!b.try_reserve(usize::MAX));
    }

    #[test]
    fn concurrent_reservations_never_exceed_the_limit() {
        let b = CaptureBudget::new(1000);
        let granted = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        if b.try_reserve(7) {
                            granted.fetch_add(7, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(b.used(), granted.load(Ordering::Relaxed));
        assert!(b.used() <= 1000 && b.used() > 1000 - 7);
    }
}
