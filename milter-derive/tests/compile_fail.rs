//! The derive's compile errors, one misuse per file (`tests/ui/*.rs`, with the
//! expected message beside it), and a full-featured struct that must compile.
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite`, then read them.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
