//! A vault served in-process over mTLS on 127.0.0.1:0.

use std::net::SocketAddr;
use std::time::Duration;

use panvault_vault::config::Config;
use panvault_vault::core::kdf::KdfParams;
use panvault_vault::http::RunningServer;
use panvault_vault::tls::pki::LeafSpec;
use panvault_vault::{SealSpec, SecretText, Unlock, Vault, system_clock};
use tokio::sync::oneshot;

use crate::{CLIENTS, Client, TestPki, init_logs};

/// How a test server differs from the default.
#[derive(Default)]
pub struct ServerOpts {
    /// Extra TOML appended to the `[limits]` table.
    pub limits: String,
    /// `tls.min_version`.
    pub min_version: Option<&'static str>,
    /// Client certificates to issue (common name = the name, written to
    /// `pki/<name>.pem`/`.key`) and revoke in a CRL given to the server.
    pub revoked_clients: Vec<&'static str>,
    /// Extra `[[clients]]` entries (TOML).
    pub extra_clients: String,
    /// Extra TOML tables after the clients (e.g. `[relay]`).
    pub extra_config: String,
    /// The vault's clock (default: the system's).
    pub clock: Option<panvault_vault::Clock>,
}

/// A vault served in-process over mTLS on 127.0.0.1:0.
pub struct TestServer {
    pub addr: SocketAddr,
    pub vault: Vault,
    pub pki: TestPki,
    pub config: Config,
    pub passphrase: &'static str,
    shutdown: Option<oneshot::Sender<()>>,
    running: Option<RunningServer>,
    // Last: dropped after everything that uses the files.
    pub dir: tempfile::TempDir,
}

/// A cheap Argon2id: the key hierarchy is not what these tests exercise (the
/// binary tests use the real minimum).
pub const TEST_KDF: KdfParams = KdfParams {
    m_kib: 1024,
    t: 1,
    p: 1,
};

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(ServerOpts::default()).await
    }

    pub async fn start_with(opts: ServerOpts) -> TestServer {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new(&dir.path().join("pki"));
        let data = dir.path().join("data");
        let passphrase = "e2e-test-passphrase";
        let unlock = || Unlock::Passphrase(SecretText::new(passphrase.into()));
        Vault::init(
            &data,
            &SealSpec {
                unlock: unlock(),
                kdf: TEST_KDF,
                shares: None,
            },
            &system_clock(),
        )
        .unwrap();
        let mut crl_line = String::new();
        if !opts.revoked_clients.is_empty() {
            let mut serials = Vec::new();
            for name in &opts.revoked_clients {
                let leaf = pki.issue(&LeafSpec::client(name));
                std::fs::write(pki.dir.join(format!("{name}.pem")), &leaf.cert_pem).unwrap();
                std::fs::write(pki.dir.join(format!("{name}.key")), leaf.key_pem.as_bytes())
                    .unwrap();
                serials.push(leaf.serial);
            }
            let serials: Vec<&[u8]> = serials.iter().map(Vec::as_slice).collect();
            std::fs::write(pki.dir.join("ca.crl"), pki.ca.crl(&serials).unwrap()).unwrap();
            crl_line = "crls = [\"pki/ca.crl\"]\n".into();
        }
        let min_version = opts
            .min_version
            .map(|v| format!("min_version = \"{v}\"\n"))
            .unwrap_or_default();
        let mut text = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nclient_ca = \"pki/ca.pem\"\n{crl_line}{min_version}[limits]\n{}\n",
            opts.limits
        );
        for (name, tenant, perms) in CLIENTS {
            let perms: Vec<String> = perms.iter().map(|p| format!("\"{p}\"")).collect();
            text.push_str(&format!(
                "[[clients]]\nname = \"{name}\"\ntenant = \"{tenant}\"\npermissions = [{}]\n",
                perms.join(", ")
            ));
        }
        text.push_str(&opts.extra_clients);
        text.push_str(&opts.extra_config);
        let path = dir.path().join("panvault.toml");
        std::fs::write(&path, &text).unwrap();
        let config = Config::load(&path).unwrap();
        let vault = Vault::open_with(
            &config.data_dir,
            &unlock(),
            panvault_vault::VaultOptions {
                clock: opts.clock.clone().unwrap_or_else(system_clock),
                cvc_ttl: config.cvc_ttl(),
                ..Default::default()
            },
        )
        .unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let running = panvault_vault::http::start(&config, vault.clone(), async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
        TestServer {
            addr: running.addr(),
            vault,
            pki,
            config,
            passphrase,
            shutdown: Some(tx),
            running: Some(running),
            dir,
        }
    }

    /// A client presenting the PKI's certificate for `name`.
    pub fn client(&self, name: &str) -> Client {
        let (cert, key) = self.pki.client_pems(name);
        self.client_with(&cert, &key)
    }

    /// A client presenting `cert_pem`/`key_pem`, trusting the test CA.
    pub fn client_with(&self, cert_pem: &str, key_pem: &str) -> Client {
        Client::new(
            self.addr,
            &self.pki.ca_pem(),
            Some((cert_pem, key_pem)),
            &[b"http/1.1"],
        )
    }

    /// A client with no certificate at all.
    pub fn anonymous_client(&self) -> Client {
        Client::new(self.addr, &self.pki.ca_pem(), None, &[b"http/1.1"])
    }

    /// Signals shutdown (as SIGTERM would) without waiting.
    pub fn signal_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Whether the server task has finished.
    pub fn is_finished(&self) -> bool {
        self.running.as_ref().is_none_or(RunningServer::is_finished)
    }

    /// Signals shutdown and waits until drained and the vault is closed.
    pub async fn stop(mut self) {
        self.signal_shutdown();
        if let Some(r) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(20), r.wait())
                .await
                .expect("server did not shut down");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.signal_shutdown();
    }
}
