//! `metrics`: how to watch a milter in production without a metrics crate. It
//! implements [`Hooks`] with atomics and prints, every N seconds (`--every 10`), a
//! summary line: connections, messages and verdicts, modifications, errors, the
//! slowest stage handler, and the live state from `ServerHandle::stats()` (open,
//! idle, by stage, threads). With `--scrape FILE` it also rewrites FILE each time in
//! a plain `name value` text format a scraper (node_exporter's textfile collector,
//! say) can read.
//!
//! The milter itself is a small recipient counter that stamps `X-Rcpt-Count`.
//!
//! Run: `cargo run -p milter-examples --bin metrics -- inet:7358@127.0.0.1 --every 5`
//!
//! Postfix (`main.cf`): `smtpd_milters = inet:127.0.0.1:7358`
//! Sendmail (`.mc`): `INPUT_MAIL_FILTER(`metrics', `S=inet:7358@127.0.0.1, F=T')`

use clap::Parser;
use milter_blocking::{
    handlers, ConnectionInfo, Context, EnvelopeAddr, EomContext, HandlerResult, Hooks, Milter,
    ServerHandle, Stage, Status,
};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Milter, Default)]
#[milter(actions(add_header))]
struct RcptCounter {
    #[milter(per_message)]
    rcpts: u32,
}

#[handlers]
impl Milter for RcptCounter {
    fn rcpt(&mut self, _ctx: &mut Context<'_>, _rcpt: &EnvelopeAddr<'_>) -> Status {
        self.rcpts += 1;
        Status::Continue
    }

    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        ctx.add_header("X-Rcpt-Count", self.rcpts.to_string())?;
        Ok(Status::Continue)
    }
}

/// Counters updated by the server's threads.
#[derive(Default)]
struct Metrics {
    connections_opened: AtomicU64,
    connections_closed: AtomicU64,
    connections_refused: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    tempfailed: AtomicU64,
    discarded: AtomicU64,
    modifications: AtomicU64,
    protocol_errors: AtomicU64,
    timeouts: AtomicU64,
    handler_errors: AtomicU64,
    handler_panics: AtomicU64,
    /// Slowest handler call since the last summary, in microseconds, per stage.
    slowest_us: [AtomicU64; 10],
}

fn stage_index(stage: Stage) -> usize {
    Stage::ALL.iter().position(|s| *s == stage).unwrap_or(0)
}

