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
//! `{i}` and `{daemon_name}` finds `daemon_name`. A set of more than 512 bytes
//! or 16 pairs keeps an index of its names (sorted by hash), a smaller one is
//! scanned, so a lookup's cost is bounded whatever the volume of macros: no
//! scan over large values.
//!
//! # Bounds
//!
//! The sets of one session hold at most [`DEFAULT_MAX_MACRO_BYTES`](crate::limits::DEFAULT_MAX_MACRO_BYTES) bytes of
//! names and values together (see [`MacroStore::set_max_bytes`]) and at most
//! [`MAX_MACROS`](crate::limits::MAX_MACROS) pairs in indexed sets (16 bytes of index each, so at
//! most 64 KiB of index); a `D` packet that would go beyond is refused
//! ([`MacroLimitError`]), the set it names left as it was.
//! [`MacroStore::release_message`] empties the
//! message's sets (mail to eom) when a message ends, and frees those that grew
//! beyond 4 KiB, so between messages a session keeps only its connect and helo
//! macros (and a few KiB of capacity for the next message).

use crate::command::MacroPairs;
use crate::error::MacroLimitError;
use crate::limits::{DEFAULT_MAX_MACRO_BYTES, MAX_MACROS};
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

/// Wire indexes of the sets that belong to a message (mail, rcpt, data, eom,
/// eoh).
const MESSAGE_SETS: std::ops::Range<usize> = 2..7;

/// The macros in scope for a session.
///
/// ```
/// use milter_core::{MacroStore, MacroStage};
/// let mut m = MacroStore::new();
/// m.define(b'C', b"j\0mx.example.org\0{daemon_name}\0smtpd\0").unwrap();
/// m.define(b'M', b"{i}\0ABC123\0").unwrap();
/// assert_eq!(m.get("{j}"), Some(&b"mx.example.org"[..]));
/// assert_eq!(m.get("i"), Some(&b"ABC123"[..]));
/// m.command(b'M'); // a new message: rcpt and later sets are cleared, mail is kept
/// m.command(b'H'); // a new HELO clears the mail set
/// assert_eq!(m.get("i"), None);
/// ```
#[derive(Debug, Clone)]
pub struct MacroStore {
    /// One set per stage, indexed by wire index.
    sets: [MacroSet; 7],
    /// Macros sent with `L`, `B` or `U` (or any other code), for one command.
    transient: MacroSet,
    /// Whether `transient` belongs to the next command.
    transient_pending: bool,
    /// Most bytes of names and values over all sets.
    max_bytes: usize,
}

impl Default for MacroStore {
    fn default() -> Self {
        MacroStore {
            sets: Default::default(),
            transient: MacroSet::default(),
            transient_pending: false,
            max_bytes: DEFAULT_MAX_MACRO_BYTES,
        }
    }
}

/// A set this small is searched pair by pair (a bounded cost, cheaper than
/// building an index for the few macros real MTAs send per stage); a larger
/// one is indexed.
const SCAN_BYTES: usize = 512;
/// Capacity a set keeps when a message ends; a larger one is freed.
const KEEP_CAPACITY: usize = 4096;

/// One set: the raw `name NUL value NUL ...` bytes and, unless it is small, an
/// index of the names.
#[derive(Debug, Default, Clone)]
struct MacroSet {
    raw: Vec<u8>,
    /// Pairs in `raw` if it is indexed; 0 for a small set (not counted).
    pairs: usize,
    /// Empty for a small set; else one entry per pair, sorted by (hash of the
    /// name without braces, position), so the first of equal names is the
    /// first received.
    index: Vec<Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    hash: u32,
    name_start: u32,
    name_end: u32,
    value_end: u32,
}

