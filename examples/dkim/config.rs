//! The configuration file and the key table.
//!
//! Configuration (`dkim.conf`): one setting per line, `name value...`; `#`
//! starts a comment line. Paths are relative to the file's directory.
//!
//! ```text
//! authserv-id        mx.example.com           # required: names us in Authentication-Results
//! key-table          keys                     # the key table (below); no table: verify only
//! mode               sign verify              # what to do: sign, verify, or both (default)
//! internal-hosts     127.0.0.1 ::1 10.0.0.0/8 # clients whose mail is signed (default: loopback)
//! sign-authenticated yes                      # also sign for SMTP-authenticated senders
//! headers            From Subject Date To ... # headers to sign (default: RFC 6376 §5.4.1 list)
//! oversign           From Subject Date        # signed once more than present (default)
//! canonicalization   relaxed/relaxed          # header/body: relaxed or simple
//! on-fail            none                     # none, reject or quarantine
//! dns-timeout        5                        # seconds for all lookups of one message
//! dns-server         127.0.0.1:53             # default: /etc/resolv.conf
//! dns-record         sel._domainkey.example.com v=DKIM1; k=rsa; p=...   # pinned record
//! ```
//!
//! Key table: one key per line, `DOMAIN SELECTOR KEYFILE`. The key file is
//! PEM: PKCS#8 (RSA or Ed25519, as `openssl genpkey` writes) or PKCS#1 RSA. A
//! domain may have several keys (an RSA and an Ed25519 one, say): the message
//! gets one signature per key. Mail from a subdomain without keys of its own is
//! signed with the closest parent domain's keys.
//!
//! ```text
//! example.com   rsa2026   example.com.rsa.pem
//! example.com   ed2026    example.com.ed25519.pem
//! ```

use crate::signer::SigningKey;
use mail_auth::dkim::Canonicalization;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What to do on a message whose signatures all failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFail {
    /// Only report it in Authentication-Results.
    None,
    /// Refuse the message (5xx).
    Reject,
    /// Accept it into the MTA's quarantine (Postfix: hold queue).
    Quarantine,
}

/// A client network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    fn parse(s: &str) -> Result<Network, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address or network (10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
            None => max,
        };
        Ok(Network { addr, prefix })
    }

    /// Whether `ip` is in the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn bits(ip: IpAddr) -> (u128, u8) {
            match ip {
                IpAddr::V4(a) => (u128::from(u32::from(a)) << 96, 32),
                IpAddr::V6(a) => (u128::from(a), 128),
            }
        }
        let ip = match ip {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let ((net, len), (addr, addr_len)) = (bits(self.addr), bits(ip));
        if len != addr_len {
            return false;
        }
        let mask = if self.prefix == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(self.prefix))
        };
        net & mask == addr & mask
    }
}

/// Everything the milter needs, loaded at start-up.
#[derive(Debug)]
pub struct Config {
    pub authserv_id: String,
    pub sign: bool,
    pub verify: bool,
    pub internal_hosts: Vec<Network>,
    pub sign_authenticated: bool,
    pub headers: Vec<String>,
    pub oversign: Vec<String>,
    pub header_canonicalization: Canonicalization,
    pub body_canonicalization: Canonicalization,
    pub on_fail: OnFail,
    pub dns_timeout: Duration,
    pub dns_servers: Vec<SocketAddr>,
    /// Pinned TXT records: lower-case name without the final dot → record.
    pub dns_records: Vec<(String, String)>,
    /// Lower-case domain → its keys.
    pub keys: HashMap<String, Vec<SigningKey>>,
}

/// The headers signed by default: RFC 6376 §5.4.1's list.
pub const DEFAULT_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Resent-Date",
    "Resent-From",
    "Resent-To",
    "Resent-Cc",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// Signed once more than present, so that none can be added after signing.
pub const DEFAULT_OVERSIGN: &[&str] = &["From", "Subject", "Date"];

impl Default for Config {
    fn default() -> Self {
        Config {
            authserv_id: String::new(),
            sign: true,
            verify: true,
            internal_hosts: vec![
                Network::parse("127.0.0.1").unwrap_or_else(|_| unreachable!()),
                Network::parse("::1").unwrap_or_else(|_| unreachable!()),
            ],
            sign_authenticated: true,
            headers: DEFAULT_HEADERS.iter().map(|s| s.to_string()).collect(),
            oversign: DEFAULT_OVERSIGN.iter().map(|s| s.to_string()).collect(),
            header_canonicalization: Canonicalization::Relaxed,
            body_canonicalization: Canonicalization::Relaxed,
            on_fail: OnFail::None,
            dns_timeout: Duration::from_secs(5),
            dns_servers: Vec::new(),
            dns_records: Vec::new(),
            keys: HashMap::new(),
        }
    }
}

