//! How many headers of each name the current message has, as the milter saw them,
//! so that the header helpers can compute index-correct change/delete sequences.

/// Most distinct header names tracked per message; a message with more (no real
/// mail has) stops being tracked, and the helpers fall back to what they do
/// without tracking. Bounds the memory a hostile message can make us hold.
const MAX_NAMES: usize = 1024;

/// Most bytes of distinct names tracked per message (same reason).
const MAX_NAME_BYTES: usize = 64 * 1024;

/// One distinct name.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// [`fold_hash`] of the name: most lookups are settled by comparing it.
    hash: u32,
    /// Where the lower-cased name starts in `names`, and its length.
    start: u32,
    len: u32,
    /// Occurrences.
    count: u32,
}

/// FNV-1a over the ASCII-lower-cased bytes.
fn fold_hash(name: &[u8]) -> u32 {
    name.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b.to_ascii_lowercase())).wrapping_mul(0x0100_0193)
    })
}

/// Per-message header name counts. Names are compared ignoring ASCII case (both
/// MTAs count occurrences that way). Buffers are reused across messages.
#[derive(Debug, Default)]
pub(crate) struct HeaderIndex {
    /// Lower-cased names, back to back.
    names: Vec<u8>,
    entries: Vec<Entry>,
    /// Whether headers of this message were seen (the header stage is handled).
    pub(crate) tracking: bool,
    /// This message had too many distinct names to track.
    overflow: bool,
}

impl HeaderIndex {
    pub(crate) fn clear(&mut self) {
        self.names.clear();
        self.entries.clear();
        self.overflow = false;
        if self.names.capacity() > MAX_NAME_BYTES {
            self.names.shrink_to(MAX_NAME_BYTES);
        }
    }

    pub(crate) fn record(&mut self, name: &[u8]) {
        let hash = fold_hash(name);
        if let Some(e) = self.find_mut(name, hash) {
            e.count += 1;
            return;
        }
        if self.overflow {
            return;
        }
        if self.entries.len() >= MAX_NAMES || self.names.len() + name.len() > MAX_NAME_BYTES {
            self.overflow = true;
            self.names.clear();
            self.entries.clear();
            return;
        }
        let start = self.names.len() as u32;
        self.names.extend(name.iter().map(u8::to_ascii_lowercase));
        self.entries.push(Entry {
            hash,
            start,
            len: name.len() as u32,
            count: 1,
        });
    }

    /// Occurrences of `name`; `None` when headers were not tracked.
    pub(crate) fn count(&self, name: &[u8]) -> Option<u32> {
        if !self.tracking || self.overflow {
            return None;
        }
        let hash = fold_hash(name);
        Some(
            self.entries
                .iter()
                .find(|e| self.matches(e, name, hash))
                .map_or(0, |e| e.count),
        )
    }

    /// Notes that one occurrence was deleted or added by the milter, so later
    /// helper calls in the same end of message see the new count.
    pub(crate) fn adjust(&mut self, name: &[u8], delta: i32) {
        if !self.tracking || self.overflow {
            return;
        }
        match self.find_mut(name, fold_hash(name)) {
            Some(e) => e.count = e.count.saturating_add_signed(delta),
            None if delta > 0 => {
                self.record(name);
            }
            None => {}
        }
    }

    fn matches(&self, e: &Entry, name: &[u8], hash: u32) -> bool {
        e.hash == hash
            && e.len as usize == name.len()
            && self.names[e.start as usize..(e.start + e.len) as usize].eq_ignore_ascii_case(name)
    }

    fn find_mut(&mut self, name: &[u8], hash: u32) -> Option<&mut Entry> {
        let at = self
            .entries
            .iter()
            .position(|e| self.matches(e, name, hash))?;
        self.entries.get_mut(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_case_insensitively_and_reuses_buffers() {
        let mut h = HeaderIndex {
            tracking: true,
            ..HeaderIndex::default()
        };
        h.record(b"Received");
        h.record(b"received");
        h.record(b"Subject");
        assert_eq!(h.count(b"RECEIVED"), Some(2));
        assert_eq!(h.count(b"x-none"), Some(0));
        h.adjust(b"subject", -1);
        assert_eq!(h.count(b"Subject"), Some(0));
        let cap = h.names.capacity();
        h.clear();
        assert_eq!(h.count(b"Subject"), Some(0));
        assert_eq!(h.names.capacity(), cap);
        h.tracking = false;
        assert_eq!(h.count(b"Subject"), None);
    }

    #[test]
    fn names_with_equal_lengths_and_hashes_of_other_case_stay_apart() {
        let mut h = HeaderIndex {
            tracking: true,
            ..HeaderIndex::default()
        };
        for i in 0..10 {
            for _ in 0..=i {
                h.record(format!("X-Header-{i}").as_bytes());
            }
        }
        for i in 0..10u32 {
            assert_eq!(h.count(format!("x-HEADER-{i}").as_bytes()), Some(i + 1));
        }
        assert_eq!(fold_hash(b"Subject"), fold_hash(b"sUBJECT"));
        assert_eq!(h.count(b"X-Header-10"), Some(0));
    }

    #[test]
    fn stops_tracking_past_its_bounds() {
        let mut h = HeaderIndex {
            tracking: true,
            ..HeaderIndex::default()
        };
        for i in 0..MAX_NAMES + 10 {
            h.record(format!("X-Name-{i}").as_bytes());
        }
        assert_eq!(h.count(b"X-Name-1"), None);
        assert!(h.entries.is_empty() && h.names.is_empty());
        h.clear();
        h.record(b"Subject");
        assert_eq!(h.count(b"subject"), Some(1));
    }
}
