//! The two bit masks exchanged during option negotiation.

use bitflags::bitflags;

bitflags! {
    /// Modification actions (`SMFIF_*`): what the MTA allows the milter to change
    /// at end of message.
    ///
    /// ```
    /// use milter_core::Actions;
    /// let wanted = Actions::ADD_HEADER | Actions::CHANGE_HEADER;
    /// assert_eq!(wanted.bits(), 0x11);
    /// ```
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Actions: u32 {
        /// Add (`h`) and insert (`i`) headers.
        #[doc(alias = "SMFIF_ADDHDRS")]
        const ADD_HEADER = 0x001;
        /// Replace the body (`b`).
        #[doc(alias = "SMFIF_CHGBODY")]
        #[doc(alias = "SMFIF_MODBODY")]
        const CHANGE_BODY = 0x002;
        /// Add recipients (`+`).
        #[doc(alias = "SMFIF_ADDRCPT")]
        const ADD_RCPT = 0x004;
        /// Delete recipients (`-`).
        #[doc(alias = "SMFIF_DELRCPT")]
        const DELETE_RCPT = 0x008;
        /// Change or delete headers (`m`).
        #[doc(alias = "SMFIF_CHGHDRS")]
        const CHANGE_HEADER = 0x010;
        /// Quarantine the message (`q`).
        #[doc(alias = "SMFIF_QUARANTINE")]
        const QUARANTINE = 0x020;
        /// Change the envelope sender (`e`).
        #[doc(alias = "SMFIF_CHGFROM")]
        const CHANGE_FROM = 0x040;
        /// Add recipients with ESMTP arguments (`2`).
        #[doc(alias = "SMFIF_ADDRCPT_PAR")]
        const ADD_RCPT_WITH_ARGS = 0x080;
        /// Send symbol lists (the macros wanted per stage) in the negotiation reply.
        #[doc(alias = "SMFIF_SETSYMLIST")]
        const SET_SYMBOL_LIST = 0x100;
    }
}

impl Actions {
    /// The actions of protocol version 1 (`SMFI_V1_ACTS`); libmilter reads an offer
    /// of 0 as this.
    #[doc(alias = "SMFI_V1_ACTS")]
    pub const V1: Actions = Actions::from_bits_truncate(0x0F);
    /// The actions of protocol version 2 (`SMFI_V2_ACTS`).
    #[doc(alias = "SMFI_V2_ACTS")]
    pub const V2: Actions = Actions::from_bits_truncate(0x3F);
}

