//! Support code shared by the example and interop tests. Each test binary uses a
//! part of it, hence the allowance for unused items.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod cases;
pub mod milter_process;
pub mod milter_tap;
pub mod postfix;
pub mod recordings;
pub mod sendmail;
pub mod smtp;
