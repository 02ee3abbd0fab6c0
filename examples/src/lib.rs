//! Shared start-up code for the example milters: command line, logging, signals.
//!
//! Every example's command line is a [`clap`] parser that flattens [`ListenArgs`]
//! (the socket to listen on and `--shadow`) next to its own options:
//!
//! ```no_run
//! use clap::Parser;
//!
//! /// What the example does, shown by --help.
//! #[derive(Parser)]
//! #[command(name = "my-milter")]
//! struct Cli {
//!     #[command(flatten)]
//!     listen: milter_examples::ListenArgs,
//!     /// An option of this example.
//!     #[arg(long, default_value_t = 10)]
//!     every: u64,
//! }
//!
//! let cli: Cli = milter_examples::parse_args("inet:7357@127.0.0.1");
//! # let _ = cli.every;
//! # #[derive(milter_blocking::Milter, Default)] struct M;
//! # #[milter_blocking::handlers] impl milter_blocking::Milter for M {}
//! milter_examples::run_with("my-milter", &cli.listen, M::default);
//! ```

#![deny(missing_docs)]

use clap::Parser;
use milter_blocking::{Milter, Server};
use std::time::Duration;

/// How long in-flight messages may take to finish after SIGINT/SIGTERM.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// The id of [`ListenArgs::socket`] in a command, which [`parse_args`] gives its
/// default.
const SOCKET_ARG: &str = "socket";

/// The options every example takes, flattened into its own command line with
/// `#[command(flatten)]`: the socket spec and `--shadow`.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct ListenArgs {
    /// The socket to listen on: inet:PORT@HOST, inet6:PORT@HOST or unix:PATH
    /// (sockets passed by systemd socket activation take precedence).
    #[arg(id = SOCKET_ARG, value_name = "SOCKET")]
    pub socket: String,
    /// Run the milter fully but tell the MTA continue, without any modification,
    /// and log once per message what it would have done.
    #[arg(long)]
    pub shadow: bool,
}

/// Parses the process's arguments into `T` (a parser that flattens
/// [`ListenArgs`]), with `default_socket` as the socket when none is given; on a
/// usage error prints it with the usage to stderr and exits with status 2
/// (`--help` prints the help and exits with status 0).
///
/// ```
/// use clap::Parser;
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     listen: milter_examples::ListenArgs,
///     #[arg(long)]
///     max_bytes: Option<u64>,
/// }
/// let args = ["size-limit", "--max-bytes", "100", "--shadow"];
/// let cli: Cli = milter_examples::try_parse_args_from(args, "inet:7373@127.0.0.1").unwrap();
/// assert_eq!(cli.listen.socket, "inet:7373@127.0.0.1");
/// assert!(cli.listen.shadow);
/// assert_eq!(cli.max_bytes, Some(100));
/// let args = ["size-limit", "unix:/run/milter.sock"];
/// let cli: Cli = milter_examples::try_parse_args_from(args, "inet:7373@127.0.0.1").unwrap();
/// assert_eq!(cli.listen.socket, "unix:/run/milter.sock");
/// assert!(milter_examples::try_parse_args_from::<Cli, _>(["x", "--bogus"], "x").is_err());
/// ```
pub fn parse_args<T: Parser>(default_socket: &'static str) -> T {
    try_parse_args_from(std::env::args_os(), default_socket).unwrap_or_else(|e| e.exit())
}

/// [`parse_args`] of the given arguments (the first is the program's name),
/// returning the error instead of exiting.
pub fn try_parse_args_from<T, I>(args: I, default_socket: &'static str) -> Result<T, clap::Error>
where
    T: Parser,
    I: IntoIterator,
    I::Item: Into<std::ffi::OsString> + Clone,
{
    let mut command = T::command().mut_arg(SOCKET_ARG, |a| {
        a.required(false).default_value(default_socket)
    });
    let mut matches = command.try_get_matches_from_mut(args)?;
    T::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut command))
}

/// The command line of an example with no options of its own.
#[derive(Parser, Debug)]
struct ListenOnly {
    #[command(flatten)]
    listen: ListenArgs,
}

/// Runs a milter example that has no options of its own: the command line is
/// `[--shadow] [SOCKET]` (default `default_socket`); logs go to stderr
/// (`RUST_LOG` sets the level, default info); SIGINT and SIGTERM stop the server
/// gracefully. Exits the process with status 1 on a start-up error.
pub fn run<M, F>(name: &str, default_socket: &'static str, factory: F)
where
    M: Milter + 'static,
    F: Fn() -> M + Send + Sync + 'static,
{
    let cli: ListenOnly = parse_args(default_socket);
    run_with(name, &cli.listen, factory);
}

/// Sends logs to stderr (`RUST_LOG` sets the level, default info). Does nothing
/// when logging is already set up, so an example may call it before [`run_with`]
/// to report start-up problems (a bad configuration file, say).
pub fn init_logging() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .try_init();
}

/// Like [`run`], with a command line parsed by the example: listens on
/// `listen.socket`, in shadow mode when `--shadow` was given.
pub fn run_with<M, F>(name: &str, listen: &ListenArgs, factory: F)
where
    M: Milter + 'static,
    F: Fn() -> M + Send + Sync + 'static,
{
    init_logging();
    if listen.shadow {
        log::info!("{name}: shadow mode: decisions and modifications are logged, not sent");
    }
    if let Err(e) = serve(&listen.socket, listen.shadow, factory) {
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
