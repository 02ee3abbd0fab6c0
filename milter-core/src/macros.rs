//! Macro storage with libmilter's scoping rules.
//!
//! Seven sets, one per [`MacroStage`]. A `D` packet for a stage replaces that
//! stage's set (also when it carries no pairs — a deliberate difference from
//! libmilter, so that a value from an earlier message never leaks into the next).
//! Commands clear the sets of later stages: `C` clears helo..eom, `H` clears
//! mail..eom, `M` clears rcpt..eom, `R` clears data, eoh and eom; `O`, `Q` and `K`
//! clear everything; `A` clears nothing. Macros Postfix sends with the codes `L`,
//! `B` and `U` are visible to that one command only and never overwrite a set.
//!
//! Lookup searches the per-command set, then eom, eoh, data, rcpt, mail, helo and
//! connect, and compares names with one pair of braces removed, so `i` finds
//! `{i}` and `{daemon_name}` finds `daemon_name`.

use crate::command::MacroPairs;
use crate::stage::MacroStage;

/// The order in which sets are searched (the per-command set comes first).
const LOOKUP_ORDER: [MacroStage; 7] = [
    MacroStage::Eom,
    MacroStage::Eoh,
    MacroStage::Data,
    MacroStage::Rcpt,
    MacroStage::Mail,
    MacroStage::Helo,
    MacroStage::Connect,
];

/// The macros in scope for a session.
///
/// ```
/// use milter_core::{MacroStore, MacroStage};
/// let mut m = MacroStore::new();
/// m.define(b'C', b"j\0mx.example.org\0{daemon_name}\0smtpd\0");
/// m.define(b'M', b"{i}\0ABC123\0");
/// assert_eq!(m.get("{j}"), Some(&b"mx.example.org"[..]));
/// assert_eq!(m.get("i"), Some(&b"ABC123"[..]));
/// m.command(b'M'); // a new message: rcpt and later sets are cleared, mail is kept
/// m.command(b'H'); // a new HELO clears the mail set
/// assert_eq!(m.get("i"), None);
/// ```
#[derive(Debug, Default, Clone)]
pub struct MacroStore {
    /// Raw `name NUL value NUL ...` bytes per stage, indexed by wire index.
    sets: [Vec<u8>; 7],
    /// Macros sent with `L`, `B` or `U` (or any other code), for one command.
    transient: Vec<u8>,
    /// Whether `transient` belongs to the next command.
    transient_pending: bool,
}

impl MacroStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores the pairs of a `D` packet sent for the command `code`. Never fails:
    /// any code is accepted.
    pub fn define(&mut self, code: u8, raw_pairs: &[u8]) {
        let set = match MacroStage::from_command_code(code) {
            Some(stage) => &mut self.sets[stage.index() as usize],
            None => {
                self.transient_pending = true;
                &mut self.transient
            }
        };
        set.clear();
        set.extend_from_slice(raw_pairs);
    }

    /// Applies the clearing rules for the arrival of command `code` (`C H M R O Q K`
    /// clear; others do not). Also ends the scope of per-command macros that were
    /// not sent for this command.
    pub fn command(&mut self, code: u8) {
        if self.transient_pending {
            self.transient_pending = false;
        } else {
            self.transient.clear();
        }
        let from = match code {
            b'C' => 1,
            b'H' => 2,
            b'M' => 3,
            b'R' => 4,
            b'O' | b'Q' | b'K' => {
                self.clear();
                return;
            }
            _ => return,
        };
        for index in from..7 {
            // Data (4), eom (5) and eoh (6) all belong to a message.
            self.sets[index].clear();
        }
    }

    /// Clears everything.
    pub fn clear(&mut self) {
        for s in &mut self.sets {
            s.clear();
        }
        self.transient.clear();
        self.transient_pending = false;
    }

    /// Looks a macro up by name (`i` and `{i}` are the same name).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let want = strip_braces(name.as_bytes());
        std::iter::once(&self.transient)
            .chain(LOOKUP_ORDER.iter().map(|s| &self.sets[s.index() as usize]))
            .find_map(|set| find(set, want))
    }

    /// The set of one stage, as name/value pairs in the order received.
    pub fn stage(&self, stage: MacroStage) -> MacroPairs<'_> {
        crate::command::MacroDef {
            stage: stage.command_code(),
            raw: &self.sets[stage.index() as usize],
        }
        .pairs()
    }

    /// Every macro in scope, with the names as received; a name defined at several
    /// stages is listed once, with the value [`MacroStore::get`] returns.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let sets = std::iter::once(&self.transient)
            .chain(LOOKUP_ORDER.iter().map(|s| &self.sets[s.index() as usize]));
        let mut seen: Vec<&[u8]> = Vec::new();
        sets.flat_map(|set| crate::command::MacroDef { stage: 0, raw: set }.pairs())
            .filter(move |(name, _)| {
                let key = strip_braces(name);
                if seen.contains(&key) {
                    false
                } else {
                    seen.push(key);
                    true
                }
            })
    }
}

