use milter_blocking::{handlers, Milter, Spec};

#[derive(Milter)]
struct Everything;

#[handlers]
impl Milter for Everything {
    const SPEC: Spec = Spec::ALL_STAGES;
}

fn main() {}
