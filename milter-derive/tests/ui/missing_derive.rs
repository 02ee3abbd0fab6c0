use milter_blocking::{handlers, Milter};

struct Undeclared;

#[handlers]
impl Milter for Undeclared {}

fn main() {}