/// Removes one pair of surrounding braces.
fn strip_braces(name: &[u8]) -> &[u8] {
    match name {
        [b'{', inner @ .., b'}'] => inner,
        other => other,
    }
}

fn find<'a>(set: &'a [u8], want: &[u8]) -> Option<&'a [u8]> {
    crate::command::MacroDef { stage: 0, raw: set }
        .pairs()
        .find(|(name, _)| strip_braces(name) == want)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clearing_rules_follow_libmilter() {
        let mut m = MacroStore::new();
        m.define(b'C', b"j\0mx\0");
        m.command(b'C');
        m.define(b'H', b"{tls_version}\0TLSv1.3\0");
        m.command(b'H');
        m.define(b'M', b"i\0Q1\0");
        m.command(b'M');
        m.define(b'R', b"{rcpt_addr}\0a@b\0");
        m.command(b'R');
        m.define(b'T', b"i\0Q1\0");
        m.command(b'T');
        m.define(b'E', b"{msg_id}\0<x@y>\0");
        m.command(b'E');
        assert_eq!(m.get("msg_id"), Some(&b"<x@y>"[..]));
        m.command(b'A');
        assert_eq!(
            m.get("rcpt_addr"),
            Some(&b"a@b"[..]),
            "abort clears nothing"
        );
        // Next message: M clears rcpt and later; the new D for M replaces mail.
        m.define(b'M', b"");
        m.command(b'M');
        assert_eq!(m.get("i"), None, "no leak of the earlier queue id");
        assert_eq!(m.get("rcpt_addr"), None);
        assert_eq!(m.get("msg_id"), None);
        assert_eq!(m.get("j"), Some(&b"mx"[..]));
        assert_eq!(m.get("tls_version"), Some(&b"TLSv1.3"[..]));
        m.command(b'Q');
        assert_eq!(m.get("j"), None);
    }

    #[test]
    fn later_stages_win() {
        let mut m = MacroStore::new();
        m.define(b'M', b"i\0from-mail\0");
        m.define(b'E', b"{i}\0from-eom\0");
        assert_eq!(m.get("{i}"), Some(&b"from-eom"[..]));
        let all: Vec<_> = m.iter().collect();
        assert_eq!(all, [(&b"{i}"[..], &b"from-eom"[..])]);
    }

    #[test]
    fn per_command_macros_last_one_command() {
        let mut m = MacroStore::new();
        m.define(b'L', b"i\0Q9\0");
        m.command(b'L');
        assert_eq!(m.get("i"), Some(&b"Q9"[..]));
        m.command(b'N');
        assert_eq!(m.get("i"), None);
    }

    #[test]
    fn odd_pairs_and_empty_sets_are_fine() {
        let mut m = MacroStore::new();
        m.define(b'C', b"j\0mx\0lonely\0");
        assert_eq!(m.get("lonely"), Some(&b""[..]));
        m.define(b'Z', b"");
        m.define(b'C', b"");
        assert_eq!(m.get("j"), None);
    }
}
