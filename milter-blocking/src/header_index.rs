//! How many headers of each name the current message has, as the milter saw them,
//! so that the header helpers can compute index-correct change/delete sequences.

/// Most distinct header names tracked per message; a message with more (no real
/// mail has) stops being tracked, and the helpers fall back to what they do
/// without tracking. Bounds the memory a hostile message can make us hold.
const MAX_NAMES: usize = 1024;

/// Most bytes of distinct names tracked per message (same reason).
const MAX_NAME_BYTES: usize = 64 * 1024;

/// Per-message header name counts. Names are compared ignoring ASCII case (both
/// MTAs count occurrences that way). Buffers are reused across messages.
#[derive(Debug, Default)]
pub(crate) struct HeaderIndex {
    /// Lower-cased names, back to back.
    names: Vec<u8>,
    /// (start in `names`, length, occurrences).
    entries: Vec<(u32, u32, u32)>,
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
        if let Some(e) = self.find_mut(name) {
            e.2 += 1;
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
        self.entries.push((start, name.len() as u32, 1));
    }

    /// Occurrences of `name`; `None` when headers were not tracked.
    pub(crate) fn count(&self, name: &[u8]) -> Option<u32> {
        if !self.tracking || self.overflow {
            return None;
        }
        Some(
            self.entries
                .iter()
                .find(|(s, l, _)| {
                    self.names[*s as usize..(*s + *l) as usize].eq_ignore_ascii_case(name)
                })
                .map_or(0, |e| e.2),
        )
    }

    /// Notes that one occurrence was deleted or added by the milter, so later
    /// helper calls in the same end of message see the new count.
    pub(crate) fn adjust(&mut self, name: &[u8], delta: i32) {
        if !self.tracking || self.overflow {
            return;
        }
        match self.find_mut(name) {
            Some(e) => e.2 = e.2.saturating_add_signed(delta),
            None if delta > 0 => {
                self.record(name);
            }
            None => {}
        }
    }

    fn find_mut(&mut self, name: &[u8]) -> Option<&mut (u32, u32, u32)> {
        let names = &self.names;
        self.entries
            .iter_mut()
            .find(|(s, l, _)| names[*s as usize..(*s + *l) as usize].eq_ignore_ascii_case(name))
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
