use milter_blocking::Milter;

#[derive(Milter)]
union Bits {
    a: u32,
    b: f32,
}

fn main() {}
