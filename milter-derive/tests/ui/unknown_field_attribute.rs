use milter_blocking::Milter;

#[derive(Milter, Default)]
struct Stamp {
    #[milter(per_mesage)]
    rcpts: usize,
}

fn main() {}
