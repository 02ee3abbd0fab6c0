//! libmilter-style socket specifications: `inet:PORT@HOST`, `inet6:PORT@HOST`,
//! `unix:/path`, `local:/path`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

/// Where a milter listens (or where a client connects).
///
/// The syntax is libmilter's (`smfi_setconn`) and Sendmail's `S=` equate, so
/// configuration written for libmilter milters works unchanged:
///
/// | spec | meaning |
/// | --- | --- |
/// | `inet:7357@127.0.0.1` | TCP on IPv4 127.0.0.1 port 7357 (a host name is resolved) |
/// | `inet:7357@[127.0.0.1]` | the same, host in brackets |
/// | `inet:7357` | TCP on every IPv4 address |
/// | `inet6:7357@::1` | TCP on IPv6 ::1 |
/// | `inet6:7357` | TCP on every IPv6 address |
/// | `unix:/run/milter.sock`, `local:/run/milter.sock`, `/run/milter.sock` | a Unix socket |
///
/// The type prefix is case-insensitive; the port may be a number (service names
/// are not looked up). Postfix's own syntax `inet:HOST:PORT` is accepted too when
/// it cannot be mistaken for libmilter's.
///
/// ```
/// use milter_blocking::SocketSpec;
/// let s: SocketSpec = "inet:7357@127.0.0.1".parse().unwrap();
/// assert_eq!(s.to_string(), "inet:7357@127.0.0.1");
/// let u: SocketSpec = "local:/tmp/m.sock".parse().unwrap();
/// assert!(matches!(u, SocketSpec::Unix(_)));
/// assert!("inet:notaport@x".parse::<SocketSpec>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SocketSpec {
    /// A TCP address (IPv4 or IPv6).
    Inet(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

/// A socket spec that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSpecError {
    spec: String,
    reason: String,
}

impl fmt::Display for SocketSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad socket spec {:?}: {}", self.spec, self.reason)
    }
}

impl std::error::Error for SocketSpecError {}

impl FromStr for SocketSpec {
    type Err = SocketSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| SocketSpecError {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let (kind, rest) = match spec.split_once(':') {
            Some((k, r)) if !k.contains('/') => (k.to_ascii_lowercase(), r),
            _ => ("unix".to_string(), spec),
        };
        match kind.as_str() {
            "unix" | "local" => {
                if rest.is_empty() {
                    return Err(err("empty socket path"));
                }
                Ok(SocketSpec::Unix(PathBuf::from(rest)))
            }
            "inet" | "inet6" => {
                let v6 = kind == "inet6";
                let (port, host) = match rest.split_once('@') {
                    Some((p, h)) => (p, Some(h)),
                    None => match rest.rsplit_once(':') {
                        // Postfix style inet:host:port.
                        Some((h, p)) if !v6 && !h.is_empty() => (p, Some(h)),
                        _ => (rest, None),
                    },
                };
                let port: u16 = port
                    .parse()
                    .map_err(|_| err("the port must be a number from 0 to 65535"))?;
                let ip: IpAddr = match host {
                    None | Some("") => {
                        if v6 {
                            Ipv6Addr::UNSPECIFIED.into()
                        } else {
                            Ipv4Addr::UNSPECIFIED.into()
                        }
                    }
                    Some(h) => {
                        let h = h
                            .strip_prefix('[')
                            .and_then(|h| h.strip_suffix(']'))
                            .unwrap_or(h);
                        match h.parse::<IpAddr>() {
                            Ok(ip) => ip,
                            Err(_) => resolve(h, port, v6).ok_or_else(|| {
                                err("the host is not an address and does not resolve")
                            })?,
                        }
                    }
                };
                if v6 != ip.is_ipv6() {
                    return Err(err(if v6 {
                        "inet6 needs an IPv6 address"
                    } else {
                        "inet needs an IPv4 address (use inet6 for IPv6)"
                    }));
                }
                Ok(SocketSpec::Inet(SocketAddr::new(ip, port)))
            }
            other => Err(err(&format!(
                "unknown socket type {other:?} (inet, inet6, unix or local)"
            ))),
        }
    }
}

fn resolve(host: &str, port: u16, v6: bool) -> Option<IpAddr> {
    (host, port)
        .to_socket_addrs()
        .ok()?
        .map(|a| a.ip())
        .find(|ip| ip.is_ipv6() == v6)
}

impl fmt::Display for SocketSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketSpec::Inet(SocketAddr::V4(a)) => write!(f, "inet:{}@{}", a.port(), a.ip()),
            SocketSpec::Inet(SocketAddr::V6(a)) => write!(f, "inet6:{}@{}", a.port(), a.ip()),
            SocketSpec::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl From<SocketAddr> for SocketSpec {
    fn from(a: SocketAddr) -> Self {
        SocketSpec::Inet(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<SocketSpec, SocketSpecError> {
        s.parse()
    }

    #[test]
    fn parses_libmilter_syntax() {
        assert_eq!(
            p("inet:3333@127.0.0.1").unwrap().to_string(),
            "inet:3333@127.0.0.1"
        );
        assert_eq!(
            p("INET:3333@[127.0.0.1]").unwrap().to_string(),
            "inet:3333@127.0.0.1"
        );
        assert_eq!(p("inet:3333").unwrap().to_string(), "inet:3333@0.0.0.0");
        assert_eq!(p("inet6:3333@::1").unwrap().to_string(), "inet6:3333@::1");
        assert_eq!(p("inet6:3333@[::1]").unwrap().to_string(), "inet6:3333@::1");
        assert_eq!(p("inet6:3333").unwrap().to_string(), "inet6:3333@::");
        assert_eq!(p("unix:/tmp/x").unwrap(), SocketSpec::Unix("/tmp/x".into()));
        assert_eq!(
            p("local:/tmp/x").unwrap(),
            SocketSpec::Unix("/tmp/x".into())
        );
        assert_eq!(p("/tmp/x").unwrap(), SocketSpec::Unix("/tmp/x".into()));
        assert_eq!(
            p("inet:127.0.0.1:25").unwrap().to_string(),
            "inet:25@127.0.0.1"
        );
        assert_eq!(
            p("inet:25@localhost").unwrap().to_string(),
            "inet:25@127.0.0.1"
        );
    }

    #[test]
    fn refuses_nonsense() {
        assert!(p("inet:x@127.0.0.1").is_err());
        assert!(p("inet:70000@127.0.0.1").is_err());
        assert!(p("inet:25@::1").is_err());
        assert!(p("inet6:25@127.0.0.1").is_err());
        assert!(p("tcp:25").is_err());
        assert!(p("unix:").is_err());
    }
}
