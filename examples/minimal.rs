//! `minimal`: the smallest useful milter. It accepts every message and logs, once
//! per connection, what was negotiated with the MTA.
//!
//! It implements only the end-of-message stage, so `#[handlers]` asks the
//! MTA to skip every other stage: the MTA sends nothing but the message's end.
//!
//! Run: `cargo run -p milter-examples --bin minimal -- inet:7357@127.0.0.1`
//!
//! Postfix (`main.cf`): `smtpd_milters = inet:127.0.0.1:7357`
//! Sendmail (`.mc`): `INPUT_MAIL_FILTER(`minimal', `S=inet:7357@127.0.0.1, F=T')`

use milter_blocking::{handlers, EomContext, Milter, Status};

#[derive(Milter, Default)]
struct Minimal {
    logged: bool,
}

#[handlers]
impl Milter for Minimal {
    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> Status {
        if !self.logged {
            self.logged = true;
            if let Some(n) = ctx.negotiated() {
                log::info!(
                    "{}: negotiated version {}, actions {:?}, protocol {:?} (offer: version {}, actions 0x{:x}, protocol 0x{:x})",
                    ctx.connection(),
                    n.version,
                    n.actions,
                    n.protocol,
                    n.offer.version,
                    n.offer.actions.bits(),
                    n.offer.protocol.bits()
                );
            }
        }
        Status::Accept
    }
}

fn main() {
    milter_examples::run("minimal", "inet:7357@127.0.0.1", Minimal::default);
}
