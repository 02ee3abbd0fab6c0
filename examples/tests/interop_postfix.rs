//! The conformance milter behind a real, private Postfix: every case of
//! `support/cases.rs`, message by message.
//!
//! Needs root and the Debian packages `postfix`, `libmilter-dev` (for the C reference)
//! and a C compiler. Without them the tests print a skip line, or fail under `CI=true`.
//! `INTEROP_CASES=name,name` runs only some cases.

mod support;

use support::cases;

/// The C reference milter (`c/conformance.c`, on libmilter) behind Postfix.
#[test]
fn postfix_with_c_reference_milter() {
    let test = "postfix_with_c_reference_milter";
    let Some(milter) = cases::c_reference_milter(test) else {
        return;
    };
    cases::run_postfix_suite(test, &milter);
}

/// Our Rust example (`conformance.rs`) behind Postfix.
#[test]
fn postfix_with_rust_milter() {
    cases::run_postfix_suite(
        "postfix_with_rust_milter",
        std::path::Path::new(env!("CARGO_BIN_EXE_conformance")),
    );
}
