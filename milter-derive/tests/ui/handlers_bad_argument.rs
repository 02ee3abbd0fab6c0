use milter_blocking::Milter;

#[derive(Milter)]
struct Renamed;

#[milter_blocking::handlers(krate = milter_blocking)]
impl Milter for Renamed {}

fn main() {}
