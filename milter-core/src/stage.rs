//! The stages of a milter conversation and what the protocol attaches to each.

use crate::flags::ProtocolOpts;
use bitflags::bitflags;

/// A stage that carries SMTP information and that a milter may handle.
///
/// ```
/// use milter_core::{Stage, ProtocolOpts};
/// assert_eq!(Stage::Helo.skip_flag(), Some(ProtocolOpts::NO_HELO));
/// assert_eq!(Stage::Eom.no_reply_flag(), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Connection information (`C`).
    Connect,
    /// HELO/EHLO (`H`).
    Helo,
    /// MAIL FROM (`M`).
    Mail,
    /// RCPT TO (`R`).
    Rcpt,
    /// DATA (`T`).
    Data,
    /// One header (`L`).
    Header,
    /// End of headers (`N`).
    Eoh,
    /// One body chunk (`B`).
    Body,
    /// End of message (`E`).
    Eom,
    /// An SMTP command the MTA does not know (`U`).
    Unknown,
}

impl Stage {
    /// Every stage, in protocol order (unknown last).
    pub const ALL: [Stage; 10] = [
        Stage::Connect,
        Stage::Helo,
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
        Stage::Header,
        Stage::Eoh,
        Stage::Body,
        Stage::Eom,
        Stage::Unknown,
    ];

    /// The command code the MTA sends for this stage.
    pub const fn code(self) -> u8 {
        match self {
            Stage::Connect => b'C',
            Stage::Helo => b'H',
            Stage::Mail => b'M',
            Stage::Rcpt => b'R',
            Stage::Data => b'T',
            Stage::Header => b'L',
            Stage::Eoh => b'N',
            Stage::Body => b'B',
            Stage::Eom => b'E',
            Stage::Unknown => b'U',
        }
    }

    /// Lower-case name, as used in logs and configuration (`"connect"`, `"eoh"`).
    pub const fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Helo => "helo",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::Header => "header",
            Stage::Eoh => "eoh",
            Stage::Body => "body",
            Stage::Eom => "eom",
            Stage::Unknown => "unknown",
        }
    }

    /// The protocol bit that asks the MTA not to send this stage (none for end of
    /// message, which cannot be skipped).
    pub const fn skip_flag(self) -> Option<ProtocolOpts> {
        Some(match self {
            Stage::Connect => ProtocolOpts::NO_CONNECT,
            Stage::Helo => ProtocolOpts::NO_HELO,
            Stage::Mail => ProtocolOpts::NO_MAIL,
            Stage::Rcpt => ProtocolOpts::NO_RCPT,
            Stage::Data => ProtocolOpts::NO_DATA,
            Stage::Header => ProtocolOpts::NO_HEADERS,
            Stage::Eoh => ProtocolOpts::NO_EOH,
            Stage::Body => ProtocolOpts::NO_BODY,
            Stage::Unknown => ProtocolOpts::NO_UNKNOWN,
            Stage::Eom => return None,
        })
    }

    /// The protocol bit that removes the reply to this stage (none for end of
    /// message, which always gets a reply).
    pub const fn no_reply_flag(self) -> Option<ProtocolOpts> {
        Some(match self {
            Stage::Connect => ProtocolOpts::NR_CONNECT,
            Stage::Helo => ProtocolOpts::NR_HELO,
            Stage::Mail => ProtocolOpts::NR_MAIL,
            Stage::Rcpt => ProtocolOpts::NR_RCPT,
            Stage::Data => ProtocolOpts::NR_DATA,
            Stage::Header => ProtocolOpts::NR_HEADER,
            Stage::Eoh => ProtocolOpts::NR_EOH,
            Stage::Body => ProtocolOpts::NR_BODY,
            Stage::Unknown => ProtocolOpts::NR_UNKNOWN,
            Stage::Eom => return None,
        })
    }

    /// The one-stage set holding this stage.
    pub const fn set(self) -> Stages {
        match self {
            Stage::Connect => Stages::CONNECT,
            Stage::Helo => Stages::HELO,
            Stage::Mail => Stages::MAIL,
            Stage::Rcpt => Stages::RCPT,
            Stage::Data => Stages::DATA,
            Stage::Header => Stages::HEADER,
            Stage::Eoh => Stages::EOH,
            Stage::Body => Stages::BODY,
            Stage::Eom => Stages::EOM,
            Stage::Unknown => Stages::UNKNOWN,
        }
    }

    /// Whether this stage belongs to a message (mail to end of message).
    pub const fn is_message_stage(self) -> bool {
        matches!(
            self,
            Stage::Mail
                | Stage::Rcpt
                | Stage::Data
                | Stage::Header
                | Stage::Eoh
                | Stage::Body
                | Stage::Eom
        )
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

bitflags! {
    /// A set of [`Stage`]s (which stages a milter handles, which get no reply, ...).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Stages: u16 {
        /// [`Stage::Connect`].
        const CONNECT = 1 << 0;
        /// [`Stage::Helo`].
        const HELO = 1 << 1;
        /// [`Stage::Mail`].
        const MAIL = 1 << 2;
        /// [`Stage::Rcpt`].
        const RCPT = 1 << 3;
        /// [`Stage::Data`].
        const DATA = 1 << 4;
        /// [`Stage::Header`].
        const HEADER = 1 << 5;
        /// [`Stage::Eoh`].
        const EOH = 1 << 6;
        /// [`Stage::Body`].
        const BODY = 1 << 7;
        /// [`Stage::Eom`].
        const EOM = 1 << 8;
        /// [`Stage::Unknown`].
        const UNKNOWN = 1 << 9;
    }
}

