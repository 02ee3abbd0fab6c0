use milter_blocking::Milter;

#[derive(Milter)]
#[milter(macros(connect = "{j} {daemon_name", mail = ""))]
struct Macros;

fn main() {}
