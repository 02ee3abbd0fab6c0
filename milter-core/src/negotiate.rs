//! Option negotiation as a pure function: the MTA's offer and the milter's
//! [`Spec`] give the agreed [`Negotiated`] parameters, or a [`NegotiateError`].

use crate::command::OptNeg;
use crate::error::NegotiateError;
use crate::flags::{Actions, ProtocolOpts};
use crate::limits::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use crate::reply::{OptNegReply, SymbolList};
use crate::stage::{MacroStage, Stage, Stages};
use std::borrow::Cow;

/// Protocol options a milter may ask for beyond skip and no-reply bits.
pub const CAPABILITY_OPTIONS: ProtocolOpts = ProtocolOpts::SKIP
    .union(ProtocolOpts::RCPT_REJ)
    .union(ProtocolOpts::HEADER_LEADING_SPACE);

/// What a milter wants from negotiation.
///
/// `milter-blocking` builds this from a milter's declaration (`#[derive(Milter)]`:
/// actions, options, macros) and its handlers (`#[handlers]`: which stages, and
/// which never reply); it can be written by hand too.
///
/// ```
/// use milter_core::{negotiate, Actions, OptNeg, Spec, Stages};
/// let spec = Spec {
///     handled: Stages::RCPT | Stages::EOM,
///     actions: Actions::ADD_HEADER,
///     ..Spec::NONE
/// };
/// let n = negotiate(&OptNeg::POSTFIX_3, &spec).unwrap();
/// assert_eq!(n.version, 6);
/// assert_eq!(n.actions, Actions::ADD_HEADER);
/// // Every stage but rcpt (and eom, which cannot be skipped) is skipped.
/// assert!(n.skipped.contains(Stages::CONNECT | Stages::HELO | Stages::BODY));
/// assert!(!n.skipped.contains(Stages::RCPT));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Stages with a handler. The others are negotiated away where the MTA allows,
    /// and answered with continue where it does not.
    pub handled: Stages,
    /// Handled stages whose handler never replies (it can only continue): the
    /// no-reply bit is asked for where the MTA offers it.
    pub no_reply: Stages,
    /// Actions the milter needs; an MTA that does not offer all of them fails the
    /// connection.
    pub actions: Actions,
    /// Actions the milter uses when offered and does without otherwise.
    pub optional_actions: Actions,
    /// Capability options the milter needs ([`CAPABILITY_OPTIONS`]).
    pub options: ProtocolOpts,
    /// Capability options asked for only when offered.
    pub optional_options: ProtocolOpts,
    /// Macros wanted per stage, indexed by [`MacroStage::index`]: space-separated
    /// names. Sent only when the MTA offers symbol lists.
    pub macros: [Option<Cow<'static, str>>; 7],
}

impl Spec {
    /// Handles nothing, asks for nothing.
    pub const NONE: Spec = Spec {
        handled: Stages::empty(),
        no_reply: Stages::empty(),
        actions: Actions::empty(),
        optional_actions: Actions::empty(),
        options: ProtocolOpts::empty(),
        optional_options: ProtocolOpts::empty(),
        macros: [None, None, None, None, None, None, None],
    };

    /// Handles every stage and replies to every one, asks for no action: the
    /// spec a milter's `negotiate` handler can set to be sent every stage.
    pub const ALL_STAGES: Spec = Spec {
        handled: Stages::all(),
        ..Spec::NONE
    };

    /// Sets the macros wanted at a stage.
    pub fn with_macros(mut self, stage: MacroStage, names: impl Into<Cow<'static, str>>) -> Self {
        self.macros[stage.index() as usize] = Some(names.into());
        self
    }
}

impl Default for Spec {
    fn default() -> Self {
        Spec::ALL_STAGES
    }
}

/// The parameters agreed with the MTA, fixed for the whole connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// What the MTA offered (after libmilter's substitutions for 0 masks).
    pub offer: OptNeg,
    /// The version both sides speak.
    pub version: u32,
    /// Actions the milter may use.
    pub actions: Actions,
    /// Protocol options in the reply.
    pub protocol: ProtocolOpts,
    /// Stages with a handler.
    pub handled: Stages,
    /// Stages the MTA will not send (skip bit negotiated).
    pub skipped: Stages,
    /// Stages that get no reply on the wire (no-reply bit negotiated).
    pub no_reply: Stages,
    /// Stages declared no-reply whose bit the MTA did not offer: the session
    /// answers continue there, whatever the handler does.
    pub forced_continue: Stages,
    /// Symbol lists sent in the reply.
    pub symbol_lists: Vec<SymbolList>,
}

