//! `policy`: refuses, defers or discards mail by envelope sender and recipient,
//! from a rules file an administrator edits:
//!
//! ```text
//! reject-sender        spammer@example.com  550 5.7.1 Sender blocked by policy
//! tempfail-rcpt-domain slow.example         451 4.7.1 Try later
//! discard-sender       noreply@newsletter.example
//! ```
//!
//! The syntax is described at the top of the sample, `examples/data/policy.rules`,
//! which is used when no file is named. Each refusal carries its own SMTP reply
//! (`Status::reply`), exactly as the client will see it.
//!
//! What it shows:
//! - a milter that needs nothing but MAIL and RCPT: `#[handlers]` sees only
//!   those two handlers and asks the MTA to skip every other stage (connect,
//!   HELO, DATA, headers, body), so the MTA sends no message content at all; it
//!   needs no modification action either;
//! - configuration checked before the server starts: every invalid line is
//!   reported with its line number and the program exits with status 1;
//! - configuration shared by all connections and reloaded on SIGHUP (a file with
//!   errors is refused and the rules in force stay), each message using one
//!   consistent set of rules from MAIL to its last RCPT.
//!
//! Run: `cargo run -p milter-examples --bin policy -- inet:7372@127.0.0.1`
//! (`--rules FILE` or `MILTER_POLICY_RULES=FILE` for your own rules; `--shadow` to
//! log what it would refuse without refusing anything).
//!
//! Postfix (`main.cf`): `smtpd_milters = inet:127.0.0.1:7372`
//! Sendmail (`.mc`): `INPUT_MAIL_FILTER(`policy', `S=inet:7372@127.0.0.1, F=T')`

use clap::Parser;
use milter_blocking::{bare_address, handlers, Context, EnvelopeAddr, Milter, Status};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

/// The sample rules, used when neither `--rules` nor the variable names a file.
const SAMPLE_RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/policy.rules");

/// The environment variable that names the rules file when `--rules` does not.
const RULES_VARIABLE: &str = "MILTER_POLICY_RULES";

/// What a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Sender,
    SenderDomain,
    Rcpt,
    RcptDomain,
}

/// One line of the rules file.
#[derive(Debug)]
struct Rule {
    line: usize,
    /// `reject-sender spammer@example.com`, for logs.
    summary: String,
    target: Target,
    /// A bare address or a domain, in lower case.
    pattern: String,
    /// What the milter answers when the rule matches.
    verdict: Status,
}

impl Rule {
    fn matches(&self, address: &[u8]) -> bool {
        let address = bare_address(address);
        match self.target {
            Target::Sender | Target::Rcpt => address.eq_ignore_ascii_case(self.pattern.as_bytes()),
            Target::SenderDomain | Target::RcptDomain => {
                let Some(at) = address.iter().rposition(|&b| b == b'@') else {
                    return false;
                };
                let domain = address[at + 1..]
                    .strip_suffix(b".")
                    .unwrap_or(&address[at + 1..]);
                let pattern = self.pattern.as_bytes();
                domain.eq_ignore_ascii_case(pattern)
                    || (domain.len() > pattern.len()
                        && domain[domain.len() - pattern.len() - 1] == b'.'
                        && domain[domain.len() - pattern.len()..].eq_ignore_ascii_case(pattern))
            }
        }
    }
}

/// The rules of one file, in file order, split by the stage that checks them.
#[derive(Debug, Default)]
struct Rules {
    sender: Vec<Rule>,
    rcpt: Vec<Rule>,
}

