//! How many headers of each name the current message has, as the milter saw them,
//! so that the header helpers can compute index-correct change/delete sequences.
//!
//! Recording a header costs one copy of its name: the names are only compared
//! when a helper asks for a count, at end of message, which is rare next to the
//! headers every message brings.

/// Most bytes of header names tracked per message; a message with more (about
/// 4,000 headers; no real mail has) stops being tracked, and the helpers fall
/// back to what they do without tracking. Bounds the memory a hostile message
/// can make us hold.
const MAX_NAME_BYTES: usize = 64 * 1024;

/// Most adjustments (headers the milter itself added or deleted) tracked per
/// message, for the same reason.
const MAX_ADJUSTMENTS: usize = 1024;

/// Names back to back in one buffer, in the order they came; buffers are
/// reused after `clear`.
#[derive(Debug, Default)]
struct NameList {
    bytes: Vec<u8>,
    /// Where each name ends in `bytes`.
    ends: Vec<u32>,
}

impl NameList {
    fn push(&mut self, name: &[u8]) {
        self.bytes.extend_from_slice(name);
        self.ends.push(self.bytes.len() as u32);
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let name = &self.bytes[start..end as usize];
            start = end as usize;
            name
        })
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn bytes(&self) -> usize {
        self.bytes.len()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

/// Per-message header names. Names are compared ignoring ASCII case (both MTAs
/// count occurrences that way). Buffers are reused across messages.
#[derive(Debug, Default)]
pub(crate) struct HeaderIndex {
    /// The names of the headers the MTA sent, as sent.
    names: NameList,
    /// The names of the headers the milter's own calls added or deleted, and
    /// for each, in the same order, what was done (+1 added, -1 deleted).
    adjusted: NameList,
    deltas: Vec<i32>,
    /// Whether headers of this message were seen (the header stage is handled).
    pub(crate) tracking: bool,
    /// This message had too many headers to track.
    overflow: bool,
}

impl HeaderIndex {
    pub(crate) fn clear(&mut self) {
        self.names.clear();
        self.adjusted.clear();
        self.deltas.clear();
        self.overflow = false;
    }

    /// Notes one header the MTA sent.
    pub(crate) fn record(&mut self, name: &[u8]) {
        if self.overflow {
            return;
        }
        if self.names.bytes() + name.len() > MAX_NAME_BYTES {
            self.overflow();
            return;
        }
        self.names.push(name);
    }

    fn overflow(&mut self) {
        self.overflow = true;
        self.names = NameList::default();
        self.adjusted = NameList::default();
        self.deltas = Vec::new();
    }

    /// Occurrences of `name`; `None` when headers were not tracked.
    pub(crate) fn count(&self, name: &[u8]) -> Option<u32> {
        if !self.tracking || self.overflow {
            return None;
        }
        let seen = self
            .names
            .iter()
            .filter(|n| n.eq_ignore_ascii_case(name))
            .count() as u32;
        Some(
            self.adjusted
                .iter()
                .zip(&self.deltas)
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .fold(seen, |c, (_, &d)| c.saturating_add_signed(d)),
        )
    }

    /// Notes that one occurrence was deleted or added by the milter, so later
    /// helper calls in the same end of message see the new count.
    pub(crate) fn adjust(&mut self, name: &[u8], delta: i32) {
        if !self.tracking || self.overflow {
            return;
        }
        if self.adjusted.len() >= MAX_ADJUSTMENTS
            || self.adjusted.bytes() + name.len() > MAX_NAME_BYTES
        {
            self.overflow();
            return;
        }
        self.adjusted.push(name);
        self.deltas.push(delta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracking() -> HeaderIndex {
        HeaderIndex {
            tracking: true,
            ..HeaderIndex::default()
        }
    }

    #[test]
    fn counts_case_insensitively_and_reuses_buffers() {
        let mut h = tracking();
        h.record(b"Received");
        h.record(b"received");
        h.record(b"Subject");
        assert_eq!(h.count(b"RECEIVED"), Some(2));
        assert_eq!(h.count(b"x-none"), Some(0));
        h.adjust(b"subject", -1);
        assert_eq!(h.count(b"Subject"), Some(0));
        let cap = h.names.bytes.capacity();
        h.clear();
        assert_eq!(h.count(b"Subject"), Some(0));
        assert_eq!(h.names.bytes.capacity(), cap);
        h.tracking = false;
        assert_eq!(h.count(b"Subject"), None);
    }

    #[test]
    fn names_of_equal_length_stay_apart() {
        let mut h = tracking();
        for i in 0..10 {
            for _ in 0..=i {
                h.record(format!("X-Header-{i}").as_bytes());
            }
        }
        for i in 0..10u32 {
            assert_eq!(h.count(format!("x-HEADER-{i}").as_bytes()), Some(i + 1));
        }
        assert_eq!(h.count(b"X-Header-10"), Some(0));
        assert_eq!(h.count(b"X-Header-"), Some(0));
    }

    #[test]
    fn adjustments_apply_in_order_and_never_go_below_zero() {
        let mut h = tracking();
        h.record(b"X-A");
        h.adjust(b"x-a", -1);
        h.adjust(b"X-A", -1);
        assert_eq!(h.count(b"X-A"), Some(0));
        h.adjust(b"X-A", 1);
        assert_eq!(h.count(b"x-a"), Some(1));
        h.adjust(b"X-New", 1);
        assert_eq!(h.count(b"x-new"), Some(1));
    }

    #[test]
    fn stops_tracking_past_its_bounds() {
        let mut h = tracking();
        let mut i = 0;
        while h.count(b"X-Name-1").is_some() {
            h.record(format!("X-Name-{i}").as_bytes());
            i += 1;
        }
        assert!(i > 4000, "stopped after {i} headers");
        assert!(h.names.bytes.capacity() == 0 && h.names.ends.capacity() == 0);
        h.record(b"Subject");
        assert_eq!(h.count(b"subject"), None);
        h.clear();
        h.record(b"Subject");
        assert_eq!(h.count(b"subject"), Some(1));

        let mut h = tracking();
        for _ in 0..=MAX_ADJUSTMENTS {
            h.adjust(b"X-Added", 1);
        }
        assert_eq!(h.count(b"X-Added"), None);
    }
}
