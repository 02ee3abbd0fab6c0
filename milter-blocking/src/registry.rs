//! The connections a server holds open: the one owner of each connection's
//! shared state. The connection's thread, the accept loop (read timeouts),
//! the shutdown and the stats all read the same [`LiveConnection`], and it
//! holds the connection's socket itself (shared, not duplicated), so the
//! server can always cut a connection, whatever the descriptor limit.
//!
//! # When a connection may be closed for shutdown
//!
//! A connection is *waiting* only while it waits for the first byte of a new
//! command outside a message; from the moment bytes arrive, while its handler
//! runs, and until the message ends, it is *busy*. The shutdown closes only
//! waiting connections, and the two sides agree through one atomic:
//!
//! - the connection stores `WAITING`, then reads the stopping flag; if set, it
//!   closes itself;
//! - the shutdown sets the stopping flag, then swaps `WAITING` for `CLOSED`
//!   and, if that worked, shuts the reading side;
//! - when bytes arrive, the connection swaps `WAITING` for `BUSY`; if that
//!   fails, the shutdown closed it first and it does not serve the bytes.
//!
//! (Both sides use sequentially consistent operations, so at least one of
//! them sees the other: a connection is never left waiting through a shutdown,
//! and a busy one is never closed before the deadline.)

use crate::cache_line::CacheLine;
use crate::listener::Stream;
use milter_core::filter::Position;
use milter_core::Stage;
use std::collections::HashMap;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where one connection is, encoded for an atomic.
fn encode(p: Position) -> u8 {
    match p {
        Position::Start | Position::Negotiating => 0,
        Position::Idle => 1,
        Position::Session => 2,
        Position::Message(s) => 3 + Stage::ALL.iter().position(|x| *x == s).unwrap_or(0) as u8,
        Position::MessageDone => 13,
        Position::Closed => 14,
    }
}

fn decode(v: u8) -> Position {
    match v {
        0 => Position::Start,
        1 => Position::Idle,
        2 => Position::Session,
        3..=12 => Position::Message(Stage::ALL[(v - 3) as usize]),
        13 => Position::MessageDone,
        _ => Position::Closed,
    }
}

/// A command is being received or handled, or a message is open.
const BUSY: u8 = 0;
/// Waiting for the first byte of a new command outside a message.
const WAITING: u8 = 1;
/// Closed by the shutdown while waiting.
const CLOSED: u8 = 2;

/// One open connection as the server sees it.
#[derive(Debug)]
pub(crate) struct LiveConnection {
    /// Written by the connection's thread around every read and after every
    /// batch of commands: on lines of its own, so that writing it never slows
    /// another connection.
    hot: CacheLine<Hot>,
    /// The read watchdog cut this connection's read (see `read_watch.rs`).
    timed_out: AtomicBool,
    opened: Instant,
    /// The connection's socket (shared with its thread, not a duplicate).
    stream: Stream,
}

#[derive(Debug)]
struct Hot {
    position: AtomicU8,
    /// `BUSY`, `WAITING` or `CLOSED` (see the module documentation).
    activity: AtomicU8,
    /// The read watchdog's tick when the connection began to wait in a read;
    /// 0 while it is not waiting.
    reading_since: AtomicU64,
}

impl LiveConnection {
    pub(crate) fn set_position(&self, p: Position) {
        self.hot.position.store(encode(p), Ordering::Relaxed);
    }

    pub(crate) fn position(&self) -> Position {
        decode(self.hot.position.load(Ordering::Relaxed))
    }

    /// The connection is about to wait for a new command outside a message.
    /// Returns false if the server is stopping: the connection must close
    /// instead of waiting.
    pub(crate) fn wait_for_command(&self, stopping: &AtomicBool) -> bool {
        // Already waiting (a read interrupted and retried) is fine; a
        // connection the shutdown closed stays closed.
        match self
            .hot
            .activity
            .compare_exchange(BUSY, WAITING, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) | Err(WAITING) => !stopping.load(Ordering::SeqCst),
            Err(_) => false,
        }
    }

    /// Bytes of a new command arrived while waiting: the connection is busy
    /// until it waits again. Returns false if the shutdown closed it first:
    /// the bytes must not be served.
    pub(crate) fn command_arrived(&self) -> bool {
        self.hot
            .activity
            .compare_exchange(WAITING, BUSY, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Whether the shutdown closed this connection while it was waiting.
    pub(crate) fn closed_for_shutdown(&self) -> bool {
        self.hot.activity.load(Ordering::SeqCst) == CLOSED
    }

    /// The connection waits in a read since the watchdog's tick `tick` (> 0).
    pub(crate) fn begin_read(&self, tick: u64) {
        self.hot.reading_since.store(tick, Ordering::Relaxed);
    }

    /// The read returned.
    pub(crate) fn end_read(&self) {
        self.hot.reading_since.store(0, Ordering::Relaxed);
    }

    /// Whether the read watchdog cut this connection.
    pub(crate) fn read_timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed)
    }

    /// Closes the connection if it waits for a new command (see the module
    /// documentation); whether it did.
    fn close_if_waiting(&self) -> bool {
        let closed = self
            .hot
            .activity
            .compare_exchange(WAITING, CLOSED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if closed {
            self.close(Shutdown::Read);
        }
        closed
    }

    fn close(&self, how: Shutdown) -> bool {
        self.stream.shutdown(how).is_ok()
    }
}

