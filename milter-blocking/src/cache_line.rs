//! Keeping a shared, often-read value on cache lines of its own.

use std::ops::Deref;

/// A value aligned to, and padded out to, 128 bytes: two 64-byte cache lines,
/// since CPUs prefetch adjacent lines in pairs. Connections on other CPUs then
/// never write next to it, so reading it (once per round trip, for the flags
/// and counters every connection consults) stays a cache hit instead of
/// bouncing a line between CPUs.
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct CacheLine<T>(pub(crate) T);

impl<T> Deref for CacheLine<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn occupies_whole_lines() {
        assert_eq!(std::mem::align_of::<CacheLine<AtomicBool>>(), 128);
        assert_eq!(std::mem::size_of::<CacheLine<AtomicBool>>(), 128);
        let pair = [CacheLine(1u8), CacheLine(2u8)];
        let a = &pair[0] as *const _ as usize;
        let b = &pair[1] as *const _ as usize;
        assert_eq!(b - a, 128);
        assert_eq!(*pair[1], 2);
    }
}
