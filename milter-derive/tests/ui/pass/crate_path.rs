//! The runtime crate under another name, as with
//! `mb = { package = "milter-blocking", … }` in Cargo.toml.
extern crate milter_blocking as mb;

use mb::{EomContext, HandlerResult, Milter, Status};

#[derive(Milter, Default)]
#[milter(crate = mb, actions(add_header))]
struct Renamed;

#[mb::handlers(crate = mb)]
impl Milter for Renamed {
    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        ctx.add_header("X-Renamed", "yes")?;
        Ok(Status::Continue)
    }
}

/// The serde spelling: the path in a string.
#[derive(Milter, Default)]
#[milter(crate = "mb")]
struct Quoted;

#[mb::handlers(crate = "mb")]
impl Milter for Quoted {}

fn main() {
    assert_eq!(<Renamed as Milter>::SPEC.actions, mb::Actions::ADD_HEADER);
    assert_eq!(<Quoted as Milter>::SPEC.handled, mb::Stages::empty());
}
