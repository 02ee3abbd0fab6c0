use milter_blocking::{Context, EnvelopeAddr, Milter, Status};

#[derive(Milter)]
struct Unmarked;

impl Milter for Unmarked {
    fn rcpt(&mut self, _ctx: &mut Context<'_>, _rcpt: &EnvelopeAddr<'_>) -> Status {
        Status::Reject
    }
}

fn main() {}
