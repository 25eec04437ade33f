//! `panvault serve --config FILE`: the HTTPS API over mutual TLS, in the foreground,
//! until SIGTERM or Ctrl-C (then in-flight requests are drained).
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use panvault_vault::config::Config;
use panvault_vault::{Unlock, Vault};

use crate::common::{CliError, SecretArgs, vault_err};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server configuration (TOML); see docs/config.md.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    #[command(flatten)]
    pub secret: SecretArgs,
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    let config = load_config(&args.config)?;
    let unlock = args.secret.unlock(false)?;
    serve(&config, unlock, |addr| {
        eprintln!(
            "panvault: serving https://{addr} (mutual TLS; {} clients)",
            config.clients.len()
        )
    })
}

/// Loads and checks the configuration, including the TLS material, so that a bad
/// file is reported (naming the field) before anything else happens.
pub(crate) fn load_config(path: &std::path::Path) -> Result<Config, CliError> {
    let config =
        Config::load(path).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    panvault_vault::tls::server_config(&config.tls)
        .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    Ok(config)
}

/// Opens the vault of `config` and serves it until a shutdown signal; `ready` is
/// called with the bound address once the server accepts connections.
pub(crate) fn serve(
    config: &Config,
    unlock: Unlock,
    ready: impl FnOnce(SocketAddr),
) -> Result<ExitCode, CliError> {
    let vault = Vault::open(&config.data_dir, &unlock).map_err(vault_err)?;
    drop(unlock);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("panvault-serve")
        .build()
        .map_err(|e| CliError::usage(format!("cannot start the runtime: {e}")))?;
    let result = rt.block_on(async {
        let signal = shutdown_signal()
            .map_err(|e| CliError::usage(format!("cannot listen for signals: {e}")))?;
        let server = panvault_vault::http::start(config, vault.clone(), signal)
            .await
            .map_err(|e| CliError::usage(e.to_string()))?;
        ready(server.addr());
        server.wait().await;
        eprintln!("panvault: stopped");
        Ok(ExitCode::SUCCESS)
    });
    if result.is_err() {
        vault.shutdown();
    }
    result
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are installed before this
/// returns, so a signal that arrives while the server starts is not lost.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            eprintln!("panvault: shutting down; draining in-flight requests");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async move {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("panvault: shutting down; draining in-flight requests");
        })
    }
}
