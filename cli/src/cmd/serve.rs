//! `panvault serve --config FILE`: the HTTPS API over mutual TLS, in the foreground,
//! until SIGTERM or Ctrl-C (then in-flight requests are drained).
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use panvault_vault::compliance::PreflightFailure;
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
    /// Start even if the TLS or key compliance checks fail (logged and audited).
    #[arg(long)]
    pub allow_noncompliant: bool,
    /// Listen here instead of the configuration's `listen`: several nodes (or
    /// several processes on one host) can share one configuration file.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    let mut config = load_config(&args.config)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let noncompliant = preflight(&args.config, args.allow_noncompliant)?;
    let unlock = args.secret.unlock_for(&config.data_dir)?;
    serve(&config, unlock, noncompliant, |addr| {
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

/// Runs the TLS and key compliance checks of the default policy (PCI DSS 4.0.1)
/// before anything is unsealed. A failure refuses to start, naming the checks,
/// unless `allow` — then the failures are returned, to be logged and audited.
pub(crate) fn preflight(
    config: &std::path::Path,
    allow: bool,
) -> Result<Vec<PreflightFailure>, CliError> {
    let failed = crate::cmd::compliance::preflight(config)?;
    if failed.is_empty() {
        return Ok(failed);
    }
    if !allow {
        let msg = crate::cmd::compliance::refusal_text(&failed);
        return Err(CliError::with_code(msg, 1));
    }
    // Said as what happens (the server starts), not as the refusal it overrides.
    eprintln!(
        "panvault: WARNING: starting despite {} failed compliance check(s) (--allow-noncompliant, audited):\n  {}",
        failed.len(),
        crate::cmd::compliance::lines(&failed)
    );
    Ok(failed)
}

/// Opens the vault of `config` and serves it until a shutdown signal; `ready` is
/// called with the bound address once the server accepts connections. Failed
/// compliance checks the operator chose to override are recorded in the audit log.
pub(crate) fn serve(
    config: &Config,
    unlock: Unlock,
    noncompliant: Vec<PreflightFailure>,
    ready: impl FnOnce(SocketAddr),
) -> Result<ExitCode, CliError> {
    let hygiene = panvault_vault::hygiene::harden_process(false);
    for w in &hygiene.warnings {
        tracing::warn!("{w}");
    }
    let opts = panvault_vault::VaultOptions {
        checkpoint: panvault_audit::log::CheckpointPolicy {
            every_events: config.audit.checkpoint_every_events,
            every: std::time::Duration::from_secs(config.audit.checkpoint_every_secs),
        },
        checkpoint_witness: config.audit.checkpoint_witness.clone(),
        storage: config.storage.clone(),
        cvc_ttl: config.cvc_ttl(),
        ..Default::default()
    };
    // Several nodes may run on one host: each gets its own audit chain by default
    // (host and listen port; a process id when the port is chosen at bind time).
    let suffix = match config.listen.port() {
        0 => format!("pid{}", std::process::id()),
        port => port.to_string(),
    };
    panvault_vault::store::pg::name_serving_node(&suffix);
    let vault = Vault::open_with(&config.data_dir, &unlock, opts).map_err(vault_err)?;
    drop(unlock);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("panvault-serve")
        .build()
        .map_err(|e| CliError::usage(format!("cannot start the runtime: {e}")))?;
    let result = rt.block_on(async {
        let signal = shutdown_signal()
            .map_err(|e| CliError::usage(format!("cannot listen for signals: {e}")))?;
        if !noncompliant.is_empty() {
            let ctx = crate::common::admin_actor();
            let summary: String = noncompliant
                .iter()
                .take(20)
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            vault
                .record_event(
                    &ctx,
                    panvault_vault::service::AuditAction::ServeNoncompliant,
                    None,
                    None,
                    panvault_vault::service::AuditOutcome::Success,
                    Some(&summary),
                )
                .await
                .map_err(vault_err)?;
        }
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
