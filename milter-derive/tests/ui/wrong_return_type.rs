use milter_blocking::{handlers, Context, EnvelopeAddr, Milter};

#[derive(Milter)]
struct Rcpts;

#[handlers]
impl Milter for Rcpts {
    fn rcpt(&mut self, _ctx: &mut Context<'_>, _rcpt: &EnvelopeAddr<'_>) -> bool {
        true
    }
}

fn main() {}
