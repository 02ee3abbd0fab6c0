//! A glob import of the crate next to `core::` paths.
use milter_blocking::*;

#[derive(Milter, Default)]
struct Counter {
    #[milter(per_message)]
    rcpts: usize,
}

#[handlers]
impl Milter for Counter {
    fn rcpt(&mut self, _ctx: &mut Context<'_>, _rcpt: &EnvelopeAddr<'_>) {
        self.rcpts = core::cmp::max(self.rcpts, 1) + 1;
    }
}

impl core::fmt::Display for Counter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.rcpts)
    }
}

fn main() {
    let version: u32 = milter_core::limits::PROTOCOL_VERSION;
    assert!(version >= 6);
    assert_eq!(Counter::default().to_string(), "0");
}
