//! What a client imitates ([`Profile`]), its [`Timeouts`], and the [`ClientBuilder`].

use super::error::ClientError;
use super::macros::MacroConfig;
use super::stream::{ConnectTarget, Stream};
use super::Client;
use milter_core::client::Strictness;
use milter_core::{Actions, OptNeg, ProtocolOpts, Stage};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The MTA a client imitates.
///
/// | | [`Profile::Postfix`] (3.7) | [`Profile::Sendmail`] (8.17) | [`Profile::Minimal`] |
/// | --- | --- | --- | --- |
/// | offer | v6, actions 0x1FF, protocol 0x1FFFFF | the same | the same |
/// | milter's protocol bits beyond the offer | tolerated | refused | refused |
/// | replacement body interrupted by another packet | refused | tolerated | refused |
/// | `D` before a command | before every command, also when empty, also with codes `L`, `B`, `U` | only when the stage has a macro list or caller macros; never before `U` | only when there are pairs to send |
/// | default macros | `milter_*_macros` of `postconf -d` | the m4 kit's `confMILTER_MACROS_*` | none |
/// | queue id `i` | from DATA on (`i` at DATA, headers and end of headers; `{i}` at body and end of message) | at MAIL | only if the caller sets it |
/// | `A` after a message ([`Client::send_message`]) | after every transaction | only to a milter still inside the message | like Sendmail |
/// | IPv6 client address in `C` | plain text | `IPv6:` prefix; IPv4-mapped as family `4` | plain text |
/// | timeouts (connect, command, content, end of message) | 30 s, 30 s, 300 s, none | 300 s, 10 s, 10 s, 300 s | like Postfix |
///
/// Macro values are plausible rather than real: `j` is `mx.example.org`, `v` names
/// the MTA, `_` is `client-name [client-addr]`, `{mail_addr}` and `{rcpt_addr}` are
/// the bare addresses, and so on. Any of them can be replaced or removed with
/// [`ClientBuilder::macro_value`] and [`ClientBuilder::no_macro`].
///
/// ```
/// use milter_blocking::client::Profile;
/// let p: Profile = "sendmail".parse().unwrap();
/// assert_eq!(p, Profile::Sendmail);
/// assert_eq!(p.offer().protocol.bits(), 0x1F_FFFF);
/// assert!("exim".parse::<Profile>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Profile {
    /// Postfix 3.7 with its default milter settings.
    #[default]
    Postfix,
    /// Sendmail 8.17 configured with the m4 kit's default milter macros.
    Sendmail,
    /// No macros unless the caller sets them, no abort after a completed message:
    /// a plain protocol driver for unit tests.
    Minimal,
}

impl Profile {
    /// The profile's name (`postfix`, `sendmail`, `minimal`).
    pub fn name(self) -> &'static str {
        match self {
            Profile::Postfix => "postfix",
            Profile::Sendmail => "sendmail",
            Profile::Minimal => "minimal",
        }
    }

    /// What the MTA offers in its `O` packet.
    pub fn offer(self) -> OptNeg {
        OptNeg::POSTFIX_3
    }

    /// How strictly the MTA checks the milter (see [`Strictness`]).
    pub fn strictness(self) -> Strictness {
        match self {
            Profile::Postfix => Strictness {
                options_subset: false,
                body_run: true,
                negotiated_actions: true,
            },
            Profile::Sendmail => Strictness {
                options_subset: true,
                body_run: false,
                negotiated_actions: true,
            },
            Profile::Minimal => Strictness::default(),
        }
    }

    /// The MTA's default timeouts.
    pub fn timeouts(self) -> Timeouts {
        match self {
            Profile::Postfix | Profile::Minimal => Timeouts::POSTFIX,
            Profile::Sendmail => Timeouts::SENDMAIL,
        }
    }

    /// The offer Postfix makes with `milter_protocol = VERSION` (2, 3, 4 or 6), and
    /// for 7 and 8 the version-6 masks under a higher version number: what a future
    /// MTA may announce (a milter must answer with at most 6).
    ///
    /// ```
    /// use milter_blocking::client::Profile;
    /// assert_eq!(Profile::offer_for_version(4).unwrap().protocol.bits(), 0x37F);
    /// assert_eq!(Profile::offer_for_version(8).unwrap().version, 8);
    /// assert!(Profile::offer_for_version(5).is_none());
    /// ```
    pub fn offer_for_version(version: u32) -> Option<OptNeg> {
        let protocol = match version {
            2 => 0x7F,
            3 => 0x17F,
            4 => 0x37F,
            6..=8 => 0x1F_FFFF,
            _ => return None,
        };
        Some(OptNeg {
            version,
            actions: Actions::all(),
            protocol: ProtocolOpts::from_bits_retain(protocol),
        })
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "postfix" => Ok(Profile::Postfix),
            "sendmail" => Ok(Profile::Sendmail),
            "minimal" => Ok(Profile::Minimal),
            _ => Err(format!(
                "unknown profile {s:?} (postfix, sendmail or minimal)"
            )),
        }
    }
}

