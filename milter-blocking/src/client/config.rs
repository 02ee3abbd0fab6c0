//! What a client imitates ([`Profile`]), its [`Timeouts`], and the [`ClientBuilder`].

use super::error::ClientError;
use super::macros::MacroConfig;
use super::run::Verdict;
use super::stream::{ConnectTarget, Stream};
use super::Client;
use milter_core::client::{LowVersion, ReplyTextCheck, Strictness};
use milter_core::{Actions, OptNeg, ProtocolOpts, Stage};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The MTA a client imitates.
///
/// | | [`Profile::Postfix`] (3.7), [`Profile::Postfix3_11`] | [`Profile::Sendmail`] (8.17), [`Profile::Sendmail8_18`] | [`Profile::Stalwart`] | [`Profile::Minimal`] |
/// | --- | --- | --- | --- | --- |
/// | offer | v6, actions 0x1FF, protocol 0x1FFFFF | the same | v6, actions 0xFF (no `SETSYMLIST`), protocol 0x42 | like Postfix |
/// | milter's protocol bits beyond the offer | tolerated | refused | tolerated | refused |
/// | replacement body interrupted by another packet | refused | tolerated | tolerated | refused |
/// | `p` before end of message | ignored | refused | refused | refused |
/// | `s` before the body | skips the rest of that stage's commands | at a header or end of headers: the headers go on, the body is cut to a first full 65535-byte chunk; earlier: nothing more but `Q` in the session | refused | refused |
/// | `q` before end of message | holds the message; no more envelope commands in the session (content still goes out) | refused | refused | refused |
/// | `y` text | first line checked | a malformed text becomes `550 5.7.1 Command rejected` (or the command's other default) | first line checked | every line, one code |
/// | negotiation reply version 0 or 1 | accepted, events of the offered version | 0 as version 2, 1 refused | refused | refused |
/// | `D` before a command | before every command, also when empty, also with codes `L`, `B`, `U` | only when the stage has a macro list or caller macros; never before `U` | before `C H M R` only, a fixed list, macros without a value too | only when there are pairs to send |
/// | default macros | `milter_*_macros` of `postconf -d` | the m4 kit's `confMILTER_MACROS_*` | `j {daemon_name} {client_addr} {client_port} {client_ptr}`, `{mail_addr}`, `{rcpt_addr}` | none |
/// | queue id `i` | from the second RCPT on and at DATA, each header, end of headers, body and end of message, always named `i` (its queue file opens after the first accepted recipient; `{i}` only if the milter's symbol list names it so) | at MAIL | never | only if the caller sets it |
/// | header values | as in the message (one leading space removed unless `HDR_LEADSPC`) | the same | trimmed at both ends, folds as CRLF | like Postfix |
/// | ESMTP arguments of MAIL and RCPT | sent | sent | not sent (and the addresses lowercased) | sent |
/// | after reject, tempfail or a reply at connect or HELO, accept at connect or HELO, or `4` anywhere | closes the milter connection at once | goes on (`Q` at the end) | closes after any final decision | goes on |
/// | `A` after a message ([`Client::send_message`]) | after every transaction | only to a milter still inside the message | never | like Sendmail |
/// | packets over 65535 bytes (a long header) | sent (milter8 has no limit; but Postfix cuts headers to 60,000 bytes before, and so does [`Client::send_message`]) | refused (Sendmail puts the milter in its error state) | sent | refused |
/// | IPv6 client address in `C` | plain text | `IPv6:` prefix; IPv4-mapped as family `4` | plain text | plain text |
/// | timeouts (connect, command, content, end of message) | 30 s, 30 s, 300 s, none | 300 s, 10 s, 10 s, 300 s | 30 s, 30 s, 60 s, none | like Postfix |
/// | a failing milter ([`Profile::failure_verdict`]) | 3.7: tempfail (451 4.7.1); 3.11: shutdown (421 4.7.1) | the message goes on without it (no `F=` flag) | tempfail (451 4.3.5) | tempfail |
///
/// Macro values are plausible rather than real: `j` is `mx.example.org`, `v` names
/// the MTA, `_` is `client-name [client-addr]`, `{mail_addr}` and `{rcpt_addr}` are
/// the bare addresses, and so on. Any of them can be replaced or removed with
/// [`ClientBuilder::macro_value`] and [`ClientBuilder::no_macro`].
///
/// Sources: the Postfix 3.7 and Sendmail 8.17 profiles follow traffic observed
/// from Postfix 3.7.11 and Sendmail 8.17.1.9 and their sources (Postfix's
/// `src/milter/milter8.c`, Sendmail's `sendmail/milter.c`); Postfix 3.11 follows
/// the 3.11.6 source and release notes (`milter_default_action` now defaults to
/// `shutdown`; the milter protocol code is otherwise that of 3.7); Sendmail 8.18
/// follows the 8.18.0.2 source, whose `milter.c` behaves as 8.17's; Stalwart
/// follows the source of its milter client (`crates/smtp/src/inbound/milter/` of
/// version 0.16.19, August 2026).
///
/// Stalwart opens one milter connection for each stage a milter is configured
/// for (by default only DATA) and replays the earlier stages on each: connect,
/// HELO, MAIL and every recipient so far, then for DATA the whole message, and
/// quits. [`Client::send_message`] with this profile is the DATA-stage run on a
/// fresh client; a run for an earlier stage is the same run cut short (connect,
/// HELO, MAIL, the recipients so far), on a client of its own, driven stage by
/// stage. Not imitated: Stalwart sends end of headers even to a milter that
/// negotiated it away, takes progress packets in answer to body chunks, and
/// applies modifications its own way (a quarantine becomes an `X-Quarantine:`
/// header); [`EomResult::apply`](super::EomResult::apply) follows Postfix.
///
/// ```
/// use milter_blocking::client::Profile;
/// let p: Profile = "sendmail".parse().unwrap();
/// assert_eq!(p, Profile::Sendmail);
/// assert_eq!(p.offer().protocol.bits(), 0x1F_FFFF);
/// assert_eq!("postfix-3.11".parse::<Profile>().unwrap(), Profile::Postfix3_11);
/// assert_eq!(Profile::Stalwart.offer().protocol.bits(), 0x42);
/// assert!("exim".parse::<Profile>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Profile {
    /// Postfix 3.7 with its default milter settings (checked against traffic
    /// from Postfix 3.7.11 and its source).
    #[default]
    Postfix,
    /// Postfix 3.11 with its default milter settings (checked against the 3.11.6
    /// source and release notes).
    Postfix3_11,
    /// Sendmail 8.17 configured with the m4 kit's default milter macros (checked
    /// against traffic from Sendmail 8.17.1.9 and its source).
    Sendmail,
    /// Sendmail 8.18 configured with the m4 kit's default milter macros (checked
    /// against the 8.18.0.2 source).
    Sendmail8_18,
    /// Stalwart with a milter at the DATA stage and its default settings (checked
    /// against the source of version 0.16.19).
    Stalwart,
    /// No macros unless the caller sets them, no abort after a completed message:
    /// a plain protocol driver for unit tests.
    Minimal,
}

