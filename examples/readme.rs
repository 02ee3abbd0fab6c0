use milter_blocking::{
    handlers, Context, EnvelopeAddr, EomContext, HandlerResult, Milter, Server, Status,
};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Milter, Default)]
#[milter(actions(add_header))]
struct Stamp {
    #[milter(per_message)]
    rcpts: usize,
}

#[handlers]
impl Milter for Stamp {
    fn rcpt(&mut self, _ctx: &mut Context<'_>, _rcpt: &EnvelopeAddr<'_>) -> Status {
        self.rcpts += 1;
        Status::Continue
    }

    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        ctx.add_header("X-Rcpts", self.rcpts.to_string())?;
        Ok(Status::Continue)
    }
}

fn main() -> ExitCode {
    // The library logs through `log`; RUST_LOG=debug shows more.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stamp: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    Server::builder()
        .listen("inet:7357@127.0.0.1")?
        // SIGTERM (the service manager's stop) and SIGINT (Ctrl-C): stop accepting
        // connections and give the messages in flight 10 seconds to finish; a
        // second signal stops at once. Cargo feature `signals`.
        .stop_on_signals(Duration::from_secs(10))
        .build(Stamp::default)?
        .run()?;
    Ok(())
}
