//! The milter: which messages to sign or verify, and what to change at end of
//! message.

use crate::auth_results;
use crate::config::{Config, OnFail};
use crate::resolver::Resolver;
use crate::signer::{self, BodyHash, SignSettings};
use crate::verifier::{self, BodyHashes};
use mail_auth::common::crypto::HashAlgorithm;
use mail_auth::AuthenticatedMessage;
use milter_blocking::capture::{BodyMode, CaptureOptions, MessageCapture};
use milter_blocking::{
    handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status,
};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counters for the metrics line.
#[derive(Debug, Default)]
pub struct Stats {
    pub signed: AtomicU64,
    pub verified: AtomicU64,
    pub pass: AtomicU64,
    pub fail: AtomicU64,
    pub temperror: AtomicU64,
    pub other: AtomicU64,
    pub unsigned: AtomicU64,
    pub forged_results_removed: AtomicU64,
    pub refused: AtomicU64,
}

impl Stats {
    /// `name value` pairs, for the log.
    pub fn summary(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "signed {} verified {} (pass {} fail {} temperror {} other {}) unsigned {} \
             forged-results-removed {} refused-or-quarantined {}",
            get(&self.signed),
            get(&self.verified),
            get(&self.pass),
            get(&self.fail),
            get(&self.temperror),
            get(&self.other),
            get(&self.unsigned),
            get(&self.forged_results_removed),
            get(&self.refused),
        )
    }
}

/// What all connections share.
pub struct Shared {
    pub config: Config,
    pub settings: SignSettings,
    /// `None` when verification is off.
    pub resolver: Option<Resolver>,
    pub stats: Stats,
    /// Seconds since the epoch, for `t=` (fixed in tests).
    pub clock: fn() -> u64,
}

impl Shared {
    pub fn new(config: Config, resolver: Option<Resolver>) -> Shared {
        let settings = SignSettings {
            headers: config.headers.clone(),
            oversign: config.oversign.clone(),
            header_canonicalization: config.header_canonicalization,
            body_canonicalization: config.body_canonicalization,
        };
        Shared {
            config,
            settings,
            resolver,
            stats: Stats::default(),
            clock: || {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            },
        }
    }
}

/// The headers of the message, as received; the body is hashed as it passes
/// and never kept.
#[derive(Debug)]
struct HeadersOnly(MessageCapture);

impl Default for HeadersOnly {
    fn default() -> Self {
        HeadersOnly(MessageCapture::new(
            CaptureOptions::default().body(BodyMode::Discard),
        ))
    }
}

/// What this message gets, decided at end of headers.
#[derive(Default)]
enum Work {
    /// Not decided yet (or nothing to do: signing off and verification off).
    #[default]
    Nothing,
    Sign {
        domain: String,
        /// Boxed: a hash state is large next to the other variants.
        body: Box<BodyHash>,
    },
    Verify {
        body: BodyHashes,
    },
    /// The message cannot be handled (reason for the log).
    Skip(String),
}

#[derive(Default)]
struct Message {
    authenticated: bool,
    headers: HeadersOnly,
    work: Work,
    /// Authentication-Results headers seen.
    results_seen: u32,
    /// The indexes (1-based, among Authentication-Results) of those that claim
    /// our authserv-id. Kept apart from the capture, so that they are removed
    /// even from a message too large to capture.
    forged: Vec<u32>,
}

#[derive(Milter)]
#[milter(
    actions(add_header, change_header, quarantine),
    options(header_leading_space),
    macros(mail = "{auth_authen} {i}", eom = "{i}")
)]
pub struct Dkim {
    shared: Arc<Shared>,
    /// The SMTP client is one of `internal-hosts`.
    internal: bool,
    #[milter(per_message)]
    msg: Message,
}

/// The domain of the first From address.
fn from_domain(parsed: &AuthenticatedMessage<'_>) -> Option<String> {
    let from = parsed.from();
    let (_, domain) = from.rsplit_once('@')?;
    (!domain.is_empty()).then(|| domain.to_ascii_lowercase())
}