/// Every profile, in the order `milter-check --help` lists them.
const PROFILES: [Profile; 6] = [
    Profile::Postfix,
    Profile::Postfix3_11,
    Profile::Sendmail,
    Profile::Sendmail8_18,
    Profile::Stalwart,
    Profile::Minimal,
];

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 6] = PROFILES;

    /// The profile's name (`postfix`, `postfix-3.11`, `sendmail`, `sendmail-8.18`,
    /// `stalwart`, `minimal`).
    ///
    /// ```
    /// use milter_blocking::client::Profile;
    /// assert_eq!(Profile::Sendmail.name(), "sendmail");
    /// assert_eq!("sendmail".parse::<Profile>(), Ok(Profile::Sendmail));
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Profile::Postfix => "postfix",
            Profile::Postfix3_11 => "postfix-3.11",
            Profile::Sendmail => "sendmail",
            Profile::Sendmail8_18 => "sendmail-8.18",
            Profile::Stalwart => "stalwart",
            Profile::Minimal => "minimal",
        }
    }

    /// Whether this is one of the Postfix profiles.
    pub fn is_postfix(self) -> bool {
        matches!(self, Profile::Postfix | Profile::Postfix3_11)
    }

    /// Whether this is one of the Sendmail profiles.
    pub fn is_sendmail(self) -> bool {
        matches!(self, Profile::Sendmail | Profile::Sendmail8_18)
    }

    /// The MTA and version as the macro `v` reports it.
    pub(crate) fn version_text(self) -> &'static str {
        match self {
            Profile::Postfix => "Postfix 3.7.11",
            Profile::Postfix3_11 => "Postfix 3.11.6",
            Profile::Sendmail => "8.17.1.9",
            Profile::Sendmail8_18 => "8.18.1",
            Profile::Stalwart | Profile::Minimal => "",
        }
    }

    /// What the MTA offers in its `O` packet.
    ///
    /// ```
    /// use milter_blocking::client::Profile;
    /// use milter_blocking::Actions;
    /// let offer = Profile::Postfix.offer();
    /// assert_eq!(offer.version, 6);
    /// assert!(offer.actions.contains(Actions::ADD_HEADER | Actions::QUARANTINE));
    /// ```
    pub fn offer(self) -> OptNeg {
        match self {
            Profile::Stalwart => OptNeg {
                version: 6,
                actions: Actions::all() - Actions::SET_SYMBOL_LIST,
                protocol: ProtocolOpts::from_bits_retain(0x42),
            },
            _ => OptNeg::POSTFIX_3,
        }
    }

    /// How strictly the MTA checks the milter (see [`Strictness`]).
    ///
    /// ```
    /// use milter_blocking::client::Profile;
    /// println!("Sendmail checks replies {:?}", Profile::Sendmail.strictness());
    /// ```
    pub fn strictness(self) -> Strictness {
        let lenient = Strictness {
            options_subset: false,
            body_run: false,
            reply_text: ReplyTextCheck::FirstLine,
            ..Strictness::default()
        };
        match self {
            Profile::Postfix | Profile::Postfix3_11 => Strictness {
                body_run: true,
                progress_anywhere: true,
                skip_anywhere: true,
                quarantine_anywhere: true,
                low_version: LowVersion::AsOffered,
                ..lenient
            },
            Profile::Sendmail | Profile::Sendmail8_18 => Strictness {
                options_subset: true,
                skip_anywhere: true,
                reply_text: ReplyTextCheck::ReplaceMalformed,
                low_version: LowVersion::ZeroAsTwo,
                ..lenient
            },
            Profile::Stalwart => lenient,
            Profile::Minimal => Strictness::default(),
        }
    }

    /// The largest packet payload the MTA sends (`None`: no limit).
    pub fn send_limit(self) -> Option<usize> {
        match self {
            Profile::Postfix | Profile::Postfix3_11 | Profile::Stalwart => None,
            _ => Some(milter_core::limits::MAX_SEND_PAYLOAD),
        }
    }

    /// The MTA's default timeouts.
    ///
    /// ```
    /// use milter_blocking::client::{Profile, Timeouts};
    /// assert_eq!(Profile::Sendmail.timeouts(), Timeouts::SENDMAIL);
    /// ```
    pub fn timeouts(self) -> Timeouts {
        match self {
            Profile::Sendmail | Profile::Sendmail8_18 => Timeouts::SENDMAIL,
            Profile::Stalwart => Timeouts::STALWART,
            _ => Timeouts::POSTFIX,
        }
    }

    /// What the MTA does with the message (or session) when the milter fails at
    /// `stage` (breaks the protocol, closes the connection, times out): Postfix's
    /// `milter_default_action` (3.7: `tempfail`, 3.11: `shutdown`), Sendmail
    /// without an `F=` flag goes on without the milter, Stalwart's
    /// `tempFailOnError` (on by default).
    ///
    /// ```
    /// use milter_blocking::client::{Profile, Verdict};
    /// use milter_blocking::Stage;
    /// assert_eq!(Profile::Postfix3_11.failure_verdict(Stage::Rcpt).name(), "shutdown");
    /// assert_eq!(Profile::Postfix.failure_verdict(Stage::Rcpt).name(), "tempfail");
    /// assert_eq!(Profile::Sendmail.failure_verdict(Stage::Rcpt), Verdict::Accept);
    /// ```
    pub fn failure_verdict(self, stage: Stage) -> Verdict {
        let tempfail = |text: &[u8]| Verdict::Tempfail {
            stage,
            reply: Some(text.to_vec()),
        };
        match self {
            Profile::Postfix => tempfail(b"451 4.7.1 Service unavailable - try again later"),
            Profile::Postfix3_11 => Verdict::Shutdown { stage },
            Profile::Sendmail | Profile::Sendmail8_18 => Verdict::Accept,
            Profile::Stalwart => tempfail(b"451 4.3.5 Unable to accept message at this time."),
            Profile::Minimal => Verdict::Tempfail { stage, reply: None },
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

    /// A profile's [name](Profile::name), any case; `postfix-3.7` and
    /// `sendmail-8.17` name the first two.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.to_ascii_lowercase();
        match s.as_str() {
            "postfix-3.7" => return Ok(Profile::Postfix),
            "sendmail-8.17" => return Ok(Profile::Sendmail),
            _ => {}
        }
        PROFILES.into_iter().find(|p| p.name() == s).ok_or_else(|| {
            let names: Vec<&str> = PROFILES.iter().map(|p| p.name()).collect();
            format!("unknown profile {s:?} ({})", names.join(", "))
        })
    }
}

