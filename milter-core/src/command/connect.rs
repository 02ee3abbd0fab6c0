//! `C` — connection information.

use crate::error::DecodeError;
use crate::frame::encode_frame;
use crate::reader::Reader;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

/// The address family byte of a connect packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `'4'`: IPv4.
    Inet,
    /// `'6'`: IPv6.
    Inet6,
    /// `'L'`: a Unix socket.
    Unix,
    /// `'U'`: unknown (no port, no address follow).
    Unknown,
}

impl Family {
    /// The wire byte.
    pub const fn byte(self) -> u8 {
        match self {
            Family::Inet => b'4',
            Family::Inet6 => b'6',
            Family::Unix => b'L',
            Family::Unknown => b'U',
        }
    }

    /// The family for a wire byte.
    pub fn from_byte(b: u8) -> Result<Family, DecodeError> {
        match b {
            b'4' => Ok(Family::Inet),
            b'6' => Ok(Family::Inet6),
            b'L' => Ok(Family::Unix),
            b'U' => Ok(Family::Unknown),
            other => Err(DecodeError::BadFamily(other)),
        }
    }
}

/// The SMTP client's address, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectAddr<'a> {
    /// An IPv4 client.
    Inet(SocketAddrV4),
    /// An IPv6 client.
    Inet6(SocketAddrV6),
    /// A client on a Unix socket (the socket path, as bytes).
    Unix(&'a [u8]),
    /// The MTA does not know (command-line submission, non-IP client).
    Unknown,
}

impl std::fmt::Display for ConnectAddr<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectAddr::Inet(a) => write!(f, "{a}"),
            ConnectAddr::Inet6(a) => write!(f, "{a}"),
            ConnectAddr::Unix(p) => write!(f, "unix:{}", String::from_utf8_lossy(p)),
            ConnectAddr::Unknown => f.write_str("unknown"),
        }
    }
}

/// Longest Unix socket path libmilter accepts (`sun_path`).
const MAX_UNIX_PATH: usize = 108;

/// A connect packet, kept as on the wire (so it re-encodes byte for byte); the
/// address is validated at decode time and parsed by [`Connect::addr`].
///
/// ```
/// use milter_core::{Connect, ConnectAddr};
/// let c = Connect::decode(b"client.example.net\x004\x00\x19192.0.2.7\x00").unwrap();
/// assert_eq!(c.hostname, b"client.example.net");
/// assert_eq!(c.addr().to_string(), "192.0.2.7:25");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connect<'a> {
    /// The client's host name (reverse DNS, `[a.b.c.d]` when unverified, or
    /// `unknown`).
    pub hostname: &'a [u8],
    /// The address family.
    pub family: Family,
    /// The client's port (0 for Unix and unknown).
    pub port: u16,
    /// The address text as the MTA sent it (Sendmail prefixes IPv6 with `IPv6:`);
    /// empty for [`Family::Unknown`].
    pub address: &'a [u8],
}

impl<'a> Connect<'a> {
    /// Decodes the payload of a `C` command, validating the address for its family
    /// as libmilter does.
    pub fn decode(payload: &'a [u8]) -> Result<Connect<'a>, DecodeError> {
        let mut r = Reader::new(b'C', payload);
        let hostname = r.cstr("host name")?;
        let family = Family::from_byte(r.u8("family")?)?;
        let (port, address) = if family == Family::Unknown {
            (0, &[][..])
        } else {
            (r.u16("port")?, r.cstr("address")?)
        };
        let c = Connect {
            hostname,
            family,
            port,
            address,
        };
        c.parse_addr()?;
        Ok(c)
    }

    fn parse_addr(&self) -> Result<ConnectAddr<'a>, DecodeError> {
        let bad = DecodeError::BadAddress {
            family: self.family.byte(),
        };
        match self.family {
            Family::Unknown => Ok(ConnectAddr::Unknown),
            Family::Unix => {
                if self.address.len() > MAX_UNIX_PATH {
                    return Err(bad);
                }
                Ok(ConnectAddr::Unix(self.address))
            }
            Family::Inet => {
                let text = std::str::from_utf8(self.address).map_err(|_| bad.clone())?;
                let ip: Ipv4Addr = text.parse().map_err(|_| bad)?;
                Ok(ConnectAddr::Inet(SocketAddrV4::new(ip, self.port)))
            }
            Family::Inet6 => {
                let mut text = self.address;
                if text.len() >= 5 && text[..5].eq_ignore_ascii_case(b"IPv6:") {
                    text = &text[5..];
                }
                let text = std::str::from_utf8(text).map_err(|_| bad.clone())?;
                // An IPv4-mapped address may come as a plain dotted quad.
                let ip: Ipv6Addr = match text.parse() {
                    Ok(ip) => ip,
                    Err(_) => text
                        .parse::<Ipv4Addr>()
                        .map(|v4| v4.to_ipv6_mapped())
                        .map_err(|_| bad)?,
                };
                Ok(ConnectAddr::Inet6(SocketAddrV6::new(ip, self.port, 0, 0)))
            }
        }
    }

    /// The parsed address. A `Connect` built by hand with an unparsable address
    /// yields [`ConnectAddr::Unknown`].
    pub fn addr(&self) -> ConnectAddr<'a> {
        self.parse_addr().unwrap_or(ConnectAddr::Unknown)
    }

    /// Appends the `C` packet.
    pub fn encode(&self, out: &mut Vec<u8>) {
        if self.family == Family::Unknown {
            encode_frame(out, b'C', &[self.hostname, b"\0U"]);
        } else {
            encode_frame(
                out,
                b'C',
                &[
                    self.hostname,
                    &[0, self.family.byte()],
                    &self.port.to_be_bytes(),
                    self.address,
                    b"\0",
                ],
            );
        }
    }
}
