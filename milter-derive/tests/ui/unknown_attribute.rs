use milter_blocking::Milter;

#[derive(Milter)]
#[milter(actions(add_header), skip_stages(helo))]
struct Stamp;

fn main() {}
