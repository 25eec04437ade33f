//! vault
#![forbid(unsafe_code)]
