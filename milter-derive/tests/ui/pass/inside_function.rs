//! A milter type declared inside a function body.
use milter_blocking::{handlers, EomContext, HandlerResult, Milter, Stages, Status};

fn main() {
    #[derive(Milter, Default)]
    #[milter(actions(add_header))]
    struct Local {
        #[milter(per_message)]
        seen: usize,
    }

    #[handlers]
    impl Milter for Local {
        fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
            self.seen += 1;
            ctx.add_header("X-Local", "yes")?;
            Ok(Status::Continue)
        }
    }

    assert_eq!(<Local as Milter>::SPEC.handled, Stages::EOM);
}
