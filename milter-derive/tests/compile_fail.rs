//! The compile errors of `#[derive(Milter)]` and `#[handlers]`, one misuse per
//! file (`tests/ui/*.rs`, with the expected message beside it), and the shapes
//! that must compile (`tests/ui/pass/*.rs`). Regenerate the `.stderr` files
//! with `TRYBUILD=overwrite`, then read them.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
