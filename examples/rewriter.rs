//! `rewriter`: rewrites the envelope and tags suspect messages, from a
//! configuration file (syntax at the top of the sample,
//! `examples/data/rewriter.conf`, used when no file is named):
//!
//! - recipients are mapped through a table (`rcpt sales@example.com
//!   team-sales@example.com`): the milter deletes the original recipient, using
//!   the address exactly as the MTA gave it in RCPT (that is what Sendmail
//!   matches), and adds the new one;
//! - the envelope sender of mail from a configured domain is changed
//!   (`sender-domain legacy.example.com bounces@example.com`), never the null
//!   sender of bounces;
//! - a message whose Subject or body contains a marker word (`marker viagra`)
//!   gets `[SUSPECT] ` in front of its Subject (a change of the first `Subject`
//!   header, index 1, or a new `Subject` header when there is none) and is
//!   quarantined with a reason naming the word.
//!
//! What it shows: every envelope and header modification a milter can make at
//! end of message, declared with `actions(...)` so that an MTA that does not
//! offer one of them fails at negotiation, not at the first message; handlers
//! that only collect (MAIL, RCPT, the headers and the body return nothing, so the
//! MTA does not wait for a reply to any of them) and an end-of-message handler
//! that decides; a body search that finds words cut by a chunk boundary.
//!
//! Run: `cargo run -p milter-examples --bin rewriter -- inet:7374@127.0.0.1`
//! (`--config FILE` or `MILTER_REWRITER_CONFIG=FILE` for your own table;
//! `--shadow` to log the modifications without making them).
//!
//! Postfix (`main.cf`): `smtpd_milters = inet:127.0.0.1:7374`
//! Sendmail (`.mc`): `INPUT_MAIL_FILTER(`rewriter', `S=inet:7374@127.0.0.1, F=T')`

use clap::Parser;
use milter_blocking::{
    bare_address, handlers, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter,
    Status,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The sample configuration, used when neither `--config` nor the variable names
/// a file.
const SAMPLE_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/rewriter.conf");

/// The environment variable that names the configuration when `--config` does not.
const CONFIG_VARIABLE: &str = "MILTER_REWRITER_CONFIG";

/// What goes in front of a suspect message's Subject.
const TAG: &str = "[SUSPECT]";

/// The longest body word kept across a chunk boundary; a longer word cannot be a
/// marker (markers are checked against this at start-up).
const MAX_WORD: usize = 64;

#[derive(Debug, Default)]
struct Config {
    /// Bare lower-case old recipient → bare new recipient.
    rcpts: HashMap<String, String>,
    /// (lower-case domain, new sender), in file order.
    senders: Vec<(String, String)>,
    /// Lower-case marker words.
    markers: Vec<String>,
}

impl Config {
    fn load(path: &Path) -> Result<Config, Vec<String>> {
        let file = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("{file}: cannot read the configuration: {e}")])?;
        let mut config = Config::default();
        let mut errors = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Err(e) = config.parse_line(line) {
                errors.push(format!("{file}:{}: {e}", i + 1));
            }
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    fn parse_line(&mut self, line: &str) -> Result<(), String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            ["rcpt", old, new] => {
                let old = address(old)?.to_lowercase();
                let new = address(new)?;
                if self.rcpts.insert(old.clone(), new).is_some() {
                    return Err(format!("{old} is mapped twice"));
                }
            }
            ["sender-domain", domain, new] => {
                let domain = domain.trim_end_matches('.').to_lowercase();
                if domain.is_empty() || domain.contains('@') || domain.starts_with('.') {
                    return Err(format!("{domain:?} is not a domain (like example.com)"));
                }
                self.senders.push((domain, address(new)?));
            }
            ["marker", word] => {
                if word.len() > MAX_WORD || !word.bytes().all(is_word_byte) {
                    return Err(format!(
                        "{word:?} is not one word of at most {MAX_WORD} letters and digits"
                    ));
                }
                self.markers.push(word.to_ascii_lowercase());
            }
            ["rcpt" | "sender-domain", ..] => {
                return Err(format!("{} takes two arguments", words[0]));
            }
            ["marker", ..] => return Err("marker takes one word".to_string()),
            _ => {
                return Err(format!(
                    "unknown setting {:?}: expected rcpt, sender-domain or marker",
                    words[0]
                ))
            }
        }
        Ok(())
    }

    /// The new sender for mail from `sender`, if its domain is configured.
    fn new_sender(&self, sender: &[u8]) -> Option<&str> {
        let sender = bare_address(sender);
        let at = sender.iter().rposition(|&b| b == b'@')?;
        let domain = String::from_utf8_lossy(&sender[at + 1..]).to_lowercase();
        let domain = domain.trim_end_matches('.');
        self.senders
            .iter()
            .find(|(d, _)| domain == d || domain.ends_with(&format!(".{d}")))
            .map(|(_, new)| new.as_str())
    }

    /// The marker `word` is, if any.
    fn marker(&self, word: &[u8]) -> Option<&str> {
        self.markers
            .iter()
            .find(|m| word.eq_ignore_ascii_case(m.as_bytes()))
            .map(String::as_str)
    }

    /// The first marker among the words of `text`.
    fn marker_in(&self, text: &[u8]) -> Option<&str> {
        text.split(|&b| !is_word_byte(b))
            .find_map(|w| self.marker(w))
    }
}

