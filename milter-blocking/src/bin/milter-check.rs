//! `milter-check`: run one message through a milter, the way Postfix or Sendmail
//! would, and show what it did.
//!
//! ```text
//! cargo run -p milter-blocking --features cli --bin milter-check -- \
//!     inet:7357@127.0.0.1 message.eml --from a@example.org --rcpt b@example.com
//! ```
//!
//! It prints what was negotiated, each stage's reply, the modifications and the
//! verdict; `--output FILE` writes the message as the MTA would queue it (with
//! Postfix's rules, or Sendmail's for the Sendmail profiles). Headers print as
//! `Name: value`, with no extra space when the value keeps its own leading space.
//!
//! `--profile` chooses the MTA to imitate: `postfix` (Postfix 3.7, the default;
//! also `postfix-3.7`), `postfix-3.11`, `sendmail` (Sendmail 8.17; also
//! `sendmail-8.17`), `sendmail-8.18`, `stalwart` (its run of a milter at the DATA
//! stage) or `minimal` (a plain protocol driver). The profile decides the offer,
//! the macros, what is tolerated from the milter, when the connection is closed,
//! and what happens when the milter fails: then a `verdict:` line says what that
//! MTA does with the message (Postfix 3.7 tempfails it, 3.11 drops the SMTP
//! session, Sendmail goes on without the milter, Stalwart tempfails), and the
//! exit status is the failure's. With `--profile stalwart`, `--stages
//! connect,ehlo,mail,rcpt,data` says which stages the milter is configured for:
//! Stalwart runs it on a new connection for each (at rcpt, after each
//! recipient), replaying the earlier stages, and the first refusal ends the
//! message. A peer that is not a milter (clamd, an HTTP or
//! SMTP server, TLS) is named as such in the error.
//!
//! Errors are reported in one line on standard error.
//!
//! `milter-check record --listen SOCKET --milter SOCKET --dir DIR` relays an MTA's
//! milter connections and records each; `milter-check replay RECORDING SOCKET` replays
//! one against a milter and reports where the answers differ (exit 0 same, 1
//! differs). See `docs/RECORDINGS.md` and `milter-check record --help`.
//!
//! Exit status:
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | accepted (continue or accept) |
//! | 1 | rejected (at any stage, or every recipient refused) |
//! | 2 | temporarily refused (tempfail, a 4xx reply, shutdown) |
//! | 3 | discarded |
//! | 4 | accepted and quarantined |
//! | 64 | usage error (bad option, socket spec or macro) |
//! | 66 | the message file cannot be read |
//! | 69 | cannot connect to the milter |
//! | 70 | the milter broke the protocol or closed the connection |
//! | 73 | the output file cannot be written |
//! | 74 | other I/O error |
//! | 75 | the milter timed out |

#[path = "milter-check/recordings.rs"]
mod recordings;

use clap::Parser;
use milter_blocking::client::{
    Address, ApplyRules, Client, ClientAddress, ClientError, ClientNegotiated, Envelope, ErrorKind,
    Message, Modification, Profile, Response, Step, Timeouts, Transcript, Verdict,
};
use milter_blocking::{MacroStage, Stage};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// The names `--profile` takes ([`Profile::name`], plus the versioned aliases).
const PROFILE_NAMES: [&str; 8] = [
    "postfix",
    "postfix-3.7",
    "postfix-3.11",
    "sendmail",
    "sendmail-8.17",
    "sendmail-8.18",
    "stalwart",
    "minimal",
];

const EXIT_HELP: &str = "\
Exit status:
  0   accepted (continue or accept)
  1   rejected (at any stage, or every recipient refused)
  2   temporarily refused (tempfail, a 4xx reply, shutdown)
  3   discarded
  4   accepted and quarantined
  64  usage error (bad option, socket spec or macro)
  66  the message file cannot be read
  69  cannot connect to the milter
  70  the milter broke the protocol or closed the connection
  73  the output file cannot be written
  74  other I/O error
  75  the milter timed out

Examples:
  milter-check inet:7357@127.0.0.1 message.eml --from a@example.org --rcpt b@example.com
  milter-check unix:/run/milter.sock - --profile sendmail --macro mail:{auth_authen}=alice < msg.eml
  milter-check inet:11332@127.0.0.1 msg.eml --profile stalwart --stages rcpt,data";

