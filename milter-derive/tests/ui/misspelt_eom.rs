//! A trailing underscore, in a `pub` method of a library-style module.
#![allow(dead_code)]

pub mod milter {
    use milter_blocking::{handlers, EomContext, HandlerResult, Milter, Status};

    #[derive(Milter)]
    #[milter(actions(add_header))]
    pub struct Stamp;

    #[handlers]
    impl Milter for Stamp {
        pub fn eom_(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
            ctx.add_header("X-Stamp", "1")?;
            Ok(Status::Continue)
        }
    }
}

fn main() {}