impl Negotiated {
    /// The `O` reply to send.
    pub fn reply(&self) -> OptNegReply {
        OptNegReply {
            version: self.version,
            actions: self.actions,
            protocol: self.protocol,
            symbol_lists: self.symbol_lists.clone(),
        }
    }

    /// Whether the MTA will send this stage's command at all (skipped stages are
    /// absent; data and unknown depend on the version too).
    pub fn mta_sends(&self, stage: Stage) -> bool {
        if self.skipped.has(stage) {
            return false;
        }
        match stage {
            Stage::Data => self.version >= 4,
            Stage::Unknown => self.version >= 3,
            _ => true,
        }
    }

    /// Whether the SKIP reply may be sent to body chunks.
    pub fn can_skip(&self) -> bool {
        self.protocol.contains(ProtocolOpts::SKIP)
    }
}

/// Computes the negotiation reply the way libmilter computes its own: version `min(offered, 6)` (offers below 2 fail); an offer of 0
/// actions reads as 0x0F and of 0 protocol bits as 0x3F; required actions and
/// capabilities must be offered; skip bits for unhandled stages and no-reply bits
/// for no-reply stages are set only where offered (NODATA/NOUNKNOWN an old MTA
/// does not offer are dropped silently); MDS and other internal bits are never
/// set; symbol lists only when the MTA offers them.
pub fn negotiate(offer: &OptNeg, spec: &Spec) -> Result<Negotiated, NegotiateError> {
    if offer.version < MIN_PROTOCOL_VERSION {
        return Err(NegotiateError::VersionTooOld(offer.version));
    }
    let version = offer.version.min(PROTOCOL_VERSION);
    let offered_actions = if offer.actions.is_empty() {
        Actions::V1
    } else {
        offer.actions
    };
    let offered_proto = if offer.protocol.is_empty() {
        ProtocolOpts::V1
    } else {
        offer.protocol
    };

    let missing = spec.actions.difference(offered_actions);
    if !missing.is_empty() {
        return Err(NegotiateError::ActionsNotOffered { missing });
    }
    let mut actions = spec.actions | (spec.optional_actions & offered_actions);

    let wanted_caps = spec.options & CAPABILITY_OPTIONS;
    let missing = wanted_caps.difference(offered_proto);
    if !missing.is_empty() {
        return Err(NegotiateError::OptionsNotOffered { missing });
    }
    let mut protocol = wanted_caps | (spec.optional_options & CAPABILITY_OPTIONS & offered_proto);

    let mut skipped = Stages::empty();
    let mut no_reply = Stages::empty();
    let mut forced_continue = Stages::empty();
    for stage in Stage::ALL {
        if !spec.handled.has(stage) {
            if let Some(bit) = stage.skip_flag() {
                if offered_proto.contains(bit) {
                    protocol |= bit;
                    skipped |= stage.set();
                }
            }
        } else if spec.no_reply.has(stage) {
            if let Some(bit) = stage.no_reply_flag() {
                if offered_proto.contains(bit) {
                    protocol |= bit;
                    no_reply |= stage.set();
                } else {
                    forced_continue |= stage.set();
                }
            }
        }
    }

    let mut symbol_lists = Vec::new();
    if offered_actions.contains(Actions::SET_SYMBOL_LIST) {
        for stage in MacroStage::ALL {
            if let Some(names) = &spec.macros[stage.index() as usize] {
                symbol_lists.push(SymbolList {
                    index: stage.index(),
                    macros: names.as_bytes().to_vec(),
                });
            }
        }
        if !symbol_lists.is_empty() {
            actions |= Actions::SET_SYMBOL_LIST;
        }
    }

    Ok(Negotiated {
        offer: OptNeg {
            version: offer.version,
            actions: offered_actions,
            protocol: offered_proto,
        },
        version,
        actions,
        protocol,
        handled: spec.handled | Stages::EOM,
        skipped,
        no_reply,
        forced_continue,
        symbol_lists,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(version: u32, actions: u32, protocol: u32) -> OptNeg {
        OptNeg {
            version,
            actions: Actions::from_bits_retain(actions),
            protocol: ProtocolOpts::from_bits_retain(protocol),
        }
    }

    fn all_actions() -> Spec {
        Spec {
            actions: Actions::from_bits_truncate(0xFF),
            ..Spec::ALL_STAGES
        }
    }

    #[test]
    fn matches_libmilter_observations() {
        // What libmilter replied to this offer for a milter with all callbacks,
        // actions 0xFF and no negotiate callback.
        let n = negotiate(&offer(6, 0x1FF, 0x1F_FFFF | 0x2000_0000), &all_actions()).unwrap();
        assert_eq!(
            (n.version, n.actions.bits(), n.protocol.bits()),
            (6, 0xFF, 0)
        );
        let n = negotiate(&offer(4, 0x1FF, 0x3FF), &all_actions()).unwrap();
        assert_eq!(
            (n.version, n.actions.bits(), n.protocol.bits()),
            (4, 0xFF, 0)
        );
        let n = negotiate(&offer(7, 0x1FF, 0x1F_FFFF), &all_actions()).unwrap();
        assert_eq!(n.version, 6);
        assert!(matches!(
            negotiate(&offer(2, 0x3F, 0x7F), &all_actions()),
            Err(NegotiateError::ActionsNotOffered { missing }) if missing.bits() == 0xC0
        ));
        // Actions 0 read as 0x0F, which lacks 0xF0.
        assert!(negotiate(&offer(6, 0, 0), &all_actions()).is_err());
        assert_eq!(
            negotiate(&offer(1, 0x1FF, 0x1F_FFFF), &all_actions()),
            Err(NegotiateError::VersionTooOld(1))
        );
    }

    #[test]
    fn skips_unhandled_stages_only_where_offered() {
        let spec = Spec {
            handled: Stages::EOM,
            ..Spec::NONE
        };
        let n = negotiate(&offer(6, 0x1FF, 0x1F_FFFF), &spec).unwrap();
        assert_eq!(n.protocol.bits(), 0x37F);
        // Postfix v2 offers 0x7F: no NODATA / NOUNKNOWN, and no error.
        let n = negotiate(&offer(2, 0x1FF, 0x7F), &spec).unwrap();
        assert_eq!(n.protocol.bits(), 0x7F);
        assert!(!n.mta_sends(Stage::Data));
        assert!(!n.mta_sends(Stage::Unknown));
    }

    #[test]
    fn no_reply_bits_are_faked_when_not_offered() {
        let spec = Spec {
            handled: Stages::all(),
            no_reply: Stages::HEADER | Stages::CONNECT,
            ..Spec::NONE
        };
        let n = negotiate(&offer(6, 0x1FF, 0x1F_FFFF), &spec).unwrap();
        assert_eq!(
            n.protocol,
            ProtocolOpts::NR_HEADER | ProtocolOpts::NR_CONNECT
        );
        assert_eq!(n.no_reply, Stages::HEADER | Stages::CONNECT);
        let n = negotiate(&offer(6, 0x1FF, 0x7F | 0x80), &spec).unwrap();
        assert_eq!(n.protocol, ProtocolOpts::NR_HEADER);
        assert_eq!(n.forced_continue, Stages::CONNECT);
    }

    #[test]
    fn symbol_lists_only_when_offered() {
        let spec = Spec::ALL_STAGES
            .with_macros(MacroStage::Connect, "{j} _")
            .with_macros(MacroStage::Eom, "{i}");
        let n = negotiate(&offer(6, 0x1FF, 0x1F_FFFF), &spec).unwrap();
        assert_eq!(n.actions, Actions::SET_SYMBOL_LIST);
        let mut wire = Vec::new();
        n.reply().encode(&mut wire);
        assert_eq!(&wire[17..], b"\0\0\0\0{j} _\0\0\0\0\x05{i}\0".as_slice());
        let n = negotiate(&offer(6, 0xFF, 0x1F_FFFF), &spec).unwrap();
        assert!(n.symbol_lists.is_empty());
        assert!(n.actions.is_empty());
    }

    #[test]
    fn optional_actions_and_options_degrade() {
        let spec = Spec {
            optional_actions: Actions::all(),
            optional_options: ProtocolOpts::SKIP | ProtocolOpts::HEADER_LEADING_SPACE,
            ..Spec::ALL_STAGES
        };
        let n = negotiate(&offer(2, 0x3F, 0x7F), &spec).unwrap();
        assert_eq!(n.actions.bits(), 0x3F);
        assert!(n.protocol.is_empty());
        let required = Spec {
            options: ProtocolOpts::HEADER_LEADING_SPACE,
            ..Spec::ALL_STAGES
        };
        assert!(matches!(
            negotiate(&offer(2, 0x3F, 0x7F), &required),
            Err(NegotiateError::OptionsNotOffered { .. })
        ));
    }

    #[test]
    fn never_sets_internal_bits() {
        let spec = Spec {
            optional_options: ProtocolOpts::all(),
            ..Spec::ALL_STAGES
        };
        let n = negotiate(&offer(6, 0x1FF, 0xFFFF_FFFF), &spec).unwrap();
        assert_eq!(n.protocol.bits() & ProtocolOpts::INTERNAL, 0);
    }
}