impl Stages {
    /// Whether `stage` is in the set.
    pub const fn has(self, stage: Stage) -> bool {
        self.contains(stage.set())
    }

    /// The stages in the set, in protocol order.
    pub fn stages(self) -> impl Iterator<Item = Stage> {
        Stage::ALL.into_iter().filter(move |s| self.has(*s))
    }
}

/// The stages an MTA's symbol list (and libmilter's macro storage) distinguishes,
/// with their wire index (`SMFIM_*`).
///
/// Note the order: end of message (5) comes before end of headers (6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum MacroStage {
    /// Macros sent before `C`.
    #[doc(alias = "SMFIM_CONNECT")]
    Connect = 0,
    /// Macros sent before `H`.
    #[doc(alias = "SMFIM_HELO")]
    Helo = 1,
    /// Macros sent before `M`.
    #[doc(alias = "SMFIM_ENVFROM")]
    Mail = 2,
    /// Macros sent before `R`.
    #[doc(alias = "SMFIM_ENVRCPT")]
    Rcpt = 3,
    /// Macros sent before `T`.
    #[doc(alias = "SMFIM_DATA")]
    Data = 4,
    /// Macros sent before `E` (and, by Postfix, before each `B`).
    #[doc(alias = "SMFIM_EOM")]
    Eom = 5,
    /// Macros sent before `N` (and, by Postfix, before each `L`).
    #[doc(alias = "SMFIM_EOH")]
    Eoh = 6,
}

impl MacroStage {
    /// Every macro stage in wire-index order.
    pub const ALL: [MacroStage; 7] = [
        MacroStage::Connect,
        MacroStage::Helo,
        MacroStage::Mail,
        MacroStage::Rcpt,
        MacroStage::Data,
        MacroStage::Eom,
        MacroStage::Eoh,
    ];

    /// The wire index of a symbol list for this stage.
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// The stage for a wire index, if it is one of the seven.
    pub const fn from_index(index: u32) -> Option<MacroStage> {
        Some(match index {
            0 => MacroStage::Connect,
            1 => MacroStage::Helo,
            2 => MacroStage::Mail,
            3 => MacroStage::Rcpt,
            4 => MacroStage::Data,
            5 => MacroStage::Eom,
            6 => MacroStage::Eoh,
            _ => return None,
        })
    }

    /// The stage whose command code a macro packet names (`C H M R T E N`).
    pub const fn from_command_code(code: u8) -> Option<MacroStage> {
        Some(match code {
            b'C' => MacroStage::Connect,
            b'H' => MacroStage::Helo,
            b'M' => MacroStage::Mail,
            b'R' => MacroStage::Rcpt,
            b'T' => MacroStage::Data,
            b'E' => MacroStage::Eom,
            b'N' => MacroStage::Eoh,
            _ => return None,
        })
    }

    /// The command code whose macros this stage holds.
    pub const fn command_code(self) -> u8 {
        match self {
            MacroStage::Connect => b'C',
            MacroStage::Helo => b'H',
            MacroStage::Mail => b'M',
            MacroStage::Rcpt => b'R',
            MacroStage::Data => b'T',
            MacroStage::Eom => b'E',
            MacroStage::Eoh => b'N',
        }
    }

    /// Lower-case name (`"connect"`, `"eom"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            MacroStage::Connect => "connect",
            MacroStage::Helo => "helo",
            MacroStage::Mail => "mail",
            MacroStage::Rcpt => "rcpt",
            MacroStage::Data => "data",
            MacroStage::Eom => "eom",
            MacroStage::Eoh => "eoh",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_stage_indexes_follow_smfim() {
        assert_eq!(MacroStage::Eom.index(), 5);
        assert_eq!(MacroStage::Eoh.index(), 6);
        for s in MacroStage::ALL {
            assert_eq!(MacroStage::from_index(s.index()), Some(s));
            assert_eq!(MacroStage::from_command_code(s.command_code()), Some(s));
        }
        assert_eq!(MacroStage::from_index(7), None);
        assert_eq!(MacroStage::from_command_code(b'L'), None);
    }

    #[test]
    fn every_skippable_stage_has_distinct_bits() {
        let mut seen = ProtocolOpts::empty();
        for s in Stage::ALL {
            if let Some(f) = s.skip_flag() {
                assert!(!seen.intersects(f));
                seen |= f;
            }
            if let Some(f) = s.no_reply_flag() {
                assert!(!seen.intersects(f));
                seen |= f;
            }
        }
        assert_eq!(seen.bits(), 0x000F_F3FF);
    }
}
