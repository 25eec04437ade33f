//! End-to-end test utilities.
#![forbid(unsafe_code)]
