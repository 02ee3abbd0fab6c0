//! Inherent helper methods named like stages are helpers, not handlers.
use milter_blocking::{handlers, Context, EnvelopeAddr, Milter, Stages, Status};

#[derive(Milter, Default)]
struct WithHelpers {
    connected: bool,
    body: Vec<u8>,
}

impl WithHelpers {
    /// Opens a database, say.
    fn connect(&mut self) {
        self.connected = true;
    }

    /// A getter.
    fn body(&self) -> &[u8] {
        &self.body
    }
}

#[handlers]
impl Milter for WithHelpers {
    fn rcpt(&mut self, _ctx: &mut Context<'_>, _rcpt: &EnvelopeAddr<'_>) -> Status {
        self.connect();
        Status::Continue
    }
}

fn main() {
    assert_eq!(<WithHelpers as Milter>::SPEC.handled, Stages::RCPT);
    let mut m = WithHelpers::default();
    m.connect();
    assert!(m.connected && m.body().is_empty());
}
