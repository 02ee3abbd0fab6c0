use milter_blocking::{handlers, EnvelopeAddr, Milter, Status};

#[derive(Milter)]
struct Rcpts;

#[handlers]
impl Milter for Rcpts {
    fn rcpt(&mut self, _rcpt: &EnvelopeAddr<'_>) -> Status {
        Status::Continue
    }
}

fn main() {}
