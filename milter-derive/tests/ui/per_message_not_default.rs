use milter_blocking::Milter;

struct Counter(u32);

#[derive(Milter)]
struct Stamp {
    #[milter(per_message)]
    count: Counter,
}

fn main() {}
