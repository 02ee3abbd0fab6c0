use milter_blocking::Milter;

#[derive(Milter)]
struct Stamp<T> {
    state: T,
}

fn main() {}
