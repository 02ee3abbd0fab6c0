//! The opt-out from the derive: `Declaration` and the action markers by hand.
use milter_blocking::{
    action, handlers, Actions, Declaration, EomContext, HandlerResult, Milter, ProtocolOpts,
    Stages, Status,
};

struct Manual {
    rcpts: usize,
}

impl Declaration for Manual {
    const ACTIONS: Actions = Actions::ADD_RCPT;
    const OPTIONAL_OPTIONS: ProtocolOpts = ProtocolOpts::SKIP;
    fn reset_message(&mut self) {
        self.rcpts = 0;
    }
}

impl action::AddRcpt for Manual {}

#[handlers]
impl Milter for Manual {
    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        ctx.add_rcpt("<archive@example.org>")?;
        Ok(Status::Continue)
    }
}

fn main() {
    let spec = <Manual as Milter>::SPEC;
    assert_eq!(spec.handled, Stages::EOM);
    assert_eq!(spec.actions, Actions::ADD_RCPT);
    assert_eq!(spec.optional_options, ProtocolOpts::SKIP);
    let mut m = Manual { rcpts: 3 };
    m.reset_message();
    assert_eq!(m.rcpts, 0);
}
