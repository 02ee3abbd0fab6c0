//! A misspelt, `pub` handler, written as in a library crate.
#![allow(dead_code)]

pub mod milter {
    use milter_blocking::{handlers, Context, Milter, Status};

    #[derive(Milter)]
    pub struct Greeter;

    #[handlers]
    impl Milter for Greeter {
        pub fn hello(&mut self, _ctx: &mut Context<'_>, _name: &[u8]) -> Status {
            Status::Reject
        }
    }
}

fn main() {}
