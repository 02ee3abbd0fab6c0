//! README's "Write one": its program is `examples/readme.rs`, verbatim, so that
//! the code a reader copies compiles (the `readme` binary) and behaves as the
//! page says.

// A failed unwrap in a test is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::process::Command;

const README: &str = include_str!("../../README.md");
const PROGRAM: &str = include_str!("../readme.rs");

/// The first ```rust block after the "## Write one" heading.
fn readme_program() -> &'static str {
    let section = README
        .split_once("## Write one\n")
        .expect("README has a \"Write one\" section")
        .1;
    let block = section
        .split_once("```rust\n")
        .expect("\"Write one\" has a Rust block")
        .1;
    block.split_once("```").expect("the block is closed").0
}

#[test]
fn readme_shows_the_program_verbatim() {
    assert_eq!(
        readme_program(),
        PROGRAM,
        "README's \"Write one\" and examples/readme.rs differ"
    );
}

#[test]
fn a_start_up_error_prints_one_line_and_exits_with_status_1() {
    // Hold the program's port, so that it cannot listen. If another program
    // already holds it, the program cannot listen either.
    let _held = TcpListener::bind("127.0.0.1:7357");
    let out = Command::new(env!("CARGO_BIN_EXE_readme")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("stamp: cannot listen on inet:7357@127.0.0.1: "),
        "{stderr}"
    );
    // Display, not Debug.
    assert!(!stderr.contains("Listen {"), "{stderr}");
}
