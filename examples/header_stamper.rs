//! `header-stamper`: stamps every message with two headers,
//!
//! ```text
//! X-Stamped-By: header-stamper (client mail.example.net [192.0.2.1]; 2 recipients)
//! X-Connection-Message: 3
//! ```
//!
//! the first naming the SMTP client the MTA reported at connect and how many
//! recipients the message has, the second counting the messages stamped on this
//! SMTP connection (Postfix and Sendmail open one milter connection per SMTP
//! session, so it says "the third message this client sent in one go").
//!
//! What it shows: the two kinds of state a milter keeps. Plain fields live as long
//! as the connection (`client`, `stamped`); fields marked `#[milter(per_message)]`
//! are reset by the derive before every message (`rcpts`), so nothing leaks from
//! one message into the next, also when a message is aborted half-way. And the
//! negotiation `#[handlers]` works out: it sees only `connect`, `rcpt` (which
//! returns nothing, so the MTA need not wait for a reply) and `eom`, and asks the
//! MTA to skip HELO, MAIL, DATA, the headers and the body.
//!
//! Run: `cargo run -p milter-examples --bin header-stamper -- inet:7371@127.0.0.1`
//! (add `--shadow` to log what it would add without adding it).
//!
//! Postfix (`main.cf`): `smtpd_milters = inet:127.0.0.1:7371`
//! Sendmail (`.mc`): `INPUT_MAIL_FILTER(`header-stamper', `S=inet:7371@127.0.0.1, F=T')`

use milter_blocking::{
    handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Milter, Status,
};

#[derive(Milter, Default)]
#[milter(actions(add_header))]
struct HeaderStamper {
    /// Per connection: `host [address]` of the SMTP client, from connect.
    client: String,
    /// Per connection: how many messages were stamped so far.
    stamped: u64,
    /// Per message: reset to 0 before every message by the derive.
    #[milter(per_message)]
    rcpts: u32,
}

#[handlers]
impl Milter for HeaderStamper {
    fn connect(&mut self, _ctx: &mut Context<'_>, host: &[u8], addr: ConnectAddr<'_>) -> Status {
        let host = String::from_utf8_lossy(host);
        let addr = match addr {
            ConnectAddr::Inet(a) => a.ip().to_string(),
            ConnectAddr::Inet6(a) => format!("IPv6:{}", a.ip()),
            other => other.to_string(),
        };
        // An MTA reports a client whose name did not verify as "[address]".
        let bare = |s: &str| {
            s.trim_matches(['[', ']'])
                .trim_start_matches("IPv6:")
                .to_string()
        };
        self.client = if bare(&host) == bare(&addr) {
            format!("[{addr}]")
        } else {
            format!("{host} [{addr}]")
        };
        Status::Continue
    }

    /// Returns nothing: `#[handlers]` asks the MTA not to wait for a reply.
    fn rcpt(&mut self, _ctx: &mut Context<'_>, _rcpt: &EnvelopeAddr<'_>) {
        self.rcpts += 1;
    }

    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        self.stamped += 1;
        let plural = if self.rcpts == 1 { "" } else { "s" };
        ctx.add_header(
            "X-Stamped-By",
            format!(
                "header-stamper (client {}; {} recipient{plural})",
                self.client, self.rcpts
            ),
        )?;
        ctx.add_header("X-Connection-Message", self.stamped.to_string())?;
        log::info!(
            "{}: queue id {}: stamped message {} from {}",
            ctx.connection(),
            ctx.queue_id().unwrap_or("unknown"),
            self.stamped,
            self.client
        );
        Ok(Status::Continue)
    }

    /// The session is over. The MTA may start another session on the same
    /// connection (after a quit-new-connection), so the per-connection state
    /// starts again too.
    fn close(&mut self, _ctx: &mut Context<'_>) {
        self.client.clear();
        self.stamped = 0;
    }
}

fn main() {
    milter_examples::run(
        "header-stamper",
        "inet:7371@127.0.0.1",
        HeaderStamper::default,
    );
}
