use milter_blocking::Milter;

#[derive(Milter)]
#[milter(actions(add_header, quarantine))]
#[milter(optional_actions(change_body, quarantine))]
struct Stamp;

fn main() {}
