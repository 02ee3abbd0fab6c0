use milter_blocking::Milter;

fn main() {
    #[derive(Milter)]
    struct Local;
}
