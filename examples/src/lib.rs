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
    init_logging();
    let spec = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_else(|| default_spec.to_string());
    if let Err(e) = serve(&spec, false, factory) {
        log::error!("{name}: {e}");
        std::process::exit(1);
    }
}

/// Sends logs to stderr (`RUST_LOG` sets the level, default info). Does nothing
/// when logging is already set up, so an example may call it before [`run_with`]
/// to report start-up problems (a bad configuration file, say).
pub fn init_logging() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .try_init();
}

/// An example's command line: `[--shadow] [--NAME VALUE | --NAME=VALUE]... [SPEC]`,
/// options and the socket spec in any order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// The socket spec to listen on (the default when none was given).
    pub spec: String,
    /// `--shadow`: run the milter fully but tell the MTA continue, without any
    /// modification, and log once per message what it would have done.
    pub shadow: bool,
    /// The `--NAME VALUE` options given, in order (names without the dashes).
    pub options: Vec<(String, String)>,
}

impl CommandLine {
    /// Parses `args` (without the program name). `value_options` are the option
    /// names (without the dashes) that take a value; any other `--` option but
    /// `--shadow` is an error, and so is a second socket spec.
    ///
    /// ```
    /// use milter_examples::CommandLine;
    /// let args = ["--max-bytes", "100", "--shadow", "inet:1@127.0.0.1"].map(String::from);
    /// let c = CommandLine::parse(args, "inet:7357@127.0.0.1", &["max-bytes"]).unwrap();
    /// assert_eq!(c.spec, "inet:1@127.0.0.1");
    /// assert!(c.shadow);
    /// assert_eq!(c.value("max-bytes"), Some("100"));
    /// assert!(CommandLine::parse(["--bogus".to_string()], "x", &[]).is_err());
    /// ```
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        default_spec: &str,
        value_options: &[&str],
    ) -> Result<CommandLine, String> {
        let mut spec = None;
        let mut shadow = false;
        let mut options = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let Some(option) = arg.strip_prefix("--") else {
                if let Some(first) = &spec {
                    return Err(format!("two socket specs: {first:?} and {arg:?}"));
                }
                spec = Some(arg);
                continue;
            };
            if option == "shadow" {
                shadow = true;
                continue;
            }
            let (name, inline) = match option.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (option, None),
            };
            if !value_options.contains(&name) {
                return Err(format!("unknown option --{name}"));
            }
            let value = match inline {
                Some(v) => v,
                None => args
                    .next()
                    .ok_or_else(|| format!("--{name} needs a value"))?,
            };
            options.push((name.to_string(), value));
        }
        Ok(CommandLine {
            spec: spec.unwrap_or_else(|| default_spec.to_string()),
            shadow,
            options,
        })
    }

    /// [`CommandLine::parse`] of the process's arguments; on an error prints it
    /// with `usage` to stderr and exits with status 2.
    pub fn from_env_or_exit(
        name: &str,
        usage: &str,
        default_spec: &str,
        value_options: &[&str],
    ) -> CommandLine {
        match CommandLine::parse(std::env::args().skip(1), default_spec, value_options) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{name}: {e}\nusage: {name} {usage}");
                std::process::exit(2);
            }
        }
    }

    /// The value of the last `--name` option given.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Like [`run`], with a command line parsed by the example: listens on
/// `command_line.spec`, in shadow mode when `--shadow` was given.
pub fn run_with<M, F>(name: &str, command_line: &CommandLine, factory: F)
where
    M: Milter + 'static,
    F: Fn() -> M + Send + Sync + 'static,
{
    init_logging();
    if command_line.shadow {
        log::info!("{name}: shadow mode: decisions and modifications are logged, not sent");
    }
    if let Err(e) = serve(&command_line.spec, command_line.shadow, factory) {
        log::error!("{name}: {e}");
        std::process::exit(1);
    }
}

fn serve<M, F>(spec: &str, shadow: bool, factory: F) -> Result<(), Box<dyn std::error::Error>>
where
    M: Milter + 'static,
    F: Fn() -> M + Send + Sync + 'static,
{
    let server = listen(spec)?
        .shadow(shadow)
        .stop_on_signals(SHUTDOWN_DEADLINE)
        .build(factory)?;
    server.run()?;
    Ok(())
}

/// A server builder listening on the sockets the service manager passed (systemd
/// socket activation), or else on `spec`.
pub fn listen(spec: &str) -> Result<milter_blocking::ServerBuilder, milter_blocking::ServerError> {
    let builder = Server::builder().listen_activated()?;
    if builder.has_listener() {
        log::info!("using the sockets passed by the service manager");
        Ok(builder)
    } else {
        builder.listen(spec)
    }
}