/// A problem in the rules file: where, and what.
#[derive(Debug)]
struct RuleError {
    file: String,
    line: usize,
    message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

impl Rules {
    /// Reads and checks a rules file; every problem is reported, not just the
    /// first.
    fn load(path: &Path) -> Result<Rules, Vec<RuleError>> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Rules::parse(&file, &text),
            Err(e) => Err(vec![RuleError {
                file,
                line: 0,
                message: format!("cannot read the rules file: {e}"),
            }]),
        }
    }

    fn parse(file: &str, text: &str) -> Result<Rules, Vec<RuleError>> {
        let mut rules = Rules::default();
        let mut errors = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_rule(i + 1, line) {
                Ok(rule) if matches!(rule.target, Target::Sender | Target::SenderDomain) => {
                    rules.sender.push(rule);
                }
                Ok(rule) => rules.rcpt.push(rule),
                Err(message) => errors.push(RuleError {
                    file: file.to_string(),
                    line: i + 1,
                    message,
                }),
            }
        }
        if errors.is_empty() {
            Ok(rules)
        } else {
            Err(errors)
        }
    }

    fn len(&self) -> usize {
        self.sender.len() + self.rcpt.len()
    }
}

/// Splits off the first word (words are separated by spaces or tabs).
fn next_word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    let end = s.find([' ', '\t']).unwrap_or(s.len());
    Some((&s[..end], s[end..].trim_start()))
}

