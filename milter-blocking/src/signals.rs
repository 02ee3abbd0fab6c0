//! Stopping on SIGTERM and SIGINT, when asked for with
//! [`ServerBuilder::stop_on_signals`](crate::ServerBuilder::stop_on_signals)
//! (cargo feature `signals`, on `signal-hook`).
//!
//! While [`Server::run`](crate::Server::run) runs, the first SIGTERM or SIGINT
//! starts a graceful shutdown (stop accepting, let messages in flight finish
//! until the deadline); a second one ends it at once. When no server catches
//! them any more, the two signals terminate the process again, as by default.

use crate::server::ServerHandle;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};
use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// The signals caught.
const STOP_SIGNALS: [i32; 2] = [SIGTERM, SIGINT];

/// Catches the stop signals while a server runs; stops when dropped.
#[derive(Debug)]
pub(crate) struct SignalWatch {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

/// Servers catching the signals now, and the flag that lets the signals'
/// default action (termination) happen when there are none.
struct Catchers {
    running: Mutex<usize>,
    default_action: Arc<AtomicBool>,
}

/// Installs, once per process, the default action that applies while no
/// server catches the signals (signal-hook leaves a signal ignored once its
/// last action is removed).
fn catchers() -> io::Result<&'static Catchers> {
    static CATCHERS: OnceLock<Catchers> = OnceLock::new();
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let c = CATCHERS.get_or_init(|| Catchers {
        running: Mutex::new(0),
        default_action: Arc::new(AtomicBool::new(true)),
    });
    let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    if !*installed {
        for sig in STOP_SIGNALS {
            signal_hook::flag::register_conditional_default(sig, Arc::clone(&c.default_action))?;
        }
        *installed = true;
    }
    Ok(c)
}

impl Catchers {
    fn update(&self, delta: isize) {
        let mut n = self.running.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_add_signed(delta);
        self.default_action
            .store(*n == 0, std::sync::atomic::Ordering::SeqCst);
    }
}

impl SignalWatch {
    /// Starts catching SIGTERM and SIGINT for `server`.
    pub(crate) fn start(server: ServerHandle, deadline: Duration) -> io::Result<SignalWatch> {
        let catchers = catchers()?;
        let mut signals = Signals::new(STOP_SIGNALS)?;
        catchers.update(1);
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("milter-signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
                    if server.is_stopping() {
                        log::warn!("{name} received again: stopping at once");
                    } else {
                        log::info!(
                            "{name} received: stopping (messages in flight have {deadline:?}; \
                             a second signal stops at once)"
                        );
                    }
                    server.shutdown(deadline);
                }
            });
        match thread {
            Ok(t) => Ok(SignalWatch {
                handle,
                thread: Some(t),
            }),
            Err(e) => {
                handle.close();
                catchers.update(-1);
                Err(e)
            }
        }
    }
}

impl Drop for SignalWatch {
    /// Stops catching the signals (when `run` ends).
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Ok(c) = catchers() {
            c.update(-1);
        }
    }
}