impl MacroSet {
    /// Replaces the set with `raw`; `pairs` is its number of pairs when it
    /// is indexed (more than `SCAN_BYTES`), else 0.
    fn replace(&mut self, raw: &[u8], pairs: usize) {
        self.raw.clear();
        self.raw.extend_from_slice(raw);
        self.pairs = pairs;
        self.index.clear();
        if raw.len() <= SCAN_BYTES {
            return;
        }
        self.index.reserve_exact(pairs);
        let base = self.raw.as_ptr() as usize;
        let offset = |part: &[u8]| (part.as_ptr() as usize - base) as u32;
        for (name, value) in (crate::command::MacroDef {
            stage: 0,
            raw: &self.raw,
        })
        .pairs()
        {
            let name_start = offset(name);
            let name_end = name_start + name.len() as u32;
            let value_end = if value.is_empty() {
                name_end
            } else {
                offset(value) + value.len() as u32
            };
            self.index.push(Entry {
                hash: hash(strip_braces(name)),
                name_start,
                name_end,
                value_end,
            });
        }
        self.index.sort_unstable_by_key(|e| (e.hash, e.name_start));
    }

    fn get(&self, want: &[u8]) -> Option<&[u8]> {
        if self.index.is_empty() {
            // A small set (see `SCAN_BYTES`): a bounded scan.
            return self
                .pairs()
                .find(|(name, _)| strip_braces(name) == want)
                .map(|(_, value)| value);
        }
        let h = hash(want);
        let first = self.index.partition_point(|e| e.hash < h);
        self.index[first..]
            .iter()
            .take_while(|e| e.hash == h)
            .find(|e| strip_braces(&self.raw[e.name_start as usize..e.name_end as usize]) == want)
            .map(|e| {
                // The value follows the name's NUL (empty: the range is empty
                // or reversed).
                let start = e.name_end as usize + 1;
                self.raw.get(start..e.value_end as usize).unwrap_or(&[])
            })
    }

    fn pairs(&self) -> MacroPairs<'_> {
        crate::command::MacroDef {
            stage: 0,
            raw: &self.raw,
        }
        .pairs()
    }

    fn clear(&mut self) {
        self.raw.clear();
        self.pairs = 0;
        self.index.clear();
    }

    /// Clears, and frees the memory of a set that grew large (a small one
    /// keeps its capacity, so that ordinary messages allocate nothing).
    fn release(&mut self) {
        if self.raw.capacity() > KEEP_CAPACITY
            || self.index.capacity() * std::mem::size_of::<Entry>() > KEEP_CAPACITY
        {
            *self = MacroSet::default();
        } else {
            self.clear();
        }
    }
}

/// How many pairs [`MacroPairs`] yields for `raw`: one per NUL-terminated
/// string in an even position (a name; a name without its NUL is dropped).
fn count_pairs(raw: &[u8]) -> usize {
    raw.iter().filter(|&&b| b == 0).count().div_ceil(2)
}