bitflags! {
    /// Protocol options (`SMFIP_*`): stages to skip, stages that get no reply, and
    /// capabilities.
    ///
    /// In an MTA's offer a bit means "I can do this"; in the milter's reply it means
    /// "do this".
    ///
    /// ```
    /// use milter_core::ProtocolOpts;
    /// let postfix_v6 = ProtocolOpts::from_bits_retain(0x1F_FFFF);
    /// assert!(postfix_v6.contains(ProtocolOpts::NR_HEADER | ProtocolOpts::SKIP));
    /// ```
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct ProtocolOpts: u32 {
        /// Do not send connect (`C`).
        #[doc(alias = "SMFIP_NOCONNECT")]
        const NO_CONNECT = 0x0000_0001;
        /// Do not send HELO (`H`).
        #[doc(alias = "SMFIP_NOHELO")]
        const NO_HELO = 0x0000_0002;
        /// Do not send MAIL (`M`).
        #[doc(alias = "SMFIP_NOMAIL")]
        const NO_MAIL = 0x0000_0004;
        /// Do not send RCPT (`R`).
        #[doc(alias = "SMFIP_NORCPT")]
        const NO_RCPT = 0x0000_0008;
        /// Do not send body chunks (`B`).
        #[doc(alias = "SMFIP_NOBODY")]
        const NO_BODY = 0x0000_0010;
        /// Do not send headers (`L`).
        #[doc(alias = "SMFIP_NOHDRS")]
        const NO_HEADERS = 0x0000_0020;
        /// Do not send end of headers (`N`).
        #[doc(alias = "SMFIP_NOEOH")]
        const NO_EOH = 0x0000_0040;
        /// The milter does not reply to headers.
        #[doc(alias = "SMFIP_NR_HDR")]
        #[doc(alias = "SMFIP_NOHREPL")]
        const NR_HEADER = 0x0000_0080;
        /// Do not send unknown SMTP commands (`U`).
        #[doc(alias = "SMFIP_NOUNKNOWN")]
        const NO_UNKNOWN = 0x0000_0100;
        /// Do not send DATA (`T`).
        #[doc(alias = "SMFIP_NODATA")]
        const NO_DATA = 0x0000_0200;
        /// The milter may answer a body chunk with skip (`s`).
        #[doc(alias = "SMFIP_SKIP")]
        const SKIP = 0x0000_0400;
        /// Also send recipients the MTA rejected itself.
        #[doc(alias = "SMFIP_RCPT_REJ")]
        const RCPT_REJ = 0x0000_0800;
        /// The milter does not reply to connect.
        #[doc(alias = "SMFIP_NR_CONN")]
        const NR_CONNECT = 0x0000_1000;
        /// The milter does not reply to HELO.
        #[doc(alias = "SMFIP_NR_HELO")]
        const NR_HELO = 0x0000_2000;
        /// The milter does not reply to MAIL.
        #[doc(alias = "SMFIP_NR_MAIL")]
        const NR_MAIL = 0x0000_4000;
        /// The milter does not reply to RCPT.
        #[doc(alias = "SMFIP_NR_RCPT")]
        const NR_RCPT = 0x0000_8000;
        /// The milter does not reply to DATA.
        #[doc(alias = "SMFIP_NR_DATA")]
        const NR_DATA = 0x0001_0000;
        /// The milter does not reply to unknown commands.
        #[doc(alias = "SMFIP_NR_UNKN")]
        const NR_UNKNOWN = 0x0002_0000;
        /// The milter does not reply to end of headers.
        #[doc(alias = "SMFIP_NR_EOH")]
        const NR_EOH = 0x0004_0000;
        /// The milter does not reply to body chunks.
        #[doc(alias = "SMFIP_NR_BODY")]
        const NR_BODY = 0x0008_0000;
        /// Header values keep their leading white space, both ways.
        #[doc(alias = "SMFIP_HDR_LEADSPC")]
        const HEADER_LEADING_SPACE = 0x0010_0000;
        /// Packet payloads up to 256 KiB − 1.
        #[doc(alias = "SMFIP_MDS_256K")]
        const MDS_256K = 0x1000_0000;
        /// Packet payloads up to 1 MiB − 1.
        #[doc(alias = "SMFIP_MDS_1M")]
        const MDS_1M = 0x2000_0000;
    }
}

impl ProtocolOpts {
    /// Protocol bits of version 1 (`SMFI_V1_PROT`); libmilter reads an offer of 0
    /// as this.
    #[doc(alias = "SMFI_V1_PROT")]
    pub const V1: ProtocolOpts = ProtocolOpts::from_bits_truncate(0x3F);
    /// Protocol bits of version 2 (`SMFI_V2_PROT`, also Postfix's version-2 offer).
    #[doc(alias = "SMFI_V2_PROT")]
    pub const V2: ProtocolOpts = ProtocolOpts::from_bits_truncate(0x7F);
    /// Every version-6 protocol bit (`SMFI_CURR_PROT`).
    #[doc(alias = "SMFI_CURR_PROT")]
    pub const V6: ProtocolOpts = ProtocolOpts::from_bits_truncate(0x1F_FFFF);
    /// Bits meant for MTA–library use only (`SMFI_INTERNAL`): never set unless
    /// offered.
    #[doc(alias = "SMFI_INTERNAL")]
    pub const INTERNAL: u32 = 0x7000_0000;
    /// Every no-reply (`NR_*`) bit.
    pub const ALL_NO_REPLY: ProtocolOpts = ProtocolOpts::from_bits_truncate(0x000F_F080);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_match_libmilter() {
        assert_eq!(Actions::all().bits(), 0x1FF);
        assert_eq!(ProtocolOpts::V6.bits(), 0x1F_FFFF);
        assert_eq!(ProtocolOpts::ALL_NO_REPLY.bits().count_ones(), 9);
        assert!(!ProtocolOpts::ALL_NO_REPLY.contains(ProtocolOpts::SKIP));
    }
}
