//! libmilter's name for the MAIL stage.
use milter_blocking::{handlers, Context, EnvelopeAddr, Milter, Status};

#[derive(Milter)]
struct Senders;

#[handlers]
impl Milter for Senders {
    fn envfrom(&mut self, _ctx: &mut Context<'_>, _from: &EnvelopeAddr<'_>) -> Status {
        Status::Reject
    }
}

fn main() {}