/// Run a message through a milter as Postfix or Sendmail would, and show what the
/// milter did.
#[derive(Debug, Parser)]
#[command(
    name = "milter-check",
    version,
    after_help = EXIT_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    /// Record an MTA's milter connections, or replay a recording
    #[command(subcommand)]
    tool: Option<recordings::Tool>,

    /// The milter's socket: inet:PORT@HOST, inet6:PORT@HOST or unix:PATH
    #[arg(value_name = "SOCKET", required = true)]
    socket: Option<String>,

    /// The message (RFC 5322, CRLF or LF line ends); "-" or none reads standard input
    #[arg(value_name = "MESSAGE")]
    message: Option<PathBuf>,

    /// Envelope sender, optionally with ESMTP parameters: "a@example.org SIZE=100"
    #[arg(
        short,
        long,
        value_name = "ADDRESS",
        default_value = "sender@example.org"
    )]
    from: String,

    /// Envelope recipient, optionally with ESMTP parameters (repeatable;
    /// recipient@example.com when none is given)
    #[arg(short, long, value_name = "ADDRESS")]
    rcpt: Vec<String>,

    /// HELO/EHLO name the SMTP client gives
    #[arg(long, value_name = "NAME", default_value = "client.example.net")]
    helo: String,

    /// The SMTP client's address: IPv4 or IPv6, optionally with a port, unix:PATH or unknown
    #[arg(long, value_name = "ADDR", default_value = "192.0.2.1")]
    client_addr: String,

    /// The SMTP client's host name
    #[arg(long, value_name = "NAME", default_value = "client.example.net")]
    client_name: String,

    /// Send a macro: STAGE:NAME=VALUE sends it at that stage (connect, helo, mail,
    /// rcpt, data, header, eoh, body, eom, unknown); NAME=VALUE sets the value of a
    /// macro wherever a macro list names it (repeatable)
    #[arg(short, long = "macro", value_name = "[STAGE:]NAME=VALUE")]
    macros: Vec<String>,

    /// The MTA to imitate: its offer, macros, aborts, timeouts, and what it does
    /// when the milter fails (postfix is Postfix 3.7, sendmail is Sendmail 8.17)
    #[arg(short, long, value_name = "MTA", default_value = "postfix", value_parser = PROFILE_NAMES)]
    profile: String,

    /// With --profile stalwart: the stages the milter is configured for, of
    /// connect, ehlo, mail, rcpt, data (default data). Stalwart runs the milter
    /// on a connection of its own for each (at rcpt, for each recipient),
    /// replaying the earlier stages; the first refusal ends the message.
    #[arg(long, value_name = "STAGE,...", value_delimiter = ',')]
    stages: Vec<String>,

    /// Offer this protocol version (2, 3, 4 or 6) with Postfix's masks for it
    #[arg(long, value_name = "N", value_parser = ["2", "3", "4", "6"])]
    offer_version: Option<String>,

    /// Wait at most this many seconds for each reply (default: the profile's)
    #[arg(short, long, value_name = "SECONDS")]
    timeout: Option<f64>,

    /// Write the message as the MTA would queue it (after the modifications)
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// Print only the verdict
    #[arg(short, long)]
    quiet: bool,
}

/// A failure with its exit code and one line of explanation.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: 64,
            message: message.into(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        let code = match e.kind() {
            ErrorKind::Misuse => 64,
            ErrorKind::Connect => 69,
            ErrorKind::Protocol => 70,
            ErrorKind::Timeout => 75,
            _ => 74,
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 64 } else { 0 });
        }
    };
    if let Some(tool) = &cli.tool {
        return match recordings::run(tool) {
            Ok(code) => ExitCode::from(code),
            Err((code, message)) => {
                eprintln!("milter-check: {message}");
                ExitCode::from(code)
            }
        };
    }
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("milter-check: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn stage_by_name(name: &str) -> Option<Stage> {
    Stage::ALL.into_iter().find(|s| s.name() == name)
}

