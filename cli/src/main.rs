#![forbid(unsafe_code)]
//! panvault
fn main() {}
