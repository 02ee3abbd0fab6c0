//! Log lines for refused connections, aggregated: under a flood of
//! connections beyond the limit, one line per second with a count instead of
//! one per connection (which would drown the rest of the log; journald drops
//! lines of a noisy service).

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How often a refusal line is written at most (per reason and listener).
pub(crate) const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(1);

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every thread busy and the queue full.
    Full,
    /// A thread for it could not be started (the system's thread or memory
    /// limit).
    NoThread,
}

impl Refusal {
    fn index(self) -> usize {
        match self {
            Refusal::Full => 0,
            Refusal::NoThread => 1,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Full => "all threads busy and the queue is full",
            Refusal::NoThread => "a worker thread could not be started",
        })
    }
}

/// The refusals of one accept loop.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    windows: [Option<Window>; 2],
    /// What is done with a refused connection ("closed", ...).
    outcome: &'static str,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    /// Refusals since the last line.
    count: u64,
    last_peer: Option<SocketAddr>,
}

fn peer_name(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "unix socket".to_string(), |p| p.to_string())
}

impl RefusalLog {
    /// A log for refusals whose connections get `outcome`.
    pub(crate) fn new(outcome: &'static str) -> RefusalLog {
        RefusalLog {
            windows: [None, None],
            outcome,
        }
    }

    /// A connection was refused at `now`: returns the line to log, if one is
    /// due (the first refusal after a quiet period is logged at once, the
    /// others are counted).
    pub(crate) fn refused(
        &mut self,
        now: Instant,
        peer: Option<SocketAddr>,
        why: Refusal,
    ) -> Option<String> {
        let slot = &mut self.windows[why.index()];
        match slot {
            Some(w) => {
                w.count += 1;
                w.last_peer = peer;
                None
            }
            None => {
                *slot = Some(Window {
                    started: now,
                    count: 0,
                    last_peer: None,
                });
                Some(format!(
                    "connection from {} refused: {why}; {}",
                    peer_name(peer),
                    self.outcome
                ))
            }
        }
    }

    /// Called regularly (every accept poll): returns the lines for the
    /// refusals counted in a period that is over.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<String> {
        self.lines(now, false)
    }

    /// The lines for every refusal counted and not yet logged (when the
    /// accept loop stops).
    pub(crate) fn finish(&mut self, now: Instant) -> Vec<String> {
        self.lines(now, true)
    }

    fn lines(&mut self, now: Instant, all: bool) -> Vec<String> {
        let mut lines = Vec::new();
        for (why, slot) in [Refusal::Full, Refusal::NoThread]
            .into_iter()
            .zip(self.windows.iter_mut())
        {
            let Some(w) = slot else { continue };
            let elapsed = now.saturating_duration_since(w.started);
            if elapsed < REFUSAL_LOG_PERIOD && !all {
                continue;
            }
            if w.count == 0 {
                *slot = None;
                continue;
            }
            lines.push(format!(
                "{} more connections refused in the last {:.1} s: {why} (the last from {}); {}",
                w.count,
                elapsed.as_secs_f64(),
                peer_name(w.last_peer),
                self.outcome
            ));
            *w = Window {
                started: now,
                count: 0,
                last_peer: None,
            };
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gives_one_line_per_period_with_the_count() {
        let mut log = RefusalLog::new("closed");
        let t0 = Instant::now();
        let mut lines = Vec::new();
        // 10,000 refusals over 2.5 s, with a tick every 200 ms.
        for i in 0..10_000u32 {
            let now = t0 + Duration::from_micros(250 * u64::from(i));
            lines.extend(log.refused(now, None, Refusal::Full));
            if i % 800 == 0 {
                lines.extend(log.tick(now));
            }
        }
        // Then quiet: the rest is reported, then nothing more.
        for k in 1..=10 {
            lines.extend(log.tick(t0 + Duration::from_millis(2500 + 200 * k)));
        }
        assert!(lines.len() <= 4, "{lines:#?}");
        assert_eq!(
            lines[0],
            "connection from unix socket refused: all threads busy and the queue is full; closed"
        );
        let counted: u64 = lines[1..]
            .iter()
            .map(|l| l.split(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(counted + 1, 10_000, "{lines:#?}");
        // What is counted when the loop stops is reported then.
        assert!(log
            .refused(t0 + Duration::from_millis(5000), None, Refusal::Full)
            .is_some());
        assert!(log
            .refused(t0 + Duration::from_millis(5001), None, Refusal::Full)
            .is_none());
        assert_eq!(
            log.finish(t0 + Duration::from_millis(5002)),
            [
                "1 more connections refused in the last 0.0 s: all threads busy and the queue \
              is full (the last from unix socket); closed"
            ]
        );
        assert!(log.finish(t0 + Duration::from_millis(5003)).is_empty());
        // After a quiet period the next refusal is logged at once.
        assert!(log
            .refused(t0 + Duration::from_secs(10), None, Refusal::Full)
            .is_some());
        // Each reason on its own.
        assert!(log
            .refused(t0 + Duration::from_secs(10), None, Refusal::NoThread)
            .unwrap()
            .ends_with("refused: a worker thread could not be started; closed"));
    }
}