/// A bare `local@domain` address from the configuration (brackets optional).
fn address(s: &str) -> Result<String, String> {
    let bare = String::from_utf8_lossy(bare_address(s.as_bytes())).into_owned();
    match bare.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(bare)
        }
        _ => Err(format!("{s:?} is not an address (local@domain)")),
    }
}

/// Letters, digits, `_` (as in a regular expression's `\w`) and every non-ASCII
/// byte (so that no marker is found inside a UTF-8 word).
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// The message in progress.
#[derive(Debug, Default)]
struct Collected {
    /// The envelope sender, as received.
    sender: Vec<u8>,
    /// The recipients, exactly as received (`delete_rcpt` needs that form).
    rcpts: Vec<Vec<u8>>,
    /// The value of the first Subject header, if there is one.
    subject: Option<Vec<u8>>,
    /// The first marker word found.
    marker: Option<String>,
    /// The body word the last chunk ended in, unfinished (at most [`MAX_WORD`]
    /// bytes).
    tail: Vec<u8>,
    /// The unfinished word grew longer than [`MAX_WORD`]: it is no marker.
    tail_too_long: bool,
}

#[derive(Milter)]
#[milter(actions(
    add_header,
    change_header,
    add_rcpt,
    delete_rcpt,
    change_from,
    quarantine
))]
struct Rewriter {
    /// Shared by all connections.
    config: Arc<Config>,
    #[milter(per_message)]
    msg: Collected,
}

impl Rewriter {
    fn found(&mut self, word: Option<&str>) {
        if self.msg.marker.is_none() {
            self.msg.marker = word.map(str::to_string);
        }
    }

    /// Appends to the unfinished body word.
    fn grow_tail(&mut self, part: &[u8]) {
        let m = &mut self.msg;
        if m.tail.len() + part.len() > MAX_WORD {
            m.tail_too_long = true;
            m.tail.clear();
        } else if !m.tail_too_long {
            m.tail.extend_from_slice(part);
        }
    }

    /// The unfinished body word, now finished (`None` if it was too long), and
    /// a fresh start for the next.
    fn take_tail(&mut self) -> Option<Vec<u8>> {
        let word = std::mem::take(&mut self.msg.tail);
        (!std::mem::take(&mut self.msg.tail_too_long)).then_some(word)
    }
}

#[handlers]
impl Milter for Rewriter {
    fn mail(&mut self, _ctx: &mut Context<'_>, from: &EnvelopeAddr<'_>) {
        self.msg.sender = from.address.to_vec();
    }

    fn rcpt(&mut self, _ctx: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) {
        self.msg.rcpts.push(rcpt.address.to_vec());
    }

    fn header(&mut self, _ctx: &mut Context<'_>, h: &Header<'_>) {
        if h.is("Subject") && self.msg.subject.is_none() {
            self.msg.subject = Some(h.value.to_vec());
            let config = Arc::clone(&self.config);
            self.found(config.marker_in(h.value));
        }
    }

