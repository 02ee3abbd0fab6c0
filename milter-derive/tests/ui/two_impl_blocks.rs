//! Handlers split over two `impl Milter` blocks in two modules.
use milter_blocking::{handlers, Context, EnvelopeAddr, Milter, Status};

#[derive(Milter)]
pub struct Split;

mod senders {
    use milter_blocking::{handlers, Context, EnvelopeAddr, Milter, Status};

    #[handlers]
    impl Milter for super::Split {
        fn mail(&mut self, _ctx: &mut Context<'_>, _from: &EnvelopeAddr<'_>) -> Status {
            Status::Continue
        }
    }
}

#[handlers]
impl Milter for Split {
    fn rcpt(&mut self, _ctx: &mut Context<'_>, _rcpt: &EnvelopeAddr<'_>) -> Status {
        Status::Reject
    }
}

fn main() {}