fn run(cli: &Cli) -> Result<u8, Failure> {
    let profile: Profile = cli.profile.parse().map_err(Failure::usage)?;
    let mut builder = Client::builder().profile(profile);
    if let Some(v) = &cli.offer_version {
        builder = builder.offer_version(v.parse().map_err(|_| Failure::usage("bad version"))?);
    }
    if let Some(secs) = cli.timeout {
        let t = Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|t| !t.is_zero())
            .ok_or_else(|| {
                Failure::usage(format!(
                    "bad timeout {secs}: give a positive number of seconds"
                ))
            })?;
        builder = builder.timeouts(Timeouts::uniform(t));
    }
    for m in &cli.macros {
        let (target, value) = m.split_once('=').ok_or_else(|| {
            Failure::usage(format!("bad macro {m:?}: expected [STAGE:]NAME=VALUE"))
        })?;
        match target.split_once(':') {
            Some((stage, name)) => {
                let stage = stage_by_name(stage).ok_or_else(|| {
                    Failure::usage(format!(
                        "bad macro {m:?}: unknown stage {stage:?} (connect, helo, mail, rcpt, data, header, eoh, body, eom, unknown)"
                    ))
                })?;
                if name.is_empty() {
                    return Err(Failure::usage(format!("bad macro {m:?}: empty name")));
                }
                builder = builder.stage_macro(stage, name, value);
            }
            None if target.is_empty() => {
                return Err(Failure::usage(format!("bad macro {m:?}: empty name")))
            }
            None => builder = builder.macro_value(target, value),
        }
    }
    let client_addr: ClientAddress = cli.client_addr.parse().map_err(Failure::usage)?;
    let mut envelope = Envelope::new(&cli.from).helo(&cli.helo);
    envelope.client_name = cli.client_name.clone();
    envelope.client_addr = client_addr;
    if cli.rcpt.is_empty() {
        envelope
            .recipients
            .push(Address::new("recipient@example.com"));
    }
    for r in &cli.rcpt {
        envelope.recipients.push(Address::parse(r));
    }
    let message = read_message(cli.message.as_ref())?;

    let out = std::io::stdout();
    let mut out = out.lock();
    let stages = stalwart_stages(cli, profile)?;
    for &stage in stages.iter().filter(|&&s| s < Stage::Data) {
        // At RCPT, one run after each recipient, with the recipients so far.
        let counts = if stage == Stage::Rcpt {
            (1..=envelope.recipients.len()).collect()
        } else {
            vec![envelope.recipients.len()]
        };
        for n in counts {
            let mut env = envelope.clone();
            env.recipients.truncate(n);
            let mut client = builder
                .clone()
                .open(cli.socket.as_deref().unwrap_or_default())?;
            let run = client.send_run(stage, &env, &message);
            let t = or_failure_verdict(&mut out, &client, run)?;
            let _ = client.quit();
            if !cli.quiet {
                let _ = writeln!(out, "run for the {stage} stage:");
                print_transcript(&mut out, &t, &env, &message);
            }
            if !t.verdict.is_delivered() {
                let _ = writeln!(out, "verdict: {}", t.verdict);
                return Ok(exit_code(&t.verdict));
            }
        }
    }
    if !stages.is_empty() && !stages.contains(&Stage::Data) {
        // No run sees the message: it is accepted as it is.
        let _ = writeln!(out, "verdict: {}", Verdict::Accept);
        if let Some(path) = &cli.output {
            write_output(path, &message)?;
        }
        return Ok(0);
    }
    let mut client = builder.open(cli.socket.as_deref().unwrap_or_default())?;
    if !stages.is_empty() && !cli.quiet {
        let _ = writeln!(out, "run for the data stage:");
    }
    if !cli.quiet {
        print_negotiation(&mut out, client.negotiated());
    }
    let run = client.send_message(&envelope, &message);
    let transcript = or_failure_verdict(&mut out, &client, run)?;
    // The verdict is known; a failing quit does not change it.
    let _ = client.quit();
    if !cli.quiet {
        print_transcript(&mut out, &transcript, &envelope, &message);
    }
    let _ = writeln!(out, "verdict: {}", transcript.verdict);
    let rules = if profile.is_sendmail() {
        ApplyRules::Sendmail
    } else {
        ApplyRules::Postfix
    };
    if let Some(path) = &cli.output {
        match transcript.delivered(rules, &message, &envelope) {
            Some(applied) => write_output(path, &applied.message)?,
            None => {
                let _ = writeln!(out, "not written: the message is not delivered");
            }
        }
    }
    Ok(exit_code(&transcript.verdict))
}

