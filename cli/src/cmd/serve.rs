//! (placeholder, being written)
use std::process::ExitCode;

use crate::common::CliError;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> Result<ExitCode, CliError> {
    Err(CliError::usage("not available yet"))
}