    fn body(&mut self, _ctx: &mut Context<'_>, chunk: &[u8]) {
        if self.msg.marker.is_some() {
            return;
        }
        let config = Arc::clone(&self.config);
        let mut words = chunk.split(|&b| !is_word_byte(b));
        let first = words.next().unwrap_or_default();
        self.grow_tail(first);
        let Some(last) = words.next_back() else {
            // No word ends in this chunk: the unfinished word just grew.
            return;
        };
        // The word the last chunk ended in ends here.
        let word = self.take_tail();
        self.found(word.and_then(|w| config.marker(&w)));
        for w in words {
            self.found(config.marker(w));
        }
        self.grow_tail(last);
    }

    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        // The body's last word.
        if let Some(word) = self.take_tail() {
            let config = Arc::clone(&self.config);
            self.found(config.marker(&word));
        }
        let config = &self.config;
        let m = &self.msg;
        let mut done = Vec::new();

        // Recipients: delete each mapped one as received, add its new address
        // once (unless the message already goes there).
        let kept: Vec<String> = m
            .rcpts
            .iter()
            .map(|r| String::from_utf8_lossy(bare_address(r)).to_lowercase())
            .filter(|r| !config.rcpts.contains_key(r))
            .collect();
        let mut added: Vec<&str> = Vec::new();
        for r in &m.rcpts {
            let bare = String::from_utf8_lossy(bare_address(r)).to_lowercase();
            let Some(new) = config.rcpts.get(&bare) else {
                continue;
            };
            ctx.delete_rcpt(r)?;
            let new_lower = new.to_lowercase();
            if !kept.contains(&new_lower) && !added.iter().any(|a| a.eq_ignore_ascii_case(new)) {
                ctx.add_rcpt(format!("<{new}>"))?;
                added.push(new);
            }
            done.push(format!("{} -> <{new}>", String::from_utf8_lossy(r)));
        }

        // The sender, except the null sender: a bounce must stay a bounce.
        if !bare_address(&m.sender).is_empty() {
            if let Some(new) = config.new_sender(&m.sender) {
                ctx.change_from(format!("<{new}>"), None)?;
                done.push(format!(
                    "sender {} -> <{new}>",
                    String::from_utf8_lossy(&m.sender)
                ));
            }
        }

        // The marker: tag the Subject and quarantine.
        if let Some(word) = &m.marker {
            match &m.subject {
                Some(s) if s.trim_ascii().starts_with(TAG.as_bytes()) => {}
                Some(s) if s.trim_ascii().is_empty() => ctx.change_header("Subject", 1, TAG)?,
                Some(s) => ctx.change_header("Subject", 1, [TAG.as_bytes(), b" ", s].concat())?,
                None => ctx.add_header("Subject", TAG)?,
            }
            ctx.quarantine(&format!("rewriter: marker word \"{word}\""))?;
            done.push(format!("marker {word:?}: tagged and quarantined"));
        }
        if !done.is_empty() {
            log::info!(
                "{}: queue id {}: {}",
                ctx.connection(),
                ctx.queue_id().unwrap_or("unknown"),
                done.join("; ")
            );
        }
        Ok(Status::Continue)
    }
}

/// Rewrites the envelope and tags suspect messages, from a configuration file.
#[derive(Parser)]
#[command(name = "rewriter")]
struct Cli {
    #[command(flatten)]
    listen: milter_examples::ListenArgs,
    /// The configuration file (the sample's first lines describe the syntax).
    #[arg(long, value_name = "FILE", env = CONFIG_VARIABLE, default_value = SAMPLE_CONFIG)]
    config: PathBuf,
}

fn main() {
    let cli: Cli = milter_examples::parse_args("inet:7374@127.0.0.1");
    milter_examples::init_logging();
    let path = cli.config;
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                log::error!("{e}");
            }
            log::error!(
                "rewriter: {} errors in {}; not starting",
                errors.len(),
                path.display()
            );
            std::process::exit(1);
        }
    };
    log::info!(
        "{}: {} recipient mappings, {} sender domains, {} marker words",
        path.display(),
        config.rcpts.len(),
        config.senders.len(),
        config.markers.len()
    );
    let config = Arc::new(config);
    milter_examples::run_with("rewriter", &cli.listen, move || Rewriter {
        config: Arc::clone(&config),
        msg: Collected::default(),
    });
}