/// How long the client waits. `None` waits forever.
///
/// Each reply read restarts its wait, so every progress packet (`p`) at end of
/// message gives the milter another `content` period; `eom` caps the whole end of
/// message exchange as Sendmail's `E` timeout does.
///
/// ```
/// use milter_blocking::client::Timeouts;
/// use std::time::Duration;
/// // Postfix's, with a tighter end of message.
/// let t = Timeouts { eom: Some(Duration::from_secs(60)), ..Timeouts::POSTFIX };
/// assert_eq!(t.command, Some(Duration::from_secs(30)));
/// ```
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

    /// Stalwart's defaults: connect 30 s, command 30 s, data 60 s.
    pub const STALWART: Timeouts = Timeouts {
        connect: Duration::from_secs(30),
        command: Some(Duration::from_secs(30)),
        content: Some(Duration::from_secs(60)),
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
    ///
    /// ```
    /// use milter_blocking::client::Timeouts;
    /// use std::time::Duration;
    /// let t = Timeouts::uniform(Duration::from_secs(10));
    /// assert_eq!(t.eom, Some(Duration::from_secs(10)));
    /// ```
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
    ///
    /// ```
    /// use milter_blocking::client::{ClientBuilder, Profile};
    /// let builder = ClientBuilder::new().profile(Profile::Sendmail);
    /// # let _ = builder;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The MTA to imitate (default [`Profile::Postfix`]); sets the offer,
    /// strictness, timeouts and macros not set explicitly.
    ///
    /// ```
    /// use milter_blocking::client::{Client, Profile};
    /// let builder = Client::builder().profile(Profile::Minimal); // no macros, no extra aborts
    /// # let _ = builder;
    /// ```
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// Offers exactly this (version, actions, protocol flags).
    ///
    /// ```
    /// use milter_blocking::client::{Client, Profile};
    /// use milter_blocking::Actions;
    /// // Postfix's offer without the right to replace the body.
    /// let mut offer = Profile::Postfix.offer();
    /// offer.actions.remove(Actions::CHANGE_BODY);
    /// let builder = Client::builder().offer(offer);
    /// # let _ = builder;
    /// ```
    pub fn offer(mut self, offer: OptNeg) -> Self {
        self.offer = Some(offer);
        self
    }

    /// Offers what Postfix offers at `milter_protocol = version` (2, 3, 4 or 6), or
    /// a future MTA's announcement (7, 8; see [`Profile::offer_for_version`]); any
    /// other version makes [`ClientBuilder::open`] fail with a misuse error.
    ///
    /// ```
    /// use milter_blocking::client::Client;
    /// // As Postfix with `milter_protocol = 2`: no DATA, no unknown commands, no skip.
    /// let builder = Client::builder().offer_version(2);
    /// # let _ = builder;
    /// ```
    pub fn offer_version(mut self, version: u32) -> Self {
        self.offer_version = Some(version);
        self
    }

    /// How strictly to check the milter's packets.
    ///
    /// ```
    /// use milter_blocking::client::{Client, Profile};
    /// let builder = Client::builder().strictness(Profile::Sendmail.strictness());
    /// # let _ = builder;
    /// ```
    pub fn strictness(mut self, strictness: Strictness) -> Self {
        self.strictness = Some(strictness);
        self
    }

    /// All timeouts at once.
    ///
    /// ```
    /// use milter_blocking::client::{Client, Timeouts};
    /// use std::time::Duration;
    /// // In a test: fail within 10 s rather than hang on a stuck milter.
    /// let builder = Client::builder().timeouts(Timeouts::uniform(Duration::from_secs(10)));
    /// # let _ = builder;
    /// ```
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = Some(timeouts);
        self
    }

    fn timeouts_mut(&mut self) -> &mut Timeouts {
        let profile = self.profile;
        self.timeouts.get_or_insert_with(|| profile.timeouts())
    }

    /// The connect timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = milter_blocking::client::Client::builder().connect_timeout(Duration::from_secs(2));
    /// # let _ = builder;
    /// ```
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.timeouts_mut().connect = t;
        self
    }

    /// The per-reply timeout for `O C H M R T U`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = milter_blocking::client::Client::builder().command_timeout(Duration::from_secs(5));
    /// let patient = milter_blocking::client::Client::builder().command_timeout(None); // wait forever
    /// # let _ = (builder, patient);
    /// ```
    pub fn command_timeout(mut self, t: impl Into<Option<Duration>>) -> Self {
        self.timeouts_mut().command = t.into();
        self
    }

    /// The per-reply timeout for `L N B E`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = milter_blocking::client::Client::builder().content_timeout(Duration::from_secs(60));
    /// # let _ = builder;
    /// ```
    pub fn content_timeout(mut self, t: impl Into<Option<Duration>>) -> Self {
        self.timeouts_mut().content = t.into();
        self
    }

    /// The cap on the whole end-of-message exchange.
    ///
    /// ```
    /// use std::time::Duration;
    /// // Sendmail's `E` timeout: the whole end of message, progress packets or not.
    /// let builder = milter_blocking::client::Client::builder().eom_timeout(Duration::from_secs(300));
    /// # let _ = builder;
    /// ```
    pub fn eom_timeout(mut self, t: impl Into<Option<Duration>>) -> Self {
        self.timeouts_mut().eom = t.into();
        self
    }

    /// Gives the macro `name` this value wherever a macro list (the profile's or
    /// the milter's symbol list) names it. `i` and `{i}` are the same name.
    ///
    /// ```
    /// use milter_blocking::client::Client;
    /// let builder = Client::builder()
    ///     .macro_value("j", "mx.example.com")
    ///     .macro_value("{auth_authen}", "alice");
    /// # let _ = builder;
    /// ```
    pub fn macro_value(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.macros.set_value(name, Some(value.as_ref()));
        self
    }

    /// Never sends the macro `name` (it has no value).
    ///
    /// ```
    /// use milter_blocking::client::Client;
    /// // As an MTA that does not resolve client names.
    /// let builder = Client::builder().no_macro("{client_name}");
    /// # let _ = builder;
    /// ```
    pub fn no_macro(mut self, name: &str) -> Self {
        self.macros.set_value(name, None);
        self
    }

    /// Sends `name=value` in the `D` packet before every command of `stage`, in
    /// addition to the listed macros (and instead of a listed one of that name).
    /// Header, body and unknown-command macros go out with the codes `L`, `B`, `U`.
    ///
    /// ```
    /// use milter_blocking::client::Client;
    /// use milter_blocking::Stage;
    /// let builder = Client::builder().stage_macro(Stage::Rcpt, "{rcpt_host}", "example.com");
    /// # let _ = builder;
    /// ```
    pub fn stage_macro(mut self, stage: Stage, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.macros.add_stage_pair(stage, name, value.as_ref());
        self
    }

    /// Connects to the milter at `target` and negotiates.
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// use milter_blocking::client::{Client, Profile};
    /// let client = Client::builder().profile(Profile::Sendmail).open(&spec)?;
    /// client.quit()?;
    ///
    /// // Nothing listening: a connect error naming the socket.
    /// let err = Client::open("unix:/nonexistent/milter.sock").unwrap_err();
    /// assert!(err.to_string().contains("/nonexistent/milter.sock"));
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
    ///
    /// ```
    /// use milter_blocking::client::{Client, ErrorKind};
    /// use std::io::Write;
    /// use std::os::unix::net::UnixStream;
    ///
    /// // A fake milter that answers the negotiation with nonsense.
    /// let (mta, mut milter) = UnixStream::pair()?;
    /// milter.write_all(b"\0\0\0\x01z")?;
    /// let err = Client::builder().over_stream(mta).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Protocol);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