fn yes_no(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" => Ok(true),
        "no" | "false" | "off" => Ok(false),
        _ => Err(format!("{v:?}: expected yes or no")),
    }
}

fn canonicalization(v: &str) -> Result<Canonicalization, String> {
    match v.to_ascii_lowercase().as_str() {
        "relaxed" => Ok(Canonicalization::Relaxed),
        "simple" => Ok(Canonicalization::Simple),
        _ => Err(format!("{v:?}: expected relaxed or simple")),
    }
}

/// Lower case, without a final dot.
pub fn normalize_domain(d: &str) -> String {
    d.trim_end_matches('.').to_ascii_lowercase()
}

impl Config {
    /// Reads the configuration at `path` (and the key table it names); every
    /// error found, with file and line.
    pub fn load(path: &Path) -> Result<Config, Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, &path.display().to_string(), dir)
    }

    /// Parses configuration text; `origin` names it in errors, `dir` resolves
    /// relative paths.
    pub fn parse(text: &str, origin: &str, dir: &Path) -> Result<Config, Vec<String>> {
        let mut config = Config::default();
        let mut errors = Vec::new();
        let mut key_table = None;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let rest = rest.trim();
            let values: Vec<&str> = rest.split_whitespace().collect();
            let result = config.setting(name, rest, &values, dir, &mut key_table);
            if let Err(e) = result {
                errors.push(format!("{origin}:{}: {e}", i + 1));
            }
        }
        if config.authserv_id.is_empty() {
            errors.push(format!("{origin}: authserv-id is required"));
        }
        if let Some(table) = key_table {
            match load_key_table(&table) {
                Ok(keys) => config.keys = keys,
                Err(e) => errors.extend(e),
            }
        } else if config.sign {
            errors.push(format!(
                "{origin}: signing is on (mode) but no key-table is given"
            ));
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    fn setting(
        &mut self,
        name: &str,
        rest: &str,
        values: &[&str],
        dir: &Path,
        key_table: &mut Option<PathBuf>,
    ) -> Result<(), String> {
        let one = || match values {
            [v] => Ok(*v),
            _ => Err(format!("{name} takes one value")),
        };
        match name {
            "authserv-id" => {
                let v = one()?;
                if !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
                {
                    return Err(format!("{v:?} is not a host name"));
                }
                self.authserv_id = v.to_string();
            }
            "key-table" => *key_table = Some(dir.join(one()?)),
            "mode" => {
                if values.is_empty() {
                    return Err("mode takes sign, verify or both".into());
                }
                self.sign = false;
                self.verify = false;
                for v in values {
                    match *v {
                        "sign" => self.sign = true,
                        "verify" => self.verify = true,
                        "both" => (self.sign, self.verify) = (true, true),
                        _ => return Err(format!("{v:?}: mode takes sign, verify or both")),
                    }
                }
            }
            "internal-hosts" => {
                self.internal_hosts = values
                    .iter()
                    .map(|v| Network::parse(v))
                    .collect::<Result<_, _>>()?;
            }
            "sign-authenticated" => self.sign_authenticated = yes_no(one()?)?,
            "headers" | "oversign" => {
                for v in values {
                    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                        return Err(format!("{v:?} is not a header name"));
                    }
                }
                let list = values.iter().map(|s| s.to_string()).collect();
                if name == "headers" {
                    if !values.iter().any(|v| v.eq_ignore_ascii_case("From")) {
                        return Err("headers must include From (RFC 6376 §5.4)".into());
                    }
                    self.headers = list;
                } else {
                    self.oversign = list;
                }
            }
            "canonicalization" => {
                let v = one()?;
                let (h, b) = v.split_once('/').unwrap_or((v, "simple"));
                self.header_canonicalization = canonicalization(h)?;
                self.body_canonicalization = canonicalization(b)?;
            }
            "on-fail" => {
                self.on_fail = match one()? {
                    "none" => OnFail::None,
                    "reject" => OnFail::Reject,
                    "quarantine" => OnFail::Quarantine,
                    v => return Err(format!("{v:?}: on-fail takes none, reject or quarantine")),
                }
            }
            "dns-timeout" => {
                let v = one()?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s > 0.0 && *s <= 60.0)
                    .ok_or_else(|| format!("{v:?}: seconds, above 0 and at most 60"))?;
                self.dns_timeout = Duration::from_secs_f64(secs);
            }
            "dns-server" => {
                let v = one()?;
                let addr = v
                    .parse::<SocketAddr>()
                    .or_else(|_| v.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| format!("{v:?} is not an address (192.0.2.1 or [::1]:53)"))?;
                self.dns_servers.push(addr);
            }
            "dns-record" => {
                let (owner, record) = rest
                    .split_once(char::is_whitespace)
                    .ok_or("dns-record takes a name and the record text")?;
                self.dns_records
                    .push((normalize_domain(owner), record.trim().to_string()));
            }
            _ => return Err(format!("unknown setting {name:?}")),
        }
        Ok(())
    }

    /// The keys to sign mail from `domain` with, and the domain they sign for
    /// (`domain` or its closest parent with keys).
    pub fn keys_for(&self, domain: &str) -> Option<&[SigningKey]> {
        let mut d = normalize_domain(domain);
        loop {
            if let Some(keys) = self.keys.get(&d) {
                return Some(keys);
            }
            let (_, parent) = d.split_once('.')?;
            if !parent.contains('.') {
                // Never a top-level domain.
                return None;
            }
            d = parent.to_string();
        }
    }

    /// Whether a client at `ip` is one whose mail we sign.
    pub fn is_internal(&self, ip: IpAddr) -> bool {
        self.internal_hosts.iter().any(|n| n.contains(ip))
    }
}

