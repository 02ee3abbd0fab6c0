//! A misspelt handler in a binary, with dead-code warnings silenced.
#![allow(dead_code)]

use milter_blocking::{handlers, Context, EnvelopeAddr, HandlerResult, Milter, Status};

#[derive(Milter)]
struct NoSpam;

#[handlers]
impl Milter for NoSpam {
    fn recpt(&mut self, _ctx: &mut Context<'_>, _rcpt: &EnvelopeAddr<'_>) -> HandlerResult {
        Ok(Status::Reject)
    }
}

fn main() {}
