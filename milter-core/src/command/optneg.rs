//! `O` — option negotiation, as the MTA sends it.

use crate::error::DecodeError;
use crate::flags::{Actions, ProtocolOpts};
use crate::frame::encode_frame;
use crate::limits::OPTNEG_LEN;
use crate::reader::Reader;

/// The MTA's negotiation offer: the version it speaks and the actions and
/// protocol options it can honour.
///
/// ```
/// use milter_core::OptNeg;
/// let postfix = OptNeg::POSTFIX_3;
/// let mut wire = Vec::new();
/// postfix.encode(&mut wire);
/// assert_eq!(wire, [0,0,0,13, b'O', 0,0,0,6, 0,0,1,0xff, 0,0x1f,0xff,0xff]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OptNeg {
    /// Protocol version (2–6 in practice).
    pub version: u32,
    /// Actions the MTA allows.
    pub actions: Actions,
    /// Protocol options the MTA can honour (unknown bits are kept).
    pub protocol: ProtocolOpts,
}

impl OptNeg {
    /// What Postfix 2.6+ offers with `milter_protocol = 6`, and Sendmail 8.14+.
    pub const POSTFIX_3: OptNeg = OptNeg {
        version: 6,
        actions: Actions::all(),
        protocol: ProtocolOpts::V6,
    };

    /// Decodes the payload of an `O` command. Bytes after the first 12 are ignored,
    /// as libmilter does.
    pub fn decode(payload: &[u8]) -> Result<OptNeg, DecodeError> {
        let mut r = Reader::new(b'O', payload);
        let version = r.u32("version")?;
        let actions = Actions::from_bits_retain(r.u32("actions")?);
        let protocol = ProtocolOpts::from_bits_retain(r.u32("protocol flags")?);
        debug_assert!(payload.len() >= OPTNEG_LEN);
        Ok(OptNeg {
            version,
            actions,
            protocol,
        })
    }

    /// Appends the `O` packet.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_frame(
            out,
            b'O',
            &[
                &self.version.to_be_bytes(),
                &self.actions.bits().to_be_bytes(),
                &self.protocol.bits().to_be_bytes(),
            ],
        );
    }
}
