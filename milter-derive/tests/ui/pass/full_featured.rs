//! Every feature at once, in a module that imports everything (the `Milter`
//! trait included), with every return type.

use milter_blocking::*;

#[derive(Milter, Default)]
#[milter(actions(add_header, change_header), optional_actions(quarantine, change_from))]
#[milter(options(header_leading_space), optional_options(skip, rcpt_rej))]
#[milter(macros(connect = "{j} {daemon_name}", mail = "{i} {auth_authen}", eom = "{i} {msg_id}"))]
struct Full {
    connections: u32,
    #[milter(per_message)]
    rcpts: Vec<String>,
    #[milter(per_message)]
    spam: bool,
}

#[handlers]
impl Milter for Full {
    fn negotiate(&mut self, _offer: &OptNeg, _spec: &mut Spec) -> HandlerResult<()> {
        Ok(())
    }
    fn connect(&mut self, _ctx: &mut Context<'_>, _host: &[u8], _addr: ConnectAddr<'_>) {
        self.connections += 1;
    }
    fn helo(&mut self, _ctx: &mut Context<'_>, _name: &[u8]) -> Status {
        Status::Continue
    }
    fn mail(&mut self, ctx: &mut Context<'_>, _from: &EnvelopeAddr<'_>) -> Result<Status, std::io::Error> {
        let _ = ctx.queue_id();
        Ok(Status::Continue)
    }
    fn rcpt(&mut self, _ctx: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> HandlerResult {
        self.rcpts.push(rcpt.to_str_lossy().into_owned());
        Ok(Status::Continue)
    }
    fn header(&mut self, _ctx: &mut Context<'_>, header: &Header<'_>) -> Result<(), HandlerError> {
        self.spam |= header.is("X-Spam");
        Ok(())
    }
    fn body(&mut self, _ctx: &mut Context<'_>, _chunk: &[u8]) -> Status {
        Status::Skip
    }
    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        ctx.add_header("X-Rcpts", self.rcpts.len().to_string())?;
        ctx.set_header("X-Spam", if self.spam { "yes" } else { "no" })?;
        if self.spam && ctx.actions().contains(Actions::QUARANTINE) {
            ctx.quarantine("spam")?;
        }
        Ok(Status::Accept)
    }
    fn abort(&mut self, _ctx: &mut Context<'_>) {}
    fn close(&mut self, _ctx: &mut Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

const SPEC: &Spec = &<Full as Milter>::SPEC;

fn main() {
    assert_eq!(SPEC.handled.bits(), 0b01_1010_1111);
    assert_eq!(SPEC.no_reply, Stages::CONNECT | Stages::HEADER);
    assert_eq!(SPEC.actions, Actions::ADD_HEADER | Actions::CHANGE_HEADER);
    assert_eq!(SPEC.optional_actions, Actions::QUARANTINE | Actions::CHANGE_FROM);
    let mut full = Full::default();
    full.rcpts.push("a".into());
    Declaration::reset_message(&mut full);
    assert!(full.rcpts.is_empty());
}