/// A snapshot of the server's connections.
///
/// ```
/// # use milter_blocking::ServerStats;
/// # fn show(stats: &ServerStats) {
/// println!("{} open, {} between messages", stats.open, stats.idle);
/// for (stage, n) in &stats.in_stage {
///     println!("  {n} in {stage}");
/// }
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections open.
    pub open: usize,
    /// Connections waiting for negotiation or between sessions/messages.
    pub idle: usize,
    /// Connections inside a message, by the last stage received (stages with no
    /// connection are left out).
    pub in_stage: Vec<(Stage, usize)>,
    /// Age of the oldest open connection.
    pub oldest: Option<Duration>,
    /// Worker threads alive.
    pub threads: usize,
    /// Worker threads waiting for a connection.
    pub idle_threads: usize,
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    conns: Mutex<HashMap<u64, Arc<LiveConnection>>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<LiveConnection>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection; it shares `stream` (no new descriptor).
    pub(crate) fn add(&self, id: u64, stream: &Stream) -> Arc<LiveConnection> {
        let live = Arc::new(LiveConnection {
            hot: CacheLine(Hot {
                position: AtomicU8::new(0),
                activity: AtomicU8::new(BUSY),
                reading_since: AtomicU64::new(0),
            }),
            timed_out: AtomicBool::new(false),
            opened: Instant::now(),
            stream: stream.clone(),
        });
        self.lock().insert(id, Arc::clone(&live));
        live
    }

    pub(crate) fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Ends the connections that wait for a new command outside a message
    /// (shutdown step 2; the stopping flag must be set first). Returns how
    /// many it closed.
    pub(crate) fn close_waiting(&self) -> usize {
        self.lock()
            .values()
            .filter(|c| c.close_if_waiting())
            .count()
    }

    /// Cuts the reads that began before the watchdog's tick `tick`: marks
    /// those connections timed out and shuts their reading side, so that the
    /// read returns end of input. Returns how many it cut.
    pub(crate) fn cut_reads_before(&self, tick: u64) -> usize {
        let mut cut = 0;
        for c in self.lock().values() {
            let since = c.hot.reading_since.load(Ordering::Relaxed);
            if since != 0 && since < tick && !c.timed_out.swap(true, Ordering::Relaxed) {
                let _ = c.close(Shutdown::Read);
                cut += 1;
            }
        }
        cut
    }

    /// Ends every connection (shutdown deadline). Returns how many it closed
    /// (a socket the peer already closed is not counted).
    pub(crate) fn close_all(&self) -> usize {
        self.lock()
            .values()
            .filter(|c| c.close(Shutdown::Both))
            .count()
    }

    pub(crate) fn stats(&self) -> ServerStats {
        let conns = self.lock();
        let mut stats = ServerStats {
            open: conns.len(),
            ..ServerStats::default()
        };
        let mut counts = [0usize; 10];
        for c in conns.values() {
            match c.position() {
                Position::Message(s) => {
                    if let Some(i) = Stage::ALL.iter().position(|x| *x == s) {
                        counts[i] += 1;
                    }
                }
                _ => stats.idle += 1,
            }
            let age = c.opened.elapsed();
            stats.oldest = Some(stats.oldest.map_or(age, |o| o.max(age)));
        }
        stats.in_stage = Stage::ALL
            .iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| (*s, n))
            .collect();
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_busy_and_closed_for_shutdown() {
        let registry = Registry::default();
        let (ours, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let live = registry.add(1, &Stream::unix(ours));
        let stopping = AtomicBool::new(false);
        // Busy connections are never closed by the shutdown step.
        assert_eq!(registry.close_waiting(), 0);
        assert!(live.wait_for_command(&stopping));
        // Waiting again (a retried read) is still waiting.
        assert!(live.wait_for_command(&stopping));
        assert!(live.command_arrived());
        assert_eq!(registry.close_waiting(), 0, "a busy connection was closed");
        assert!(live.wait_for_command(&stopping));
        stopping.store(true, Ordering::SeqCst);
        assert_eq!(registry.close_waiting(), 1);
        assert!(live.closed_for_shutdown());
        assert!(!live.command_arrived(), "bytes served after the close");
        assert!(!live.wait_for_command(&stopping));
    }

    #[test]
    fn positions_round_trip() {
        for p in [
            Position::Start,
            Position::Idle,
            Position::Session,
            Position::MessageDone,
            Position::Closed,
        ]
        .into_iter()
        .chain(Stage::ALL.into_iter().map(Position::Message))
        {
            assert_eq!(decode(encode(p)), p);
        }
    }
}
