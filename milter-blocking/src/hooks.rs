//! Observability hooks and shadow mode.

use crate::context::ConnectionInfo;
use milter_core::{Stage, Status};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Observes a server without forcing a metrics crate on anyone: implement the
/// methods you need (all default to doing nothing) and pass the value to
/// [`ServerBuilder::hooks`](crate::ServerBuilder::hooks).
///
/// Methods run on connection threads, in the middle of the conversation with the
/// MTA: keep them cheap and never block (update atomics, send to a channel).
///
/// ```
/// use milter_blocking::{ConnectionInfo, Hooks, Stage, Status};
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::time::Duration;
///
/// #[derive(Default)]
/// struct Counts { rejects: AtomicU64 }
///
/// impl Hooks for Counts {
///     fn verdict(&self, _conn: &ConnectionInfo, _stage: Stage, status: &Status) {
///         if matches!(status, Status::Reject | Status::Reply(_)) {
///             self.rejects.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
/// ```
#[allow(unused_variables)]
pub trait Hooks: Send + Sync + 'static {
    /// A connection from the MTA was accepted and is being served.
    fn connection_opened(&self, conn: &ConnectionInfo) {}
    /// A connection ended after `duration`.
    fn connection_closed(&self, conn: &ConnectionInfo, duration: Duration) {}
    /// A connection was refused: every thread busy and the queue full.
    fn connection_refused(&self, peer: Option<SocketAddr>) {}
    /// A stage handler returned after `elapsed`.
    fn stage(&self, conn: &ConnectionInfo, stage: Stage, elapsed: Duration) {}
    /// The milter's decision ended a message (at end of message, or a final
    /// decision at an earlier stage). In shadow mode: the decision the handler
    /// made, not the one sent.
    fn verdict(&self, conn: &ConnectionInfo, stage: Stage, status: &Status) {}
    /// A modification call at end of message (`"add_header"`, `"replace_body"`,
    /// ...). In shadow mode it is counted but not sent.
    fn modification(&self, conn: &ConnectionInfo, call: &'static str) {}
    /// The MTA broke the protocol; the connection is closed.
    fn protocol_error(&self, conn: &ConnectionInfo, error: &dyn std::error::Error) {}
    /// A read from the MTA timed out; the connection is closed.
    fn timeout(&self, conn: &ConnectionInfo) {}
    /// A handler returned an error (`panicked == false`) or panicked; the
    /// connection answered the failure status and closes.
    fn handler_failed(&self, conn: &ConnectionInfo, stage: Option<Stage>, panicked: bool) {}
}

/// Per-connection observation: hooks, and in shadow mode what the milter would
/// have done to the current message.
pub(crate) struct Observer {
    pub(crate) hooks: Option<Arc<dyn Hooks>>,
    pub(crate) shadow: bool,
    /// Shadow mode: decisions and modifications of the current message.
    pub(crate) would: Vec<String>,
}

impl Observer {
    /// Called for each modification; returns whether to send it (in shadow mode
    /// it is still validated, then dropped).
    pub(crate) fn modification(
        &mut self,
        conn: &ConnectionInfo,
        call: &'static str,
        detail: impl FnOnce() -> String,
    ) -> bool {
        if let Some(h) = &self.hooks {
            h.modification(conn, call);
        }
        if self.shadow {
            self.would.push(format!("{call} {}", detail()));
        }
        !self.shadow
    }

    /// Shadow mode: the status to send instead of `status` (continue for any
    /// rejection, tempfail or discard), recording what would have happened.
    #[inline]
    pub(crate) fn filter_status(&mut self, stage: Stage, status: Status) -> Status {
        match status {
            Status::Continue | Status::Skip | Status::Accept => status,
            other if self.shadow => self.would_have_sent(stage, other),
            other => other,
        }
    }

    /// Shadow mode: records a decision that is not sent; continue goes instead.
    #[cold]
    fn would_have_sent(&mut self, stage: Stage, status: Status) -> Status {
        self.would.push(format!("{} at {stage}", status.name()));
        Status::Continue
    }

    /// Shadow mode: the one log line for a message that ended.
    pub(crate) fn message_ended(&mut self, tag: &str, how: &str) {
        if self.shadow {
            let would = std::mem::take(&mut self.would);
            log::info!(
                "{tag}: shadow: message {how}; would have sent: {}",
                if would.is_empty() {
                    "nothing but continue".to_string()
                } else {
                    would.join("; ")
                }
            );
        }
    }
}
