use milter_blocking::Milter;

#[derive(Milter)]
#[milter(actions(ADD_HEADER))]
struct Stamp;

fn main() {}
