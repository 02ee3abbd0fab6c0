//! Support code shared by the example and interop tests. Each test binary uses a
//! part of it, hence the allowance for unused items.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod milter_process;
