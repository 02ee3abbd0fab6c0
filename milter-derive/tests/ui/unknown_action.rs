use milter_blocking::Milter;

#[derive(Milter)]
#[milter(actions(add_header, add_headers))]
struct Stamp;

fn main() {}
