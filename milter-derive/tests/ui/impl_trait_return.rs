use milter_blocking::{handlers, Context, EnvelopeAddr, Milter, StageReturn, Status};

#[derive(Milter)]
struct Rcpts;

#[handlers]
impl Milter for Rcpts {
    fn rcpt(&mut self, _ctx: &mut Context<'_>, _rcpt: &EnvelopeAddr<'_>) -> impl StageReturn {
        Status::Continue
    }
}

fn main() {}
