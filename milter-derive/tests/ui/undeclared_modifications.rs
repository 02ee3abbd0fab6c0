//! Every modification call without its action declared: one error at each call.
use milter_blocking::{handlers, EomContext, HandlerResult, Milter, Status};

#[derive(Milter)]
#[milter(actions(quarantine))]
struct Careless;

#[handlers]
impl Milter for Careless {
    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        ctx.quarantine("declared, so this one compiles")?;
        ctx.add_header("X-A", "1")?;
        ctx.insert_header(0, "X-B", "2")?;
        ctx.prepend_header("X-C", "3")?;
        ctx.change_header("Subject", 1, "s")?;
        ctx.delete_header("X-D", 1)?;
        ctx.set_header("X-E", "5")?;
        ctx.delete_all_headers("X-F")?;
        ctx.replace_body("body")?;
        ctx.add_rcpt("<a@example.org>")?;
        ctx.add_rcpt_with_args("<b@example.org>", "NOTIFY=NEVER")?;
        ctx.delete_rcpt("<c@example.org>")?;
        ctx.change_from("<d@example.org>", None)?;
        Ok(Status::Continue)
    }
}

fn main() {}
