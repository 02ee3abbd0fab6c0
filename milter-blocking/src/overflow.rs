//! What a connection that finds every thread busy and the queue full gets:
//! closed at once (the default), or negotiated and answered tempfail or
//! accept for its session by one small thread of its own
//! ([`ServerBuilder::when_full`](crate::ServerBuilder::when_full)).
//!
//! What each MTA does with each answer: see [`WhenFull`].

use crate::cache_line::CacheLine;
use crate::listener::Stream;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use milter_core::filter::FilterSession;
use milter_core::frame::FrameDecoder;
use milter_core::{Spec, Stages, Status};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What to answer a connection when every thread is busy and the queue is
/// full ([`ServerBuilder::when_full`](crate::ServerBuilder::when_full)).
///
/// What the MTA does with each answer (a decision at connect covers the
/// whole SMTP session):
///
/// | answer | Postfix | Sendmail |
/// | --- | --- | --- |
/// | close ([`WhenFull::Close`]) | `milter_default_action`: `tempfail` (to 3.10) answers every command of the session with `451 4.7.1`; `shutdown` (default from 3.11) answers `421 4.7.1` and disconnects the SMTP client; `accept` goes on without the milter | the `F=` flags: `F=T` tempfails, `F=R` rejects, none goes on without the milter |
/// | tempfail ([`WhenFull::Tempfail`]) | every later command of the SMTP session is answered `451 4.7.1 Service unavailable - try again later`; the client stays connected and retries later | the session is refused with a temporary failure: every later command is answered with a 4xx (its "null server" mode) |
/// | accept ([`WhenFull::Accept`]) | the session goes on without this milter (its mail is not filtered) | the same |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WhenFull {
    /// Close it at once, unanswered: the MTA applies its failure policy
    /// (Postfix `milter_default_action`, Sendmail's `F=` flags). The default.
    #[default]
    Close,
    /// Negotiate, then answer tempfail at connect: the MTA tempfails the
    /// whole SMTP session (`451`), whatever its failure policy.
    Tempfail,
    /// Negotiate, then answer accept at connect: the MTA goes on without
    /// this milter for the session (its mail is not filtered).
    Accept,
}

impl WhenFull {
    /// The decision sent, if any.
    fn status(self) -> Option<Status> {
        match self {
            WhenFull::Close => None,
            WhenFull::Tempfail => Some(Status::Tempfail),
            WhenFull::Accept => Some(Status::Accept),
        }
    }

    /// What the log says was done with a refused connection.
    pub(crate) fn outcome(self) -> &'static str {
        match self {
            WhenFull::Close => "closed",
            WhenFull::Tempfail => "answered tempfail for the session",
            WhenFull::Accept => "answered accept for the session",
        }
    }
}

/// Connections waiting for the answering thread; beyond, they are closed.
const WAITING: usize = 64;

/// The longest the answering thread spends on one connection.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The thread that answers refused connections (none for [`WhenFull::Close`]).
#[derive(Debug)]
pub(crate) struct Overflow {
    tx: Option<Sender<Stream>>,
    thread: Option<JoinHandle<()>>,
}

impl Overflow {
    /// Starts the answering thread, if `when_full` answers. Once `stopping`
    /// is set, the connections still waiting for it are closed unanswered.
    pub(crate) fn start(
        when_full: WhenFull,
        stopping: Arc<CacheLine<AtomicBool>>,
    ) -> io::Result<Overflow> {
        let Some(status) = when_full.status() else {
            return Ok(Overflow {
                tx: None,
                thread: None,
            });
        };
        let (tx, rx): (Sender<Stream>, Receiver<Stream>) = bounded(WAITING);
        let thread = thread::Builder::new()
            .name("milter-overflow".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                for stream in rx {
                    if !stopping.load(Ordering::SeqCst) {
                        if let Err(e) = answer(&stream, &status) {
                            log::debug!("refused connection not answered: {e}");
                        }
                    }
                    let _ = stream.shutdown(Shutdown::Both);
                }
            })?;
        Ok(Overflow {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// A sender for an accept loop (`None` for [`WhenFull::Close`]).
    pub(crate) fn sender(&self) -> Option<Sender<Stream>> {
        self.tx.clone()
    }
}

/// Hands a refused connection to the answering thread; closes it when there is
/// none or it is too far behind.
pub(crate) fn refuse(to: Option<&Sender<Stream>>, stream: Stream) {
    let stream = match to {
        Some(tx) => match tx.try_send(stream) {
            Ok(()) => return,
            Err(TrySendError::Full(s) | TrySendError::Disconnected(s)) => s,
        },
        None => stream,
    };
    let _ = stream.shutdown(Shutdown::Both);
}

impl Drop for Overflow {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Negotiates (asking only for connect) and answers `status` to the first
/// command that needs a reply.
fn answer(stream: &Stream, status: &Status) -> io::Result<()> {
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let spec = Spec {
        handled: Stages::CONNECT,
        ..Spec::NONE
    };
    let mut session = FilterSession::new();
    let mut decoder = FrameDecoder::new();
    let mut stream = stream.clone();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no answer within the time allowed",
            ));
        }
        stream.set_timeouts(Some(left), Some(left))?;
        let n = stream.read(decoder.spare())?;
        if n == 0 {
            return Ok(());
        }
        decoder.commit(n);
        while let Some(frame) = decoder.next_frame().map_err(io::Error::other)? {
            let input = session.handle(frame).map_err(io::Error::other)?;
            if let Some(milter_core::filter::Event::Negotiate(_)) = input.event {
                session.negotiate(&spec).map_err(io::Error::other)?;
            } else if session.owed().is_some() {
                session.reply(status.clone()).map_err(io::Error::other)?;
                stream.write_all(session.output())?;
                return Ok(());
            }
            stream.write_all(session.output())?;
            session.clear_output();
        }
    }
}