/// The transcript; on a failure, first prints the verdict the imitated MTA gives
/// a failing milter (the error's exit code stands).
fn or_failure_verdict(
    out: &mut impl Write,
    client: &Client,
    run: Result<Transcript, ClientError>,
) -> Result<Transcript, Failure> {
    run.map_err(|e| {
        let _ = writeln!(
            out,
            "verdict: {} (what {} does when the milter fails)",
            client.failure_verdict(),
            client.profile()
        );
        e.into()
    })
}

/// Writes `message` to `--output`.
fn write_output(path: &Path, message: &Message) -> Result<(), Failure> {
    std::fs::write(path, message.to_bytes()).map_err(|e| Failure {
        code: 73,
        message: format!("cannot write {}: {e}", path.display()),
    })
}

/// The exit status for a verdict.
fn exit_code(verdict: &Verdict) -> u8 {
    match verdict {
        Verdict::Accept => 0,
        Verdict::Reject { .. } => 1,
        Verdict::Tempfail { .. } | Verdict::Shutdown { .. } => 2,
        Verdict::Discard { .. } => 3,
        _ => 4,
    }
}

/// The stages of `--stages`, in protocol order (only with the Stalwart profile).
fn stalwart_stages(cli: &Cli, profile: Profile) -> Result<Vec<Stage>, Failure> {
    if cli.stages.is_empty() {
        return Ok(Vec::new());
    }
    if profile != Profile::Stalwart {
        return Err(Failure::usage(
            "--stages is for --profile stalwart (other MTAs run a milter at every stage on one connection)",
        ));
    }
    let mut stages = Vec::new();
    for name in &cli.stages {
        stages.push(match name.as_str() {
            "connect" => Stage::Connect,
            "ehlo" | "helo" => Stage::Helo,
            "mail" => Stage::Mail,
            "rcpt" => Stage::Rcpt,
            "data" => Stage::Data,
            other => {
                return Err(Failure::usage(format!(
                    "bad stage {other:?} in --stages (connect, ehlo, mail, rcpt, data)"
                )))
            }
        });
    }
    stages.sort();
    stages.dedup();
    Ok(stages)
}

fn read_message(path: Option<&PathBuf>) -> Result<Message, Failure> {
    let mut bytes = Vec::new();
    match path {
        Some(p) if p.as_os_str() != "-" => {
            bytes = std::fs::read(p).map_err(|e| Failure {
                code: 66,
                message: format!("cannot read {}: {e}", p.display()),
            })?;
        }
        _ => {
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| Failure {
                    code: 66,
                    message: format!("cannot read standard input: {e}"),
                })?;
        }
    }
    Ok(Message::parse(&bytes))
}

fn lossy(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b)
        .replace("\r\n", " / ")
        .replace('\n', "\\n");
    if s.chars().count() > 72 {
        let cut: String = s.chars().take(69).collect();
        format!("{cut}...")
    } else {
        s
    }
}

fn flag_names<'a>(names: impl Iterator<Item = (&'a str, u32)>) -> String {
    let v: Vec<String> = names
        .map(|(n, _)| n.to_ascii_lowercase().replace('_', "-"))
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(" ")
    }
}

fn stage_names(stages: milter_blocking::Stages) -> String {
    let v: Vec<&str> = stages.stages().map(Stage::name).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(" ")
    }
}

fn print_negotiation(out: &mut impl Write, n: &ClientNegotiated) {
    let _ = writeln!(
        out,
        "negotiated: version {}, actions 0x{:03x}, protocol 0x{:08x}",
        n.version,
        n.actions.bits(),
        n.protocol.bits()
    );
    let _ = writeln!(
        out,
        "  actions:  {}",
        flag_names(n.actions.iter_names().map(|(s, f)| (s, f.bits())))
    );
    let _ = writeln!(out, "  skipped:  {}", stage_names(n.skipped));
    let _ = writeln!(out, "  no reply: {}", stage_names(n.no_reply));
    let opts = n.protocol
        & (milter_blocking::ProtocolOpts::SKIP
            | milter_blocking::ProtocolOpts::RCPT_REJ
            | milter_blocking::ProtocolOpts::HEADER_LEADING_SPACE);
    if !opts.is_empty() {
        let _ = writeln!(
            out,
            "  options:  {}",
            flag_names(opts.iter_names().map(|(s, f)| (s, f.bits())))
        );
    }
    for stage in MacroStage::ALL {
        if let Some(list) = n.macros_for(stage) {
            let _ = writeln!(
                out,
                "  macros at {}: {}",
                stage.name(),
                String::from_utf8_lossy(list)
            );
        }
    }
}

