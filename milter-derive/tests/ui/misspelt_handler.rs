#![deny(dead_code)]

use milter_blocking::{Context, Header, Milter, Status};

#[derive(Milter)]
struct Headers;

impl Headers {
    fn hedaer(&mut self, _ctx: &mut Context<'_>, _header: &Header<'_>) -> Status {
        Status::Continue
    }
}

fn main() {
    let _ = Headers;
}
