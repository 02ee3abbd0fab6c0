//! A bounded thread pool for connections.
//!
//! Threads are started on demand up to `max_threads`, reused across connections,
//! and leave after `idle_timeout` without work. Work that finds every thread busy
//! waits in a queue of at most `queue` items; beyond that it is refused and handed
//! back to the caller, which closes the connection.
//!
//! Idle workers wait on a stack: new work goes to the worker that became idle
//! last. Spreading work over every idle worker would keep each of them alive
//! after a burst (each gets something to do within its idle timeout); with the
//! stack, the workers at the bottom stay idle and leave, so the number of
//! threads follows the number of connections served at once. A job goes to an
//! idle worker only while the worker is waiting, under the pool's lock: never
//! into a queue behind a worker that just took another job.

use crate::refusals::Refusal;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use std::collections::VecDeque;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A unit of work: serving one connection.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// What an idle worker receives: a job, or `None` to leave (the pool is
/// joined).
type Wake = Option<Job>;

#[derive(Debug)]
struct Counters {
    threads: AtomicUsize,
    idle: AtomicUsize,
}

/// What the submitters and the workers share, under one lock.
struct Shared {
    state: Mutex<State>,
    counters: Counters,
}

struct State {
    /// Idle workers, the one that became idle last on top: its id and where
    /// to hand it work.
    idle: Vec<(u64, Sender<Wake>)>,
    /// Work waiting for a thread when every thread is busy.
    queue: VecDeque<Job>,
    /// `join` was called: no more work; workers leave when the queue is empty.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The pool.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    queue_cap: usize,
    max_threads: usize,
    idle_timeout: Duration,
    stack_size: usize,
    next_worker: u64,
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
        Pool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    idle: Vec::new(),
                    queue: VecDeque::new(),
                    closed: false,
                }),
                counters: Counters {
                    threads: AtomicUsize::new(0),
                    idle: AtomicUsize::new(0),
                },
            }),
            queue_cap: queue,
            max_threads: max_threads.max(1),
            idle_timeout,
            stack_size,
            next_worker: 0,
            handles: Vec::new(),
        }
    }

    /// Threads alive.
    pub(crate) fn threads(&self) -> usize {
        self.shared.counters.threads.load(Ordering::Relaxed)
    }

    /// Threads waiting for work.
    pub(crate) fn idle(&self) -> usize {
        self.shared.counters.idle.load(Ordering::Relaxed)
    }

    /// Runs a job: on the idle thread that waits since the shortest time, on a
    /// new thread if the pool may grow, or after waiting in the queue; returns
    /// it back with the reason if it cannot (every thread busy and the queue
    /// full, or a thread could not be started).
    pub(crate) fn submit(&mut self, job: Job) -> Result<(), (Job, Refusal)> {
        self.handles.retain(|h| !h.is_finished());
        let mut state = self.shared.lock();
        if state.closed {
            return Err((job, Refusal::Full));
        }
        if let Some((_, worker)) = state.idle.pop() {
            self.shared.counters.idle.fetch_sub(1, Ordering::Relaxed);
            // The worker waits for this (or, past its timeout, looks for
            // itself on the stack under the lock, misses, and waits for it).
            return match worker.try_send(Some(job)) {
                Ok(()) => Ok(()),
                // Its receiver is gone, the worker died (cannot happen: workers
                // catch panics): hand the job back.
                Err(e) => match e.into_inner() {
                    Some(job) => Err((job, Refusal::NoThread)),
                    None => Ok(()),
                },
            };
        }
        if self.threads() < self.max_threads {
            drop(state);
            return match self.spawn(job) {
                Ok(()) => Ok(()),
                Err((e, job)) => {
                    log::debug!("cannot start a worker thread: {e}");
                    Err((job, Refusal::NoThread))
                }
            };
        }
        if state.queue.len() < self.queue_cap {
            state.queue.push_back(job);
            return Ok(());
        }
        Err((job, Refusal::Full))
    }

    /// Starts a thread that runs `first`, then takes work from the pool.
    fn spawn(&mut self, first: Job) -> Result<(), (io::Error, Job)> {
        let shared = Arc::clone(&self.shared);
        let idle_timeout = self.idle_timeout;
        self.next_worker += 1;
        let id = self.next_worker;
        shared.counters.threads.fetch_add(1, Ordering::Relaxed);
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
                    if let Ok(job) = first_rx.try_recv() {
                        run(job);
                    }
                    work(&shared, id, idle_timeout);
                    shared.counters.threads.fetch_sub(1, Ordering::Relaxed);
                }
            });
        match spawned {
            Ok(h) => {
                self.handles.push(h);
                Ok(())
            }
            Err(e) => {
                self.shared.counters.threads.fetch_sub(1, Ordering::Relaxed);
                match first_rx.try_recv() {
                    Ok(job) => Err((e, job)),
                    Err(_) => Ok(()),
                }
            }
        }
    }

    /// Stops taking work and waits for every thread to finish the queue.
    pub(crate) fn join(&mut self) {
        {
            let mut state = self.shared.lock();
            state.closed = true;
            for (_, worker) in state.idle.drain(..) {
                self.shared.counters.idle.fetch_sub(1, Ordering::Relaxed);
                let _ = worker.try_send(None);
            }
        }
        for h in self.handles.drain(..) {
            if h.join().is_err() {
                log::error!("a worker thread panicked outside a handler");
            }
        }
    }
}

/// Runs one job; a job that panics must not end the thread uncounted.
fn run(job: Job) {
    if catch_unwind(AssertUnwindSafe(job)).is_err() {
        log::error!("a connection job panicked");
    }
}

/// A worker's life after its first job: queued work first, else wait on the
/// idle stack; leave after `idle_timeout` without work, or when the pool is
/// joined and the queue is empty.
fn work(shared: &Shared, id: u64, idle_timeout: Duration) {
    let (tx, rx): (Sender<Wake>, Receiver<Wake>) = bounded(1);
    loop {
        {
            let mut state = shared.lock();
            if let Some(job) = state.queue.pop_front() {
                drop(state);
                run(job);
                continue;
            }
            if state.closed {
                return;
            }
            state.idle.push((id, tx.clone()));
            shared.counters.idle.fetch_add(1, Ordering::Relaxed);
        }
        let wake = match rx.recv_timeout(idle_timeout) {
            Ok(wake) => wake,
            Err(RecvTimeoutError::Timeout) => {
                let mut state = shared.lock();
                if let Some(at) = state.idle.iter().position(|(w, _)| *w == id) {
                    state.idle.remove(at);
                    shared.counters.idle.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
                drop(state);
                // Taken off the stack by a submitter (or `join`) just now:
                // what it sent is on its way.
                rx.recv().unwrap_or(None)
            }
            Err(RecvTimeoutError::Disconnected) => None,
        };
        match wake {
            Some(job) => run(job),
            None => return,
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
