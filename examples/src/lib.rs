//! Shared start-up code for the example milters: command line, logging, signals.

#![deny(missing_docs)]

use milter_blocking::{Milter, Server};
use std::time::Duration;

/// How long in-flight messages may take to finish after SIGINT/SIGTERM.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// Runs a milter example: the first argument is the socket spec (default
/// `default_spec`); logs go to stderr (`RUST_LOG` sets the level, default info);
/// SIGINT and SIGTERM stop the server gracefully. Exits the process with status 1
/// on a start-up error.
pub fn run<M, F>(name: &str, default_spec: &str, factory: F)
where
    M: Milter + 'static,
    F: Fn() -> M + Send + Sync + 'static,
{
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let spec = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_else(|| default_spec.to_string());
    if let Err(e) = serve(&spec, factory) {
        log::error!("{name}: {e}");
        std::process::exit(1);
    }
}

fn serve<M, F>(spec: &str, factory: F) -> Result<(), Box<dyn std::error::Error>>
where
    M: Milter + 'static,
    F: Fn() -> M + Send + Sync + 'static,
{
    let server = Server::builder().listen(spec)?.build(factory)?;
    let handle = server.handle();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            log::info!(
                "signal {sig}: shutting down (in-flight messages get {SHUTDOWN_DEADLINE:?})"
            );
            handle.shutdown(SHUTDOWN_DEADLINE);
        }
    });
    server.run()?;
    Ok(())
}
