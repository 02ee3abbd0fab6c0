//! A milter type deep in nested modules, its handlers in another module.
pub mod outer {
    pub mod inner {
        use milter_blocking::Milter;

        #[derive(Milter, Default)]
        #[milter(actions(delete_rcpt))]
        pub struct Deep;
    }
}

mod handlers_here {
    use milter_blocking::{handlers, EomContext, HandlerResult, Milter, Status};

    #[handlers]
    impl Milter for crate::outer::inner::Deep {
        fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
            ctx.delete_rcpt("<someone@example.org>")?;
            Ok(Status::Continue)
        }
    }
}

fn main() {
    use milter_blocking::{Actions, Milter, Stages};
    assert_eq!(<outer::inner::Deep as Milter>::SPEC.handled, Stages::EOM);
    assert_eq!(<outer::inner::Deep as Milter>::SPEC.actions, Actions::DELETE_RCPT);
}