/// Reads the key table: `DOMAIN SELECTOR KEYFILE` per line.
pub fn load_key_table(path: &Path) -> Result<HashMap<String, Vec<SigningKey>>, Vec<String>> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("{origin}: cannot read the key table: {e}")])?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut keys: HashMap<String, Vec<SigningKey>> = HashMap::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [domain, selector, file] = fields[..] else {
            errors.push(format!(
                "{origin}:{}: expected DOMAIN SELECTOR KEYFILE",
                i + 1
            ));
            continue;
        };
        let domain = normalize_domain(domain);
        let file = dir.join(file);
        match SigningKey::load(&domain, selector, &file) {
            Ok(k) => keys.entry(domain).or_default().push(k),
            Err(e) => errors.push(format!("{origin}:{}: {e}", i + 1)),
        }
    }
    if errors.is_empty() {
        Ok(keys)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_match_by_prefix() {
        let n = Network::parse("10.1.0.0/16").unwrap();
        assert!(n.contains("10.1.200.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.0.9".parse().unwrap()));
        let six = Network::parse("2001:db8::/32").unwrap();
        assert!(six.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!six.contains("10.1.0.1".parse().unwrap()));
        assert!(Network::parse("0.0.0.0/0")
            .unwrap()
            .contains("192.0.2.1".parse().unwrap()));
        assert!(Network::parse("10.0.0.0/33").is_err());
        assert!(Network::parse("host").is_err());
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let text = "mode sign\nbogus 1\ncanonicalization relaxed/loose\non-fail maybe\n";
        let errors = Config::parse(text, "t.conf", Path::new(".")).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("t.conf:2: unknown setting")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.starts_with("t.conf:3:")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.starts_with("t.conf:4:")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("authserv-id is required")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("no key-table")),
            "{errors:?}"
        );
    }

    #[test]
    fn verify_only_needs_no_keys() {
        let text = "authserv-id mx.example.net\nmode verify\ndns-record s._domainkey.Example.com. v=DKIM1; p=abc\non-fail quarantine\ncanonicalization simple\n";
        let c = Config::parse(text, "t", Path::new(".")).unwrap();
        assert!(!c.sign && c.verify);
        assert_eq!(c.on_fail, OnFail::Quarantine);
        assert_eq!(c.header_canonicalization, Canonicalization::Simple);
        assert_eq!(c.body_canonicalization, Canonicalization::Simple);
        assert_eq!(
            c.dns_records,
            [(
                "s._domainkey.example.com".to_string(),
                "v=DKIM1; p=abc".to_string()
            )]
        );
    }
}