/// How long the client waits. `None` waits forever.
///
/// Each reply read restarts its wait, so every progress packet (`p`) at end of
/// message gives the milter another `content` period; `eom` caps the whole end of
/// message exchange as Sendmail's `E` timeout does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting to the milter (TCP only; a Unix socket connects at once or fails).
    pub connect: Duration,
    /// Each read of the reply to `O C H M R T U` (writes wait for the longer of
    /// this and `content`).
    pub command: Option<Duration>,
    /// Each read of the reply to `L N B E`.
    pub content: Option<Duration>,
    /// The whole end-of-message exchange, progress packets included.
    pub eom: Option<Duration>,
}

impl Timeouts {
    /// Postfix's defaults: connect 30 s, command 30 s, content 300 s, no end of
    /// message cap.
    pub const POSTFIX: Timeouts = Timeouts {
        connect: Duration::from_secs(30),
        command: Some(Duration::from_secs(30)),
        content: Some(Duration::from_secs(300)),
        eom: None,
    };

    /// Sendmail's defaults (`T=C:5m;S:10s;R:10s;E:5m`).
    pub const SENDMAIL: Timeouts = Timeouts {
        connect: Duration::from_secs(300),
        command: Some(Duration::from_secs(10)),
        content: Some(Duration::from_secs(10)),
        eom: Some(Duration::from_secs(300)),
    };

    /// The same limit for everything (handy in tests).
    pub const fn uniform(t: Duration) -> Timeouts {
        Timeouts {
            connect: t,
            command: Some(t),
            content: Some(t),
            eom: Some(t),
        }
    }

    pub(crate) fn for_stage(&self, stage: Option<Stage>) -> Option<Duration> {
        match stage {
            Some(Stage::Header | Stage::Eoh | Stage::Body | Stage::Eom) => self.content,
            _ => self.command,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts::POSTFIX
    }
}

/// Configures and opens a [`Client`].
///
/// ```no_run
/// use milter_blocking::client::{Client, Profile};
/// use std::time::Duration;
/// let client = Client::builder()
///     .profile(Profile::Sendmail)
///     .offer_version(4)
///     .command_timeout(Duration::from_secs(5))
///     .macro_value("j", "mx.test")
///     .open("inet:7357@127.0.0.1")?;
/// # Ok::<(), milter_blocking::client::ClientError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    pub(crate) profile: Profile,
    offer: Option<OptNeg>,
    offer_version: Option<u32>,
    strictness: Option<Strictness>,
    timeouts: Option<Timeouts>,
    pub(crate) macros: MacroConfig,
}

impl ClientBuilder {
    /// A builder with the Postfix profile.
    pub fn new() -> Self {
        Self::default()
    }

    /// The MTA to imitate (default [`Profile::Postfix`]); sets the offer,
    /// strictness, timeouts and macros not set explicitly.
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// Offers exactly this (version, actions, protocol flags).
    pub fn offer(mut self, offer: OptNeg) -> Self {
        self.offer = Some(offer);
        self
    }

