//! The conformance milter behind a real, private Sendmail (run from the unpacked Debian
//! packages inside its own mount namespace): every case of `support/cases.rs`, message
//! by message.
//!
//! Needs root, `unshare`, `m4`, `libmilter-dev` and a C compiler, and either
//! `INTEROP_SENDMAIL_ROOT` naming an unpacked `sendmail-bin sendmail-cf libwrap0` tree or
//! `apt-get download` access to Debian's repository (the tree is then cached under
//! Cargo's target directory). Without them the tests print a skip line, or fail under
//! `CI=true`. `INTEROP_CASES=name,name` runs only some cases.

mod support;

use support::cases;

/// The C reference milter (`c/conformance.c`, on libmilter) behind Sendmail.
#[test]
fn sendmail_with_c_reference_milter() {
    let test = "sendmail_with_c_reference_milter";
    let Some(milter) = cases::c_reference_milter(test) else {
        return;
    };
    cases::run_sendmail_suite(test, &milter);
}

/// Our Rust example (`conformance.rs`) behind Sendmail.
#[test]
fn sendmail_with_rust_milter() {
    cases::run_sendmail_suite(
        "sendmail_with_rust_milter",
        std::path::Path::new(env!("CARGO_BIN_EXE_conformance")),
    );
}