fn step_detail(step: &Step, env: &Envelope, msg: &Message) -> String {
    match step.stage {
        Stage::Connect => format!("{} {}", env.client_name, env.client_addr),
        Stage::Helo => env.helo.clone().unwrap_or_default(),
        Stage::Mail => env.sender.to_string(),
        Stage::Rcpt => env
            .recipients
            .get(step.index)
            .map(Address::to_string)
            .unwrap_or_default(),
        Stage::Header => msg
            .headers
            .get(step.index)
            .map(|h| header_text(&h.name, &h.raw_value))
            .unwrap_or_default(),
        Stage::Body => {
            let n = msg.body_chunks().len();
            let len = msg.body_chunks().nth(step.index).map_or(0, <[u8]>::len);
            format!("chunk {} of {n}, {len} bytes", step.index + 1)
        }
        _ => String::new(),
    }
}

fn print_transcript(out: &mut impl Write, t: &Transcript, env: &Envelope, msg: &Message) {
    let mut i = 0;
    while i < t.steps.len() {
        let step = &t.steps[i];
        // A run of skipped headers or body chunks is one line.
        if matches!(step.stage, Stage::Header | Stage::Body) && step.response == Response::Skipped {
            let run = t.steps[i..]
                .iter()
                .take_while(|s| s.stage == step.stage && s.response == Response::Skipped)
                .count();
            if run > 1 {
                let what = if step.stage == Stage::Header {
                    "headers"
                } else {
                    "body chunks"
                };
                let _ = writeln!(
                    out,
                    "{:<8} {:<50} {}",
                    step.stage.name(),
                    format!("({run} {what})"),
                    step.response
                );
                i += run;
                continue;
            }
        }
        let _ = writeln!(
            out,
            "{:<8} {:<50} {}",
            step.stage.name(),
            step_detail(step, env, msg),
            step.response
        );
        i += 1;
    }
    if let Some(eom) = &t.eom {
        if eom.progress > 0 {
            let _ = writeln!(out, "progress packets: {}", eom.progress);
        }
        if eom.modifications.is_empty() {
            let _ = writeln!(out, "modifications: none");
        } else {
            let _ = writeln!(out, "modifications:");
            for m in &eom.modifications {
                let _ = writeln!(out, "  {}", describe(m));
            }
        }
    }
    if t.aborted {
        let _ = writeln!(out, "abort sent after the transaction");
    }
}

/// `name: value` with one space after the colon, or none if the value keeps its
/// own leading white space (`HDR_LEADSPC`, or a header written `Name:  value`).
fn header_text(name: &[u8], value: &[u8]) -> String {
    let sep = if value.first().is_some_and(u8::is_ascii_whitespace) {
        ":"
    } else {
        ": "
    };
    format!("{}{sep}{}", lossy(name), lossy(value))
}

fn with_args(addr: &[u8], args: &Option<Vec<u8>>) -> String {
    match args {
        Some(a) => format!("{} {}", lossy(addr), lossy(a)),
        None => lossy(addr),
    }
}

fn describe(m: &Modification) -> String {
    match m {
        Modification::AddHeader { name, value } => {
            format!("add header      {}", header_text(name, value))
        }
        Modification::InsertHeader { index, name, value } => {
            format!("insert header   [{index}] {}", header_text(name, value))
        }
        Modification::ChangeHeader { index, name, value } if value.is_empty() => {
            format!("delete header   {}[{index}]", lossy(name))
        }
        Modification::ChangeHeader { index, name, value } => {
            let name = format!("{}[{index}]", lossy(name));
            format!("change header   {}", header_text(name.as_bytes(), value))
        }
        Modification::AddRcpt(r) => format!("add rcpt        {}", lossy(r)),
        Modification::AddRcptWithArgs { rcpt, args } => {
            format!("add rcpt        {}", with_args(rcpt, args))
        }
        Modification::DeleteRcpt(r) => format!("delete rcpt     {}", lossy(r)),
        Modification::ChangeFrom { from, args } => {
            format!("change from     {}", with_args(from, args))
        }
        Modification::ReplaceBody(b) => format!("replace body    {} bytes", b.len()),
        Modification::Quarantine(q) => format!("quarantine      {}", lossy(q)),
        other => format!("{other:?}"),
    }
}
