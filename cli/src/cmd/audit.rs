//! (placeholder, being written)
use std::process::ExitCode;

use crate::common::CliError;

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {}

/// Runs the subcommand.
pub fn run(c: Command) -> Result<ExitCode, CliError> {
    match c {}
}