/// FNV-1a, 32 bits: names are short and come from the MTA's configuration.
fn hash(name: &[u8]) -> u32 {
    name.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

impl MacroStore {
    /// An empty store, bounded by [`DEFAULT_MAX_MACRO_BYTES`](crate::limits::DEFAULT_MAX_MACRO_BYTES).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the most bytes of names and values the store holds over all its
    /// sets (default [`DEFAULT_MAX_MACRO_BYTES`](crate::limits::DEFAULT_MAX_MACRO_BYTES)).
    pub fn set_max_bytes(&mut self, bytes: usize) {
        self.max_bytes = bytes;
    }

    /// Stores the pairs of a `D` packet sent for the command `code` (any code
    /// is accepted), replacing that stage's set; refused, the set left as it
    /// was, if the store would exceed its bounds.
    pub fn define(&mut self, code: u8, raw_pairs: &[u8]) -> Result<(), MacroLimitError> {
        let stage = MacroStage::from_command_code(code);
        let replaced = match stage {
            Some(stage) => &self.sets[stage.index() as usize],
            None => &self.transient,
        };
        let bytes = self.bytes() - replaced.raw.len() + raw_pairs.len();
        // Only the pairs of an indexed set count (each costs an index entry).
        let pairs = if raw_pairs.len() > SCAN_BYTES {
            count_pairs(raw_pairs)
        } else {
            0
        };
        let macros = if bytes > self.max_bytes {
            0
        } else {
            self.macros() - replaced.pairs + pairs
        };
        if bytes > self.max_bytes || macros > MAX_MACROS {
            return Err(MacroLimitError {
                code,
                bytes,
                macros,
                max_bytes: self.max_bytes,
                max_macros: MAX_MACROS,
            });
        }
        let set = match stage {
            Some(stage) => &mut self.sets[stage.index() as usize],
            None => {
                self.transient_pending = true;
                &mut self.transient
            }
        };
        set.replace(raw_pairs, pairs);
        Ok(())
    }

    /// Bytes of names and values held.
    pub fn bytes(&self) -> usize {
        self.all_sets().map(|s| s.raw.len()).sum()
    }

    /// Macros (name/value pairs) held in indexed sets (those over 512 bytes;
    /// the pairs of smaller sets are not counted).
    pub fn macros(&self) -> usize {
        self.all_sets().map(|s| s.pairs).sum()
    }

    fn all_sets(&self) -> impl Iterator<Item = &MacroSet> {
        self.sets.iter().chain(std::iter::once(&self.transient))
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

    /// The message is over (its final reply was sent, or its abort handled):
    /// frees the sets of the message's stages (mail to eom) and the per-command
    /// set, so that a connection waiting between messages keeps only its
    /// connect and helo macros.
    pub fn release_message(&mut self) {
        for set in &mut self.sets[MESSAGE_SETS] {
            set.release();
        }
        self.transient.release();
        self.transient_pending = false;
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
            .find_map(|set| set.get(want))
    }

    /// The set of one stage, as name/value pairs in the order received.
    pub fn stage(&self, stage: MacroStage) -> MacroPairs<'_> {
        self.sets[stage.index() as usize].pairs()
    }

    /// Every macro in scope, with the names as received; a name defined at several
    /// stages is listed once, with the value [`MacroStore::get`] returns.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let sets = std::iter::once(&self.transient)
            .chain(LOOKUP_ORDER.iter().map(|s| &self.sets[s.index() as usize]));
        let mut seen: Vec<&[u8]> = Vec::new();
        sets.flat_map(MacroSet::pairs).filter(move |(name, _)| {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clearing_rules_follow_libmilter() {
        let mut m = MacroStore::new();
        m.define(b'C', b"j\0mx\0").unwrap();
        m.command(b'C');
        m.define(b'H', b"{tls_version}\0TLSv1.3\0").unwrap();
        m.command(b'H');
        m.define(b'M', b"i\0Q1\0").unwrap();
        m.command(b'M');
        m.define(b'R', b"{rcpt_addr}\0a@b\0").unwrap();
        m.command(b'R');
        m.define(b'T', b"i\0Q1\0").unwrap();
        m.command(b'T');
        m.define(b'E', b"{msg_id}\0<x@y>\0").unwrap();
        m.command(b'E');
        assert_eq!(m.get("msg_id"), Some(&b"<x@y>"[..]));
        m.command(b'A');
        assert_eq!(
            m.get("rcpt_addr"),
            Some(&b"a@b"[..]),
            "abort clears nothing"
        );
        // Next message: M clears rcpt and later; the new D for M replaces mail.
        m.define(b'M', b"").unwrap();
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
        m.define(b'M', b"i\0from-mail\0").unwrap();
        m.define(b'E', b"{i}\0from-eom\0").unwrap();
        assert_eq!(m.get("{i}"), Some(&b"from-eom"[..]));
        let all: Vec<_> = m.iter().collect();
        assert_eq!(all, [(&b"{i}"[..], &b"from-eom"[..])]);
    }

    #[test]
    fn per_command_macros_last_one_command() {
        let mut m = MacroStore::new();
        m.define(b'L', b"i\0Q9\0").unwrap();
        m.command(b'L');
        assert_eq!(m.get("i"), Some(&b"Q9"[..]));
        m.command(b'N');
        assert_eq!(m.get("i"), None);
    }

    #[test]
    fn odd_pairs_and_empty_sets_are_fine() {
        let mut m = MacroStore::new();
        m.define(b'C', b"j\0mx\0lonely\0").unwrap();
        assert_eq!(m.get("lonely"), Some(&b""[..]));
        m.define(b'Z', b"").unwrap();
        m.define(b'C', b"").unwrap();
        assert_eq!(m.get("j"), None);
    }

    #[test]
    fn the_index_finds_what_a_scan_finds() {
        let mut m = MacroStore::new();
        let mut raw = Vec::new();
        for i in 0..500 {
            raw.extend_from_slice(format!("{{m{i}}}\0v{i}\0").as_bytes());
        }
        // A duplicate name: the first one received wins, as in a scan.
        raw.extend_from_slice(b"m7\0second\0empty\0\0");
        m.define(b'C', &raw).unwrap();
        for i in 0..500 {
            let want = format!("v{i}");
            assert_eq!(m.get(&format!("m{i}")), Some(want.as_bytes()));
            assert_eq!(m.get(&format!("{{m{i}}}")), Some(want.as_bytes()));
        }
        assert_eq!(m.get("m7"), Some(&b"v7"[..]));
        assert_eq!(m.get("empty"), Some(&b""[..]));
        assert_eq!(m.get("m500"), None);
        assert_eq!(m.get(""), None);
        assert_eq!(m.macros(), 502);
    }

    #[test]
    fn bounds_refuse_a_packet_and_keep_the_set() {
        let mut m = MacroStore::new();
        m.set_max_bytes(100);
        m.define(b'C', b"j\0mx\0").unwrap();
        let big = [b"{big}\0".as_slice(), &[b'x'; 100], b"\0"].concat();
        let e = m.define(b'C', &big).unwrap_err();
        assert_eq!(e.bytes, big.len());
        assert_eq!(
            e.to_string(),
            format!(
                "macros for 'C' would bring the session's macros to {} bytes, above the limit of 100 bytes",
                big.len()
            )
        );
        assert_eq!(m.get("j"), Some(&b"mx"[..]), "the set was kept");
        // Replacing a set counts the new size, not the sum.
        m.define(b'C', &[b'y'; 90]).unwrap();
        m.define(b'C', &[b'z'; 95]).unwrap();
        // Too many pairs.
        let mut m = MacroStore::new();
        let many = b"a\0b\0".repeat(crate::limits::MAX_MACROS + 1);
        let e = m.define(b'M', &many).unwrap_err();
        assert_eq!(e.macros, crate::limits::MAX_MACROS + 1);
        assert!(e.to_string().contains("above the limit of 4096"), "{e}");
        m.define(b'M', &b"a\0b\0".repeat(crate::limits::MAX_MACROS))
            .unwrap();
    }

    #[test]
    fn a_message_end_frees_the_message_sets() {
        let mut m = MacroStore::new();
        m.define(b'C', b"j\0mx\0").unwrap();
        m.define(b'H', b"{tls_version}\0TLSv1.3\0").unwrap();
        let big = [b"{big}\0".as_slice(), &[b'x'; 40_000], b"\0"].concat();
        for code in [b'M', b'R', b'T', b'N', b'E', b'L'] {
            m.define(code, &big).unwrap();
        }
        m.release_message();
        assert_eq!(m.get("big"), None);
        assert_eq!(m.get("j"), Some(&b"mx"[..]));
        assert_eq!(m.get("tls_version"), Some(&b"TLSv1.3"[..]));
        let kept: usize = m
            .all_sets()
            .map(|s| s.raw.capacity() + s.index.capacity() * 16)
            .sum();
        assert!(kept < 1024, "{kept} bytes kept after the message");
    }

    #[test]
    fn pairs_are_counted_as_the_iterator_yields_them() {
        for raw in [
            &b""[..],
            b"a\0",
            b"a\0b\0",
            b"a\0b",
            b"a\0b\0c",
            b"a\0b\0c\0",
            b"\0\0\0\0",
            b"lonely",
        ] {
            let iterated = crate::command::MacroDef { stage: 0, raw }.pairs().count();
            assert_eq!(count_pairs(raw), iterated, "{raw:?}");
        }
    }
}
