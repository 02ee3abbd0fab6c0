//! The benchmark workload on milter-blocking, written as a user would with
//! `#[derive(Milter)]`: handle every stage and reply continue, count body bytes, add
//! `X-Bench: <body bytes>` at end of message.
//!
//! Usage: `bench-ours [--lean] [--no-busy-poll] SOCKET`. With `--lean` only the body and
//! end-of-message handlers exist (counting body bytes needs the body), so `#[handlers]`
//! asks the MTA to skip every other stage: what the macros buy a user. With
//! `--no-busy-poll` connections block in `read` at once instead of polling for the
//! next command for a moment: what busy polling buys at low concurrency.

use milter_blocking::{
    handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter,
    Server, Status,
};

#[derive(Milter, Default)]
#[milter(actions(add_header))]
struct Full {
    #[milter(per_message)]
    body: u64,
}

#[handlers]
impl Milter for Full {
    fn connect(&mut self, _: &mut Context<'_>, _: &[u8], _: ConnectAddr<'_>) -> Status {
        Status::Continue
    }
    fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status {
        Status::Continue
    }
    fn mail(&mut self, _: &mut Context<'_>, _: &EnvelopeAddr<'_>) -> Status {
        Status::Continue
    }
    fn rcpt(&mut self, _: &mut Context<'_>, _: &EnvelopeAddr<'_>) -> Status {
        Status::Continue
    }
    fn data(&mut self, _: &mut Context<'_>) -> Status {
        Status::Continue
    }
    fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status {
        Status::Continue
    }
    fn eoh(&mut self, _: &mut Context<'_>) -> Status {
        Status::Continue
    }
    fn body(&mut self, _: &mut Context<'_>, chunk: &[u8]) -> Status {
        self.body += chunk.len() as u64;
        Status::Continue
    }
    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        ctx.add_header("X-Bench", self.body.to_string())?;
        Ok(Status::Continue)
    }
    fn unknown(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status {
        Status::Continue
    }
}

#[derive(Milter, Default)]
#[milter(actions(add_header))]
struct Lean {
    #[milter(per_message)]
    body: u64,
}

#[handlers]
impl Milter for Lean {
    fn body(&mut self, _: &mut Context<'_>, chunk: &[u8]) -> Status {
        self.body += chunk.len() as u64;
        Status::Continue
    }
    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        ctx.add_header("X-Bench", self.body.to_string())?;
        Ok(Status::Continue)
    }
}

fn main() {
    let mut lean = false;
    let mut busy_poll = true;
    let mut spec = None;
    for a in std::env::args().skip(1) {
        if a == "--lean" {
            lean = true;
        } else if a == "--no-busy-poll" {
            busy_poll = false;
        } else {
            spec = Some(a);
        }
    }
    let Some(spec) = spec else {
        eprintln!("usage: bench-ours [--lean] [--no-busy-poll] SOCKET");
        std::process::exit(64);
    };
    let builder = match Server::builder().listen(&spec) {
        Ok(b) if busy_poll => b,
        Ok(b) => b.busy_poll(std::time::Duration::ZERO),
        Err(e) => {
            eprintln!("bench-ours: {e}");
            std::process::exit(1);
        }
    };
    let result = if lean {
        builder.build(Lean::default).and_then(Server::run)
    } else {
        builder.build(Full::default).and_then(Server::run)
    };
    if let Err(e) = result {
        eprintln!("bench-ours: {e}");
        std::process::exit(1);
    }
}
