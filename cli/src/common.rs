//! What every subcommand shares: the error type and its exit codes, tracing set-up.
use std::fmt;

/// An error a subcommand ends with; `main` prints it and exits with its code.
#[derive(Debug)]
pub struct CliError {
    message: String,
    code: u8,
}

impl CliError {
    /// A usage or input error (exit 1; clap itself uses 2 for argument errors).
    pub fn usage(message: impl Into<String>) -> Self {
        CliError { message: message.into(), code: 1 }
    }

    /// An error with an explicit exit code.
    pub fn with_code(message: impl Into<String>, code: u8) -> Self {
        CliError { message: message.into(), code }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        self.code
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Logs to stderr, filtered by `PANVAULT_LOG` (default `warn`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PANVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