impl Dkim {
    pub fn new(shared: Arc<Shared>) -> Dkim {
        Dkim {
            shared,
            internal: false,
            msg: Message::default(),
        }
    }

    /// The header block with the empty line that ends it.
    fn header_message(&self) -> Vec<u8> {
        let mut m = self.msg.headers.0.header_block().to_vec();
        m.extend_from_slice(b"\r\n");
        m
    }

    /// Removes every Authentication-Results naming us, from the last up
    /// (Postfix renumbers after a delete, Sendmail does not; deleting the
    /// highest index first is right in both).
    fn remove_forged_results(
        &mut self,
        ctx: &mut EomContext<'_, Self>,
        shared: &Shared,
        conn: &str,
        queue_id: &str,
    ) -> HandlerResult<()> {
        let forged = std::mem::take(&mut self.msg.forged);
        for &index in forged.iter().rev() {
            ctx.delete_header("Authentication-Results", index)?;
        }
        if !forged.is_empty() {
            shared
                .stats
                .forged_results_removed
                .fetch_add(forged.len() as u64, Ordering::Relaxed);
            log::info!(
                "{conn}: queue id {queue_id}: removed {} Authentication-Results claiming to be ours",
                forged.len()
            );
        }
        Ok(())
    }

    fn verify(
        &mut self,
        ctx: &mut EomContext<'_, Self>,
        body: BodyHashes,
        shared: &Shared,
        conn: &str,
        queue_id: &str,
    ) -> HandlerResult {
        let config = &shared.config;
        let stats = &shared.stats;
        let verdicts = match &shared.resolver {
            Some(resolver) => verifier::verify(&self.header_message(), body, resolver),
            None => Vec::new(),
        };
        self.remove_forged_results(ctx, shared, conn, queue_id)?;
        ctx.prepend_header(
            "Authentication-Results",
            auth_results::header_value(&config.authserv_id, &verdicts),
        )?;

        if verdicts.is_empty() {
            stats.unsigned.fetch_add(1, Ordering::Relaxed);
            log::info!("{conn}: queue id {queue_id}: no signature");
            return Ok(Status::Continue);
        }
        stats.verified.fetch_add(1, Ordering::Relaxed);
        for v in &verdicts {
            let counter = match v.result {
                "pass" => &stats.pass,
                "fail" => &stats.fail,
                "temperror" => &stats.temperror,
                _ => &stats.other,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let results: Vec<String> = verdicts
            .iter()
            .map(|v| {
                let why = v
                    .reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                format!("d={} s={}: {}{why}", v.domain, v.selector, v.result)
            })
            .collect();
        log::info!(
            "{conn}: queue id {queue_id}: verified: {}",
            results.join(", ")
        );
        let failed = !verdicts.iter().any(|v| v.result == "pass")
            && verdicts.iter().any(|v| v.result == "fail");
        if !failed {
            return Ok(Status::Continue);
        }
        match config.on_fail {
            OnFail::None => Ok(Status::Continue),
            OnFail::Quarantine => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                ctx.quarantine("dkim: every signature failed")?;
                log::info!("{conn}: queue id {queue_id}: quarantined (every signature failed)");
                Ok(Status::Continue)
            }
            OnFail::Reject => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                log::info!("{conn}: queue id {queue_id}: rejected (every signature failed)");
                Ok(Status::reply(
                    550,
                    Some("5.7.20"),
                    "No passing DKIM signature",
                )?)
            }
        }
    }
}

#[handlers]
impl Milter for Dkim {
    fn connect(&mut self, _ctx: &mut Context<'_>, _host: &[u8], addr: ConnectAddr<'_>) {
        let ip = match addr {
            ConnectAddr::Inet(a) => Some(IpAddr::V4(*a.ip())),
            ConnectAddr::Inet6(a) => Some(IpAddr::V6(*a.ip())),
            // Local submission (the sendmail command, a Unix socket) is ours.
            ConnectAddr::Unix(_) | ConnectAddr::Unknown => None,
        };
        self.internal = ip.is_none_or(|ip| self.shared.config.is_internal(ip));
    }

