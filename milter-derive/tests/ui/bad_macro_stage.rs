use milter_blocking::Milter;

#[derive(Milter)]
#[milter(macros(connect = "{j}", header = "{i}"))]
struct Macros;

fn main() {}
