//! DNS for verification: key records from a bounded cache (with pinned records
//! that never expire), else from the name servers, all lookups of one message
//! within one deadline. A lookup that fails or runs out of time gives
//! `temperror`, never a hang.
//!
//! The deadline must stay below the MTA's milter timeouts: Sendmail waits 10 s
//! for a reply by default (`T=R:10s`), Postfix 300 s (`milter_content_timeout`).
//! The default, 5 s, fits both.

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::{
    AuthenticatedMessage, DkimOutput, DnsError, MessageAuthenticator, Parameters, ResolverCache,
    Txt,
};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most records cached; past it, expired ones are dropped, and if none is,
/// the whole cache (pinned records stay).
const MAX_CACHED: usize = 10_000;

/// Records by name (lower case, with the final dot, as mail-auth asks), each
/// with the time it expires (`None`: pinned, never).
type Entries = HashMap<Box<str>, (Txt, Option<Instant>)>;

/// The TXT records looked up or pinned.
#[derive(Default)]
pub struct TxtCache {
    entries: Mutex<Entries>,
}

impl TxtCache {
    /// Adds a record that never expires (`valid_until` `None`).
    pub fn pin(&self, name: &str, record: &str) -> Result<(), String> {
        let key = DomainKey::parse(record.as_bytes())
            .map_err(|e| format!("{name}: not a DKIM key record: {e}"))?;
        let mut fqdn = name.trim_end_matches('.').to_ascii_lowercase();
        fqdn.push('.');
        self.lock()
            .insert(fqdn.into_boxed_str(), (Txt::from(key), None));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock leaves a map that is still whole.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

impl ResolverCache<Box<str>, Txt> for TxtCache {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut entries = self.lock();
        match entries.get(name) {
            Some((txt, until)) if until.is_none_or(|u| u > Instant::now()) => Some(txt.clone()),
            Some(_) => {
                entries.remove(name);
                None
            }
            None => None,
        }
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().remove(name).map(|(t, _)| t)
    }

    fn insert(&self, key: Box<str>, value: Txt, valid_until: Instant) {
        let mut entries = self.lock();
        if entries.len() >= MAX_CACHED {
            let now = Instant::now();
            entries.retain(|_, (_, until)| until.is_none_or(|u| u > now));
            if entries.len() >= MAX_CACHED {
                entries.retain(|_, (_, until)| until.is_none());
            }
        }
        entries.insert(key, (value, Some(valid_until)));
    }
}

/// The verifier's DNS: name servers, a cache, a deadline per message.
pub struct Resolver {
    authenticator: MessageAuthenticator,
    runtime: tokio::runtime::Runtime,
    pub cache: TxtCache,
    deadline: Duration,
}

impl Resolver {
    /// Name servers from `servers`, or `/etc/resolv.conf` when empty; each
    /// query gets a third of `deadline` (a first try and one retry fit).
    pub fn new(servers: &[SocketAddr], deadline: Duration) -> Result<Resolver, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("dkim-dns")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the DNS runtime: {e}"))?;
        let (config, mut options) = if servers.is_empty() {
            mail_auth::hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?
        } else {
            let servers = servers
                .iter()
                .map(|s| {
                    let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                        .into_iter()
                        .map(|mut c| {
                            c.port = s.port();
                            c
                        })
                        .collect();
                    NameServerConfig::new(s.ip(), true, connections)
                })
                .collect();
            (
                ResolverConfig::from_name_servers(servers),
                ResolverOpts::default(),
            )
        };
        options.timeout = deadline / 3;
        options.attempts = 1;
        let authenticator = {
            let _inside = runtime.enter();
            MessageAuthenticator::new(config, options)
                .map_err(|e| format!("cannot set up the DNS resolver: {e}"))?
        };
        Ok(Resolver {
            authenticator,
            runtime,
            cache: TxtCache::default(),
            deadline,
        })
    }

    /// Verifies every signature of `message`; past the deadline, the ones not
    /// yet done are `temperror`.
    pub fn verify<'x>(&'x self, message: &'x AuthenticatedMessage<'x>) -> Vec<DkimOutput<'x>> {
        let work = self
            .authenticator
            .verify_dkim(Parameters::new(message).with_txt_cache(&self.cache));
        match self
            .runtime
            .block_on(async { tokio::time::timeout(self.deadline, work).await })
        {
            Ok(outputs) => outputs,
            Err(_elapsed) => message
                .dkim_headers
                .iter()
                .map(|h| {
                    DkimOutput::temp_err(mail_auth::Error::Dns(DnsError::Resolver(format!(
                        "no answer within {:?}",
                        self.deadline
                    ))))
                    .with_signature(&h.header)
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORD: &str = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

    #[test]
    fn pinned_records_are_found_by_their_fully_qualified_name() {
        let cache = TxtCache::default();
        cache.pin("Sel._domainkey.Example.com", RECORD).unwrap();
        assert!(cache.get("sel._domainkey.example.com.").is_some());
        assert!(cache.get("other._domainkey.example.com.").is_none());
        assert!(cache.pin("x", "not a key").is_err());
    }

    #[test]
    fn expired_records_are_gone_and_the_cache_stays_bounded() {
        let cache = TxtCache::default();
        cache.pin("pinned._domainkey.example.com", RECORD).unwrap();
        let txt = cache.get("pinned._domainkey.example.com.").unwrap();
        let past = Instant::now() - Duration::from_secs(1);
        let future = Instant::now() + Duration::from_secs(3600);
        cache.insert("old.".into(), txt.clone(), past);
        assert!(cache.get("old.").is_none());
        for i in 0..MAX_CACHED + 10 {
            cache.insert(format!("n{i}.").into(), txt.clone(), future);
        }
        assert!(cache.len() <= MAX_CACHED + 1, "{}", cache.len());
        assert!(cache.get("pinned._domainkey.example.com.").is_some());
    }
}
