use milter_blocking::handlers;

#[handlers]
struct NotAnImpl;

fn main() {
    let _ = NotAnImpl;
}
