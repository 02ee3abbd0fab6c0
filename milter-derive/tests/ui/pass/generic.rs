//! A generic milter type with bounds and a where clause.
use milter_blocking::{handlers, Actions, Context, EomContext, Header, HandlerResult, Milter, Stages, Status};

pub trait Scorer: Send {
    fn score(&self, header: &Header<'_>) -> u32;
}

#[derive(Default)]
pub struct Length;

impl Scorer for Length {
    fn score(&self, header: &Header<'_>) -> u32 {
        header.value.len() as u32
    }
}

#[derive(Milter, Default)]
#[milter(actions(add_header))]
pub struct Scored<S: Scorer, const LIMIT: u32>
where
    S: Default,
{
    scorer: S,
    #[milter(per_message)]
    score: u32,
}

#[handlers]
impl<S: Scorer, const LIMIT: u32> Milter for Scored<S, LIMIT>
where
    S: Default,
{
    fn header(&mut self, _ctx: &mut Context<'_>, header: &Header<'_>) {
        self.score += self.scorer.score(header);
    }
    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        if self.score > LIMIT {
            ctx.add_header("X-Score", self.score.to_string())?;
        }
        Ok(Status::Continue)
    }
}

fn main() {
    let spec = <Scored<Length, 10> as Milter>::SPEC;
    assert_eq!(spec.handled, Stages::HEADER | Stages::EOM);
    assert_eq!(spec.no_reply, Stages::HEADER);
    assert_eq!(spec.actions, Actions::ADD_HEADER);
}
