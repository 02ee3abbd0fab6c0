use milter_blocking::Milter;

#[derive(Milter)]
enum Mode {
    Strict,
    Lax,
}

fn main() {}