    /// Offers what Postfix offers at `milter_protocol = version` (2, 3, 4 or 6), or
    /// a future MTA's announcement (7, 8; see [`Profile::offer_for_version`]); any
    /// other version makes [`ClientBuilder::open`] fail with a misuse error.
    pub fn offer_version(mut self, version: u32) -> Self {
        self.offer_version = Some(version);
        self
    }

    /// How strictly to check the milter's packets.
    pub fn strictness(mut self, strictness: Strictness) -> Self {
        self.strictness = Some(strictness);
        self
    }

    /// All timeouts at once.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = Some(timeouts);
        self
    }

    fn timeouts_mut(&mut self) -> &mut Timeouts {
        let profile = self.profile;
        self.timeouts.get_or_insert_with(|| profile.timeouts())
    }

    /// The connect timeout.
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.timeouts_mut().connect = t;
        self
    }

    /// The per-reply timeout for `O C H M R T U`.
    pub fn command_timeout(mut self, t: impl Into<Option<Duration>>) -> Self {
        self.timeouts_mut().command = t.into();
        self
    }

    /// The per-reply timeout for `L N B E`.
    pub fn content_timeout(mut self, t: impl Into<Option<Duration>>) -> Self {
        self.timeouts_mut().content = t.into();
        self
    }

    /// The cap on the whole end-of-message exchange.
    pub fn eom_timeout(mut self, t: impl Into<Option<Duration>>) -> Self {
        self.timeouts_mut().eom = t.into();
        self
    }

    /// Gives the macro `name` this value wherever a macro list (the profile's or
    /// the milter's symbol list) names it. `i` and `{i}` are the same name.
    pub fn macro_value(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.macros.set_value(name, Some(value.as_ref()));
        self
    }

    /// Never sends the macro `name` (it has no value).
    pub fn no_macro(mut self, name: &str) -> Self {
        self.macros.set_value(name, None);
        self
    }

    /// Sends `name=value` in the `D` packet before every command of `stage`, in
    /// addition to the listed macros (and instead of a listed one of that name).
    /// Header, body and unknown-command macros go out with the codes `L`, `B`, `U`.
    pub fn stage_macro(mut self, stage: Stage, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.macros.add_stage_pair(stage, name, value.as_ref());
        self
    }

    /// Connects to the milter at `target` and negotiates.
    pub fn open(self, target: impl ConnectTarget) -> Result<Client, ClientError> {
        let spec = target.to_spec()?;
        let timeouts = self.resolved_timeouts();
        let stream = Stream::connect(&spec, timeouts.connect).map_err(|source| {
            if matches!(
                source.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                ClientError::Timeout {
                    during: format!("connecting to {spec}"),
                    after: timeouts.connect,
                }
            } else {
                ClientError::Connect {
                    spec: spec.to_string(),
                    source,
                }
            }
        })?;
        self.over_stream(stream)
    }

    /// Negotiates over a stream the caller connected (a `UnixStream::pair()` half
    /// in a test, say).
    pub fn over_stream(self, stream: impl Into<Stream>) -> Result<Client, ClientError> {
        let offer = self.resolved_offer()?;
        let strictness = self.strictness.unwrap_or(self.profile.strictness());
        let timeouts = self.resolved_timeouts();
        Client::negotiate(
            stream.into(),
            self.profile,
            offer,
            strictness,
            timeouts,
            self.macros,
        )
    }

    fn resolved_timeouts(&self) -> Timeouts {
        self.timeouts.unwrap_or(self.profile.timeouts())
    }

    fn resolved_offer(&self) -> Result<OptNeg, ClientError> {
        match (self.offer, self.offer_version) {
            (Some(o), _) => Ok(o),
            (None, Some(v)) => Profile::offer_for_version(v).ok_or_else(|| {
                ClientError::misuse(format!(
                    "cannot offer protocol version {v}: choose 2, 3, 4 or 6"
                ))
            }),
            (None, None) => Ok(self.profile.offer()),
        }
    }
}
