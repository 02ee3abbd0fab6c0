use milter_blocking::{handlers, Context, Milter, Status};

#[derive(Milter)]
struct Rcpts;

#[handlers]
impl Milter for Rcpts {
    fn rcpt(&mut self, _ctx: &mut Context<'_>, _rcpt: &[u8]) -> Status {
        Status::Continue
    }
}

fn main() {}
