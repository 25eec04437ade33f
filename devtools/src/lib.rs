//! Developer tools of panvault, kept out of the libraries a user links: a labelled
//! test corpus for the PAN scanner and its scorer ([`corpus`]), used by the
//! `panvault-dev` binary, the scanner's benchmarks and its precision/recall test.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod corpus;
