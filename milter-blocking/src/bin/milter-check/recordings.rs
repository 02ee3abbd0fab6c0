//! The `record` and `replay` subcommands of `milter-check`.

use clap::{Args, Subcommand};
use milter_blocking::client::{
    replay_with_timeout, ErrorKind, Recording, RecordingProxy, ReplayError, REPLAY_TIMEOUT,
};
use milter_blocking::SocketSpec;
use std::path::PathBuf;
use std::time::Duration;

const RECORD_HELP: &str = "\
Each milter connection becomes one file DIR/SECONDS-PID-N.milter-recording, written as
the packets pass (see the recording format in the milter-blocking documentation, module
client::recording). Bytes are relayed unchanged. Stop with Ctrl-C.

Exit status:
  64  usage error
  71  cannot listen
  73  the directory cannot be created

Example (Postfix: smtpd_milters = inet:127.0.0.1:7358):
  milter-check record --listen inet:7358@127.0.0.1 --milter inet:7357@127.0.0.1 --dir rec/";

const REPLAY_HELP: &str = "\
Sends the recording's MTA side to the milter and compares each answer with the recorded
one: negotiation, verdicts, reply texts, modifications.

Exit status:
  0   the milter answered as recorded
  1   the answers differ (each difference is printed)
  64  usage error (bad option or socket spec)
  65  the recording is malformed or cannot be replayed
  66  the recording cannot be read
  69  cannot connect to the milter
  70  the milter broke the protocol
  74  other I/O error
  75  the milter timed out

Example:
  milter-check replay rec/1796536296-4242-000000.milter-recording inet:7357@127.0.0.1";

/// Subcommands besides the default (run one message).
#[derive(Debug, Subcommand)]
pub enum Tool {
    /// Relay an MTA's milter connections to a milter and record each one
    #[command(after_help = RECORD_HELP)]
    Record(RecordArgs),
    /// Replay a recording's MTA side against a milter and report differences
    #[command(after_help = REPLAY_HELP)]
    Replay(ReplayArgs),
}

/// `milter-check record`.
#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Where the MTA connects: inet:PORT@HOST, inet6:PORT@HOST or unix:PATH
    #[arg(long, value_name = "SOCKET")]
    listen: String,
    /// The milter to relay to
    #[arg(long, value_name = "SOCKET")]
    milter: String,
    /// Directory for the recordings (created if missing)
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Record packets with payloads up to this many bytes; larger ones are relayed
    /// and noted by their length
    #[arg(long, value_name = "BYTES", default_value_t = 1_048_575)]
    max_payload: usize,
}

/// `milter-check replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The recording (a .milter-recording file)
    #[arg(value_name = "RECORDING")]
    recording: PathBuf,
    /// The milter: inet:PORT@HOST, inet6:PORT@HOST or unix:PATH
    #[arg(value_name = "SOCKET")]
    socket: String,
    /// Wait at most this many seconds for each answer
    #[arg(short, long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Print only the summary line
    #[arg(short, long)]
    quiet: bool,
}

/// Runs a subcommand: the exit code, or a failure's code and message.
pub fn run(tool: &Tool) -> Result<u8, (u8, String)> {
    match tool {
        Tool::Record(a) => record(a),
        Tool::Replay(a) => replay(a),
    }
}

fn spec(text: &str) -> Result<SocketSpec, (u8, String)> {
    text.parse()
        .map_err(|e: milter_blocking::SocketSpecError| (64, e.to_string()))
}

/// Prints the proxy's warnings and errors (a connection it could not relay, a
/// recording it could not write) on standard error.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("milter-check: {}", r.args());
        }
    }

    fn flush(&self) {}
}

static STDERR_LOG: StderrLog = StderrLog;

fn record(a: &RecordArgs) -> Result<u8, (u8, String)> {
    if log::set_logger(&STDERR_LOG).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
    let listen = spec(&a.listen)?;
    let milter = spec(&a.milter)?;
    let proxy = RecordingProxy::bind(&listen, milter.clone(), &a.dir).map_err(|e| {
        let code = match e {
            milter_blocking::client::ProxyError::Directory { .. } => 73,
            _ => 71,
        };
        (code, e.to_string())
    })?;
    let proxy = proxy.max_payload(a.max_payload);
    eprintln!(
        "milter-check: relaying {} to {milter}, recording into {}",
        proxy.local_spec(),
        a.dir.display()
    );
    proxy.run().map_err(|e| (71, e.to_string()))?;
    Ok(0)
}

fn replay(a: &ReplayArgs) -> Result<u8, (u8, String)> {
    let timeout = match a.timeout {
        None => REPLAY_TIMEOUT,
        Some(secs) => Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|t| !t.is_zero())
            .ok_or((
                64,
                format!("bad timeout {secs}: give a positive number of seconds"),
            ))?,
    };
    let socket = spec(&a.socket)?;
    let text = std::fs::read_to_string(&a.recording)
        .map_err(|e| (66, format!("cannot read {}: {e}", a.recording.display())))?;
    let recording =
        Recording::parse(&text).map_err(|e| (65, format!("{}: {e}", a.recording.display())))?;
    let report = replay_with_timeout(&recording, socket, timeout).map_err(|e| {
        let code = match &e {
            ReplayError::NotReplayable { .. } => 65,
            ReplayError::Milter(c) => match c.kind() {
                ErrorKind::Misuse => 64,
                ErrorKind::Connect => 69,
                ErrorKind::Protocol => 70,
                ErrorKind::Timeout => 75,
                _ => 74,
            },
            _ => 74,
        };
        (code, e.to_string())
    })?;
    if a.quiet {
        println!("{}", report.to_string().lines().last().unwrap_or_default());
    } else {
        println!("{report}");
    }
    Ok(if report.is_same() { 0 } else { 1 })
}
