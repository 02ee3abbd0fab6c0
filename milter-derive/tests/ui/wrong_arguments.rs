use milter_blocking::{EnvelopeAddr, Milter, Status};

#[derive(Milter)]
struct Rcpts;

impl Rcpts {
    fn rcpt(&mut self, _rcpt: &EnvelopeAddr<'_>) -> Status {
        Status::Continue
    }
}

fn main() {}
