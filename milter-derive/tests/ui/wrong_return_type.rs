use milter_blocking::{Context, EnvelopeAddr, Milter};

#[derive(Milter)]
struct Rcpts;

impl Rcpts {
    fn rcpt(&mut self, _ctx: &mut Context<'_>, _rcpt: &EnvelopeAddr<'_>) -> bool {
        true
    }
}

fn main() {}