    fn mail(&mut self, ctx: &mut Context<'_>, _from: &EnvelopeAddr<'_>) {
        self.msg.authenticated = ctx
            .macro_value("{auth_authen}")
            .is_some_and(|v| !v.is_empty());
    }

    fn header(&mut self, ctx: &mut Context<'_>, h: &Header<'_>) {
        if h.is("Authentication-Results") {
            self.msg.results_seen += 1;
            let id = auth_results::authserv_id(h.value);
            if id.eq_ignore_ascii_case(self.shared.config.authserv_id.as_bytes()) {
                self.msg.forged.push(self.msg.results_seen);
            }
        }
        if matches!(self.msg.work, Work::Skip(_)) {
            return;
        }
        if let Err(e) = self.msg.headers.0.header(ctx, h) {
            self.msg.work = Work::Skip(e.to_string());
        }
    }

    fn eoh(&mut self, _ctx: &mut Context<'_>) {
        if matches!(self.msg.work, Work::Skip(_)) {
            return;
        }
        let config = &self.shared.config;
        let message = self.header_message();
        let parsed = AuthenticatedMessage::parse(&message);
        let domain = parsed.as_ref().and_then(from_domain);
        let may_sign =
            config.sign && (self.internal || (config.sign_authenticated && self.msg.authenticated));
        self.msg.work = match domain {
            Some(domain) if may_sign && config.keys_for(&domain).is_some() => Work::Sign {
                domain,
                body: Box::new(BodyHash::new(
                    HashAlgorithm::Sha256,
                    config.body_canonicalization,
                    0,
                )),
            },
            _ if config.verify && !may_sign => Work::Verify {
                body: BodyHashes::for_headers(&message),
            },
            _ => Work::Nothing,
        };
    }

    fn body(&mut self, _ctx: &mut Context<'_>, chunk: &[u8]) {
        match &mut self.msg.work {
            Work::Sign { body, .. } => body.write(chunk),
            Work::Verify { body } => body.write(chunk),
            Work::Nothing | Work::Skip(_) => {}
        }
    }

    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        let queue_id = ctx.queue_id().unwrap_or("unknown").to_string();
        let conn = ctx.connection().to_string();
        let work = std::mem::take(&mut self.msg.work);
        let shared = Arc::clone(&self.shared);
        match work {
            Work::Nothing => Ok(Status::Continue),
            Work::Skip(reason) => {
                log::warn!("{conn}: queue id {queue_id}: not signed or verified: {reason}");
                if shared.config.verify {
                    self.remove_forged_results(ctx, &shared, &conn, &queue_id)?;
                }
                Ok(Status::Continue)
            }
            Work::Sign { domain, body } => {
                let (hash, _) = body.finish();
                let keys = shared.config.keys_for(&domain).unwrap_or_default();
                let block = self.msg.headers.0.header_block();
                let mut done = Vec::new();
                for key in keys {
                    match signer::sign(key, &shared.settings, block, &hash, (shared.clock)()) {
                        Ok(signed) => {
                            ctx.prepend_header("DKIM-Signature", &signed.value)?;
                            done.push(signed.summary);
                        }
                        Err(e) => log::error!(
                            "{conn}: queue id {queue_id}: signing with {key:?} failed: {e}"
                        ),
                    }
                }
                if !done.is_empty() {
                    shared.stats.signed.fetch_add(1, Ordering::Relaxed);
                    log::info!(
                        "{conn}: queue id {queue_id}: signed for {domain}: {}",
                        done.join(", ")
                    );
                }
                Ok(Status::Continue)
            }
            Work::Verify { body } => self.verify(ctx, body, &shared, &conn, &queue_id),
        }
    }
}