/// Whether `s` looks like an enhanced status code (`5.7.1`).
fn is_enhanced_code(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

fn parse_rule(line: usize, text: &str) -> Result<Rule, String> {
    let (kind, rest) = next_word(text).ok_or("empty rule")?;
    let (action, target) = kind
        .split_once('-')
        .ok_or_else(|| format!("unknown rule {kind:?}: expected reject-, tempfail- or discard- followed by sender, sender-domain, rcpt or rcpt-domain"))?;
    let target = match target {
        "sender" => Target::Sender,
        "sender-domain" => Target::SenderDomain,
        "rcpt" => Target::Rcpt,
        "rcpt-domain" => Target::RcptDomain,
        _ => {
            return Err(format!(
                "unknown target {target:?} in {kind:?}: expected sender, sender-domain, rcpt or rcpt-domain"
            ))
        }
    };
    let (pattern, reply) =
        next_word(rest).ok_or_else(|| format!("{kind} needs an address or domain"))?;
    let pattern = match target {
        Target::Sender | Target::Rcpt => {
            let bare =
                String::from_utf8_lossy(bare_address(pattern.as_bytes())).to_ascii_lowercase();
            let null_sender = target == Target::Sender && bare.is_empty();
            if !null_sender
                && (bare.matches('@').count() != 1 || bare.starts_with('@') || bare.ends_with('@'))
            {
                return Err(format!(
                    "{pattern:?} is not an address (local@domain{})",
                    if target == Target::Sender {
                        ", or <> for the null sender"
                    } else {
                        ""
                    }
                ));
            }
            bare
        }
        Target::SenderDomain | Target::RcptDomain => {
            let domain = pattern.trim_end_matches('.').to_ascii_lowercase();
            if domain.is_empty() || domain.contains('@') || domain.starts_with('.') {
                return Err(format!("{pattern:?} is not a domain (like example.com)"));
            }
            domain
        }
    };
    let verdict = match action {
        "discard" if reply.is_empty() => Status::Discard,
        "discard" => return Err(format!("discard takes no reply, but {reply:?} follows")),
        "reject" | "tempfail" if reply.is_empty() => {
            if action == "reject" {
                Status::Reject
            } else {
                Status::Tempfail
            }
        }
        "reject" | "tempfail" => {
            let (code, rest) = next_word(reply).unwrap_or_default();
            let code: u16 = code
                .parse()
                .map_err(|_| format!("{code:?} is not an SMTP reply code (like 550)"))?;
            let want = if action == "reject" { 5 } else { 4 };
            if code / 100 != want {
                return Err(format!("{action} needs a {want}xx reply code, not {code}"));
            }
            let (enhanced, text) = match next_word(rest) {
                Some((e, text)) if is_enhanced_code(e) => (Some(e), text),
                _ => (None, rest),
            };
            Status::reply(code, enhanced, text).map_err(|e| format!("bad reply: {e}"))?
        }
        _ => {
            return Err(format!(
                "unknown action {action:?} in {kind:?}: expected reject, tempfail or discard"
            ))
        }
    };
    Ok(Rule {
        line,
        summary: format!("{kind} {pattern}"),
        target,
        pattern,
        verdict,
    })
}

/// The rules in force, shared by every connection; replaced as a whole on reload.
type SharedRules = Arc<RwLock<Arc<Rules>>>;

fn current(shared: &SharedRules) -> Arc<Rules> {
    Arc::clone(&shared.read().unwrap_or_else(PoisonError::into_inner))
}

#[derive(Milter)]
struct Policy {
    /// Per connection: where the rules in force are.
    shared: SharedRules,
    /// Per message: the rules taken at MAIL, so that a reload in the middle of a
    /// message does not mix two files.
    #[milter(per_message)]
    rules: Option<Arc<Rules>>,
}

impl Policy {
    fn rules(&mut self) -> Arc<Rules> {
        let shared = &self.shared;
        Arc::clone(self.rules.get_or_insert_with(|| current(shared)))
    }

    fn decide(ctx: &Context<'_>, what: &str, address: &[u8], rules: &[Rule]) -> Status {
        let Some(rule) = rules.iter().find(|r| r.matches(address)) else {
            return Status::Continue;
        };
        log::info!(
            "{}: {what} {} matches line {} ({}): {}",
            ctx.connection(),
            String::from_utf8_lossy(address),
            rule.line,
            rule.summary,
            rule.verdict.name()
        );
        rule.verdict.clone()
    }
}

#[handlers]
impl Milter for Policy {
    fn mail(&mut self, ctx: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> Status {
        let rules = self.rules();
        Self::decide(ctx, "sender", from.address, &rules.sender)
    }

    fn rcpt(&mut self, ctx: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
        let rules = self.rules();
        Self::decide(ctx, "recipient", rcpt.address, &rules.rcpt)
    }
}

/// Reloads the rules on every SIGHUP; a file with errors is refused.
fn reload_on_sighup(path: PathBuf, shared: SharedRules) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::spawn(move || {
        for _ in signals.forever() {
            match Rules::load(&path) {
                Ok(rules) => {
                    log::info!(
                        "SIGHUP: loaded {} rules from {}",
                        rules.len(),
                        path.display()
                    );
                    *shared.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(rules);
                }
                Err(errors) => {
                    for e in &errors {
                        log::error!("{e}");
                    }
                    log::error!(
                        "SIGHUP: {} errors in {}; the {} rules in force stay",
                        errors.len(),
                        path.display(),
                        current(&shared).len()
                    );
                }
            }
        }
    });
    Ok(())
}

/// Refuses, defers or discards mail by envelope sender and recipient, from a
/// rules file (reloaded on SIGHUP).
#[derive(Parser)]
#[command(name = "policy")]
struct Cli {
    #[command(flatten)]
    listen: milter_examples::ListenArgs,
    /// The rules file (the sample's first lines describe the syntax).
    #[arg(long, value_name = "FILE", env = RULES_VARIABLE, default_value = SAMPLE_RULES)]
    rules: PathBuf,
}

fn main() {
    let cli: Cli = milter_examples::parse_args("inet:7372@127.0.0.1");
    milter_examples::init_logging();
    let path = cli.rules;
    let rules = match Rules::load(&path) {
        Ok(rules) => rules,
        Err(errors) => {
            for e in &errors {
                log::error!("{e}");
            }
            log::error!(
                "policy: {} errors in {}; not starting",
                errors.len(),
                path.display()
            );
            std::process::exit(1);
        }
    };
    log::info!("loaded {} rules from {}", rules.len(), path.display());
    let shared: SharedRules = Arc::new(RwLock::new(Arc::new(rules)));
    if let Err(e) = reload_on_sighup(path, Arc::clone(&shared)) {
        log::warn!("cannot catch SIGHUP ({e}): the rules will not be reloaded");
    }
    milter_examples::run_with("policy", &cli.listen, move || Policy {
        shared: Arc::clone(&shared),
        rules: None,
    });
}