impl Hooks for Metrics {
    fn connection_opened(&self, _: &ConnectionInfo) {
        self.connections_opened.fetch_add(1, Ordering::Relaxed);
    }
    fn connection_closed(&self, _: &ConnectionInfo, _: Duration) {
        self.connections_closed.fetch_add(1, Ordering::Relaxed);
    }
    fn connection_refused(&self, _: Option<SocketAddr>) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }
    fn stage(&self, _: &ConnectionInfo, stage: Stage, elapsed: Duration) {
        let us = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        self.slowest_us[stage_index(stage)].fetch_max(us, Ordering::Relaxed);
    }
    fn verdict(&self, _: &ConnectionInfo, _: Stage, status: &Status) {
        let counter = match status {
            Status::Reject => &self.rejected,
            Status::Tempfail => &self.tempfailed,
            Status::Discard => &self.discarded,
            Status::Reply(r) if r.is_permanent() => &self.rejected,
            Status::Reply(_) => &self.tempfailed,
            _ => &self.accepted,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    fn modification(&self, _: &ConnectionInfo, _: &'static str) {
        self.modifications.fetch_add(1, Ordering::Relaxed);
    }
    fn protocol_error(&self, _: &ConnectionInfo, _: &dyn std::error::Error) {
        self.protocol_errors.fetch_add(1, Ordering::Relaxed);
    }
    fn timeout(&self, _: &ConnectionInfo) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }
    fn handler_failed(&self, _: &ConnectionInfo, _: Option<Stage>, panicked: bool) {
        if panicked {
            self.handler_panics.fetch_add(1, Ordering::Relaxed);
        } else {
            self.handler_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Metrics {
    /// `name value` lines, one per counter, plus the live state.
    fn scrape(&self, handle: &ServerHandle) -> String {
        let mut out = String::new();
        let counters: [(&str, &AtomicU64); 12] = [
            ("milter_connections_opened_total", &self.connections_opened),
            ("milter_connections_closed_total", &self.connections_closed),
            (
                "milter_connections_refused_total",
                &self.connections_refused,
            ),
            ("milter_messages_accepted_total", &self.accepted),
            ("milter_messages_rejected_total", &self.rejected),
            ("milter_messages_tempfailed_total", &self.tempfailed),
            ("milter_messages_discarded_total", &self.discarded),
            ("milter_modifications_total", &self.modifications),
            ("milter_protocol_errors_total", &self.protocol_errors),
            ("milter_timeouts_total", &self.timeouts),
            ("milter_handler_errors_total", &self.handler_errors),
            ("milter_handler_panics_total", &self.handler_panics),
        ];
        for (name, c) in counters {
            let _ = writeln!(out, "{name} {}", c.load(Ordering::Relaxed));
        }
        for stage in Stage::ALL {
            let us = self.slowest_us[stage_index(stage)].swap(0, Ordering::Relaxed);
            let _ = writeln!(
                out,
                "milter_handler_slowest_seconds{{stage=\"{stage}\"}} {:.6}",
                us as f64 / 1e6
            );
        }
        let stats = handle.stats();
        let _ = writeln!(out, "milter_connections_open {}", stats.open);
        let _ = writeln!(out, "milter_connections_idle {}", stats.idle);
        for (stage, n) in &stats.in_stage {
            let _ = writeln!(out, "milter_connections_in_stage{{stage=\"{stage}\"}} {n}");
        }
        let _ = writeln!(out, "milter_threads {}", stats.threads);
        let _ = writeln!(out, "milter_threads_idle {}", stats.idle_threads);
        out
    }
}

/// A recipient-counting milter that logs a metrics summary every N seconds.
#[derive(Parser)]
#[command(name = "metrics")]
struct Cli {
    #[command(flatten)]
    listen: milter_examples::ListenArgs,
    /// Seconds between two summaries.
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    every: u64,
    /// Also rewrite FILE with every summary, as `name value` lines for a scraper.
    #[arg(long, value_name = "FILE")]
    scrape: Option<PathBuf>,
}

fn main() {
    let cli: Cli = milter_examples::parse_args("inet:7358@127.0.0.1");
    milter_examples::init_logging();
    let every = Duration::from_secs(cli.every);
    let scrape_file = cli.scrape;
    let metrics = Arc::new(Metrics::default());
    let server = milter_examples::listen(&cli.listen.socket)
        .and_then(|b| {
            b.shadow(cli.listen.shadow)
                .hooks(metrics.clone())
                .stop_on_signals(milter_examples::SHUTDOWN_DEADLINE)
                .build(RcptCounter::default)
        })
        .unwrap_or_else(|e| fail(&e.to_string()));
    let handle = server.handle();
    {
        let handle = handle.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(every);
            let text = metrics.scrape(&handle);
            let summary: Vec<&str> = text
                .lines()
                .filter(|l| !l.ends_with(" 0") && !l.ends_with(" 0.000000"))
                .collect();
            log::info!("metrics: {}", summary.join(", "));
            if let Some(path) = &scrape_file {
                // Write then rename, so a scraper never reads half a file.
                let mut tmp = path.clone().into_os_string();
                tmp.push(".tmp");
                if std::fs::write(&tmp, &text)
                    .and_then(|()| std::fs::rename(&tmp, path))
                    .is_err()
                {
                    log::warn!("metrics: cannot write {}", path.display());
                }
            }
        });
    }
    if let Err(e) = server.run() {
        fail(&e.to_string());
    }
}

fn fail(msg: &str) -> ! {
    log::error!("metrics: {msg}");
    std::process::exit(1);
}
