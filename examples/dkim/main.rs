//! `dkim`: a DKIM signing and verifying milter (RFC 6376), a replacement for
//! OpenDKIM. Operators' guide: `docs/DKIM.md`.
//!
//! - Mail from `internal-hosts` (or from SMTP-authenticated senders) whose From
//!   domain has keys in the key table is signed: one `DKIM-Signature` per key
//!   (RSA-2048 and Ed25519), relaxed/relaxed by default, From/Subject/Date
//!   over-signed, inserted as the first header.
//! - Other mail is verified: one `Authentication-Results` (RFC 8601) with a
//!   result per signature, above every other header; `Authentication-Results`
//!   headers that claim our authserv-id are removed first; optionally a message
//!   whose signatures all failed is rejected or quarantined.
//! - The body is hashed as it streams past and never kept; the headers are
//!   kept exactly as received (`HDR_LEADSPC`), in a bounded capture.
//! - DNS: a cache, pinned records (`dns-record`), a deadline per message below
//!   the MTAs' milter timeouts; a lookup that fails is `temperror`.
//!
//! Run: `cargo run -p milter-examples --bin dkim -- --config /etc/dkim/dkim.conf
//! inet:8891@127.0.0.1` (`--shadow` to log without changing mail;
//! `--stats-every SECONDS` for a counters line).
//!
//! Postfix (`main.cf`): `smtpd_milters = inet:127.0.0.1:8891`,
//! `non_smtpd_milters = $smtpd_milters`
//! Sendmail (`.mc`): `INPUT_MAIL_FILTER(`dkim', `S=inet:8891@127.0.0.1, F=T, T=R:30s;E:5m')`

mod auth_results;
mod config;
mod milter;
mod resolver;
mod signer;
mod verifier;

#[cfg(test)]
mod interop_tests;
#[cfg(test)]
mod tests;

use config::Config;
use milter::{Dkim, Shared};
use resolver::Resolver;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Builds what all connections share: the DNS resolver (with the pinned
/// records) when verification is on.
fn shared(config: Config) -> Result<Shared, String> {
    let resolver = if config.verify {
        let r = Resolver::new(&config.dns_servers, config.dns_timeout)?;
        for (name, record) in &config.dns_records {
            r.cache.pin(name, record)?;
        }
        if !config.dns_records.is_empty() {
            log::info!("dkim: {} pinned key records", r.cache.len());
        }
        Some(r)
    } else {
        None
    };
    Ok(Shared::new(config, resolver))
}

/// The `dkim` example's command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "dkim",
    about = "A DKIM signing and verifying milter (see docs/DKIM.md)"
)]
struct Cli {
    #[command(flatten)]
    listen: milter_examples::ListenArgs,
    /// The configuration file (key table, domains, policy; see docs/DKIM.md).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Log the counters every SECONDS seconds.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    stats_every: Option<u64>,
}

fn main() {
    let cli: Cli = milter_examples::parse_args("inet:8891@127.0.0.1");
    milter_examples::init_logging();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                log::error!("{e}");
            }
            log::error!(
                "dkim: {} errors in the configuration; not starting",
                errors.len()
            );
            std::process::exit(1);
        }
    };
    let every = cli.stats_every.map(Duration::from_secs);
    log::info!(
        "dkim: authserv-id {}, signing {} ({} domains), verifying {}",
        config.authserv_id,
        if config.sign { "on" } else { "off" },
        config.keys.len(),
        if config.verify { "on" } else { "off" },
    );
    let shared = match shared(config) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            log::error!("dkim: {e}");
            std::process::exit(1);
        }
    };
    if let Some(every) = every {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || loop {
            std::thread::sleep(every);
            log::info!("dkim stats: {}", shared.stats.summary());
        });
    }
    milter_examples::run_with("dkim", &cli.listen, move || Dkim::new(Arc::clone(&shared)));
}
