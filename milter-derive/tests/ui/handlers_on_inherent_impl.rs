use milter_blocking::{handlers, Context, EnvelopeAddr, Milter, Status};

#[derive(Milter)]
struct Inherent;

#[handlers]
impl Inherent {
    fn rcpt(&mut self, _ctx: &mut Context<'_>, _rcpt: &EnvelopeAddr<'_>) -> Status {
        Status::Reject
    }
}

fn main() {}
