//! A bounded thread pool for connections (crossbeam-channel).
//!
//! Threads are started on demand up to `max_threads`, reused across connections,
//! and leave after `idle_timeout` without work. Work that finds every thread busy
//! waits in a queue of at most `queue` items; beyond that it is refused and handed
//! back to the caller, which closes the connection.

use crate::refusals::Refusal;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A unit of work: serving one connection.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Debug)]
struct Counters {
    threads: AtomicUsize,
    idle: AtomicUsize,
}

/// The pool.
pub(crate) struct Pool {
    /// Zero-capacity: a send succeeds only into the hands of a worker that is
    /// waiting for work right now.
    handoff_tx: Option<Sender<Job>>,
    handoff_rx: Receiver<Job>,
    /// Work waiting for a thread when all threads are busy.
    tx: Option<Sender<Job>>,
    rx: Receiver<Job>,
    counters: Arc<Counters>,
    max_threads: usize,
    idle_timeout: Duration,
    stack_size: usize,
    handles: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads())
            .field("idle", &self.idle())
            .finish_non_exhaustive()
    }
}

impl Pool {
    pub(crate) fn new(
        max_threads: usize,
        queue: usize,
        idle_timeout: Duration,
        stack_size: usize,
    ) -> Pool {
        let (tx, rx) = bounded(queue);
        let (handoff_tx, handoff_rx) = bounded(0);
        Pool {
            handoff_tx: Some(handoff_tx),
            handoff_rx,
            tx: Some(tx),
            rx,
            counters: Arc::new(Counters {
                threads: AtomicUsize::new(0),
                idle: AtomicUsize::new(0),
            }),
            max_threads: max_threads.max(1),
            idle_timeout,
            stack_size,
            handles: Vec::new(),
        }
    }

    /// Threads alive.
    pub(crate) fn threads(&self) -> usize {
        self.counters.threads.load(Ordering::Relaxed)
    }

    /// Threads waiting for work.
    pub(crate) fn idle(&self) -> usize {
        self.counters.idle.load(Ordering::Relaxed)
    }

    /// Runs a job: on an idle thread, on a new thread if the pool may grow, or
    /// after waiting in the queue; returns it back with the reason if it cannot
    /// (every thread busy and the queue full, or a thread could not be started).
    pub(crate) fn submit(&mut self, job: Job) -> Result<(), (Job, Refusal)> {
        self.handles.retain(|h| !h.is_finished());
        let (Some(handoff), Some(tx)) = (&self.handoff_tx, &self.tx) else {
            return Err((job, Refusal::Full));
        };
        // A worker waiting right now takes it (never a worker that merely
        // counted as idle a moment ago).
        let job = match handoff.try_send(job) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => job,
        };
        if self.threads() < self.max_threads {
            return match self.spawn(job) {
                Ok(()) => Ok(()),
                Err((e, job)) => {
                    log::debug!("cannot start a worker thread: {e}");
                    Err((job, Refusal::NoThread))
                }
            };
        }
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                Err((job, Refusal::Full))
            }
        }
    }

    /// Starts a thread that runs `first`, then takes work from the queue.
    fn spawn(&mut self, first: Job) -> Result<(), (io::Error, Job)> {
        let rx = self.rx.clone();
        let handoff = self.handoff_rx.clone();
        let counters = Arc::clone(&self.counters);
        let idle_timeout = self.idle_timeout;
        counters.threads.fetch_add(1, Ordering::Relaxed);
        // The job travels through a one-slot channel so that it can be handed
        // back if the thread cannot be started.
        let (first_tx, first_rx) = bounded::<Job>(1);
        let _ = first_tx.send(first);
        let spawned = thread::Builder::new()
            .name("milter-worker".into())
            .stack_size(self.stack_size)
            .spawn({
                let first_rx = first_rx.clone();
                move || {
                    // A job that panics must not end the thread uncounted.
                    let run = |job: Job| {
                        if catch_unwind(AssertUnwindSafe(job)).is_err() {
                            log::error!("a connection job panicked");
                        }
                    };
                    if let Ok(job) = first_rx.try_recv() {
                        run(job);
                    }
                    loop {
                        // Queued work first; then wait for either kind.
                        if let Ok(job) = rx.try_recv() {
                            run(job);
                            continue;
                        }
                        counters.idle.fetch_add(1, Ordering::Relaxed);
                        let next = crossbeam_channel::select! {
                            recv(handoff) -> job => job.map_err(|_| RecvTimeoutError::Disconnected),
                            recv(rx) -> job => job.map_err(|_| RecvTimeoutError::Disconnected),
                            default(idle_timeout) => Err(RecvTimeoutError::Timeout),
                        };
                        counters.idle.fetch_sub(1, Ordering::Relaxed);
                        match next {
                            Ok(job) => run(job),
                            Err(RecvTimeoutError::Timeout) if rx.is_empty() => break,
                            Err(RecvTimeoutError::Timeout) => {}
                            Err(RecvTimeoutError::Disconnected) => {
                                // Both senders gone (join): finish the queue.
                                while let Ok(job) = rx.try_recv() {
                                    run(job);
                                }
                                break;
                            }
                        }
                    }
                    counters.threads.fetch_sub(1, Ordering::Relaxed);
                }
            });
        match spawned {
            Ok(h) => {
                self.handles.push(h);
                Ok(())
            }
            Err(e) => {
                self.counters.threads.fetch_sub(1, Ordering::Relaxed);
                match first_rx.try_recv() {
                    Ok(job) => Err((e, job)),
                    Err(_) => Ok(()),
                }
            }
        }
    }

    /// Stops taking work and waits for every thread to finish its queue.
    pub(crate) fn join(&mut self) {
        self.tx = None;
        self.handoff_tx = None;
        for h in self.handles.drain(..) {
            if h.join().is_err() {
                log::error!("a worker thread panicked outside a handler");
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn reuses_threads_and_refuses_when_saturated() {
        let mut pool = Pool::new(2, 1, Duration::from_secs(5), 64 * 1024);
        let (release_tx, release_rx) = crossbeam_channel::unbounded::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        for _ in 0..2 {
            let r = release_rx.clone();
            let d = done_tx.clone();
            assert!(pool
                .submit(Box::new(move || {
                    let _ = r.recv();
                    let _ = d.send(());
                }))
                .is_ok());
        }
        // Wait until both threads run their job.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pool.idle() > 0 || pool.threads() < 2 {
            assert!(std::time::Instant::now() < deadline);
            thread::sleep(Duration::from_millis(5));
        }
        // One more fits in the queue, the next is refused.
        let d = done_tx.clone();
        assert!(pool
            .submit(Box::new(move || {
                let _ = d.send(());
            }))
            .is_ok());
        assert!(pool.submit(Box::new(|| {})).is_err());
        assert_eq!(pool.threads(), 2);
        for _ in 0..2 {
            release_tx.send(()).unwrap();
        }
        for _ in 0..3 {
            done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        pool.join();
        assert_eq!(pool.threads(), 0);
    }

    #[test]
    fn idle_threads_leave() {
        let mut pool = Pool::new(4, 4, Duration::from_millis(50), 64 * 1024);
        let (tx, rx) = mpsc::channel();
        assert!(pool
            .submit(Box::new(move || {
                let _ = tx.send(());
            }))
            .is_ok());
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pool.threads() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "idle thread did not leave"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}
