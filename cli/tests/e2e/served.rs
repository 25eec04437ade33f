//! The part of the harness that runs the real `panvault` binary: a vault on disk
//! served by it, and the binary's path. It lives in the test target, not in the
//! `panvault-tests` library, because only here does Cargo hand over the binary it
//! built for this run (`CARGO_BIN_EXE_panvault`, fixed at compile time): a test
//! cannot run a stale binary, and no test runs `cargo build`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use panvault_vault::{Clock, SealSpec, SecretText, Unlock, Vault, system_clock};

use crate::util::{
    CLIENTS, Client, CmdOutput, LineCollector, TEST_KDF, TestPki, child_log_level, init_logs,
    run_command,
};

/// The `panvault` binary Cargo built for this test run.
pub fn panvault_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_panvault"))
}

/// The passphrase of every [`BinVault`].
pub const BIN_PASSPHRASE: &str = "e2e-test-passphrase";

/// A vault on disk for the real binary: the PKI in `ROOT/pki`, the passphrase in
/// `ROOT/pass`, the configuration (listen 127.0.0.1:0, the [`CLIENTS`]) in
/// `ROOT/panvault.toml`, the data directory wherever the test wants it (a small
/// file system, say). Made with the cheap [`TEST_KDF`].
pub struct BinVault {
    pub root: PathBuf,
    pub data: PathBuf,
    pub config: PathBuf,
    pub pass: PathBuf,
    pub ca_pem: String,
}

impl BinVault {
    /// A new vault with its data directory at `ROOT/data`.
    pub fn create(root: &Path) -> BinVault {
        BinVault::create_in(root, &root.join("data"))
    }

    /// A new vault whose data is in the PostgreSQL database at `url`, its data
    /// directory at `ROOT/data`: `[storage]` recorded in `DATA/panvault.toml` (as
    /// `init --postgres` does, so admin commands find it) and in the server's
    /// configuration, which every node of a test shares.
    pub fn create_pg(root: &Path, url: &str) -> BinVault {
        BinVault::create_pg_at(root, url, &system_clock())
    }

    /// [`BinVault::create_pg`], created at the time `clock` says (its first
    /// events dated then).
    pub fn create_pg_at(root: &Path, url: &str, clock: &Clock) -> BinVault {
        let data = root.join("data");
        std::fs::create_dir_all(&data).unwrap();
        panvault_vault::config::StorageSettings::record_postgres(&data, url).unwrap();
        let v = BinVault::create_in_at(root, &data, clock);
        let mut text = std::fs::read_to_string(&v.config).unwrap();
        text.push_str(&panvault_vault::config::StorageSettings::postgres_table(
            url,
        ));
        std::fs::write(&v.config, text).unwrap();
        v
    }

    /// A new vault with its data directory at `data`.
    pub fn create_in(root: &Path, data: &Path) -> BinVault {
        BinVault::create_in_at(root, data, &system_clock())
    }

    /// [`BinVault::create_in`], created at the time `clock` says (its first
    /// events dated then).
    pub fn create_in_at(root: &Path, data: &Path, clock: &Clock) -> BinVault {
        init_logs();
        let pki = TestPki::new(&root.join("pki"));
        Vault::init(
            data,
            &SealSpec {
                unlock: Unlock::Passphrase(SecretText::new(BIN_PASSPHRASE.into())),
                kdf: TEST_KDF,
                shares: None,
            },
            clock,
        )
        .unwrap();
        let pass = root.join("pass");
        std::fs::write(&pass, format!("{BIN_PASSPHRASE}\n")).unwrap();
        let mut text = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {}\n[tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nclient_ca = \"pki/ca.pem\"\n",
            toml_string(data)
        );
        for (name, tenant, perms) in CLIENTS {
            let perms: Vec<String> = perms.iter().map(|p| format!("\"{p}\"")).collect();
            text.push_str(&format!(
                "[[clients]]\nname = \"{name}\"\ntenant = \"{tenant}\"\npermissions = [{}]\n",
                perms.join(", ")
            ));
        }
        let config = root.join("panvault.toml");
        std::fs::write(&config, text).unwrap();
        BinVault {
            root: root.to_owned(),
            data: data.to_owned(),
            config,
            pass,
            ca_pem: pki.ca_pem(),
        }
    }

    /// How to unseal it in-process.
    pub fn unlock(&self) -> Unlock {
        Unlock::Passphrase(SecretText::new(BIN_PASSPHRASE.into()))
    }

    /// `vault.db`.
    pub fn db(&self) -> PathBuf {
        self.data.join("vault.db")
    }

    /// A client of the PKI (one of [`CLIENTS`]) for a server at `addr`.
    pub fn client(&self, addr: SocketAddr, name: &str) -> Client {
        let p = self.root.join("pki");
        let read = |f: String| std::fs::read_to_string(p.join(f)).unwrap();
        Client::new(
            addr,
            &self.ca_pem,
            Some((&read(format!("{name}.pem")), &read(format!("{name}.key")))),
            &[b"http/1.1"],
        )
    }

    /// The arguments of `panvault serve` for this vault (after the program name):
    /// `--allow-noncompliant`, since the cheap test KDF and the development PKI
    /// fail the compliance preflight on purpose.
    pub fn serve_args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "serve".into(),
            "--allow-noncompliant".into(),
            "--config".into(),
            self.config.clone().into(),
            "--passphrase-file".into(),
            self.pass.clone().into(),
        ]
    }

    /// Runs `panvault ARGS --data-dir DATA [--passphrase-file PASS]` to the end
    /// (at most `limit`, else the test fails).
    pub async fn run(&self, args: &[&str], with_pass: bool, limit: Duration) -> CmdOutput {
        let mut cmd = tokio::process::Command::new(panvault_bin());
        cmd.args(args).arg("--data-dir").arg(&self.data);
        if with_pass {
            cmd.arg("--passphrase-file").arg(&self.pass);
        }
        run_command(cmd, limit).await
    }
}

/// A path as a TOML basic string.
fn toml_string(p: &Path) -> String {
    serde_json::Value::String(p.display().to_string()).to_string()
}

/// A running `panvault serve` process.
pub struct ServeProcess {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    stderr: LineCollector,
}

impl ServeProcess {
    /// Starts `panvault serve` for `v` and waits (at most 60 s) until it prints
    /// `panvault: serving https://ADDR`. `Err` with its stderr if it exits first.
    pub async fn start(v: &BinVault) -> Result<ServeProcess, String> {
        let mut cmd = tokio::process::Command::new(panvault_bin());
        cmd.args(v.serve_args());
        ServeProcess::spawn(cmd).await
    }

    /// Spawns `cmd` (a `panvault serve`, possibly through a wrapper that `exec`s
    /// it) and waits for its address.
    pub async fn spawn(mut cmd: tokio::process::Command) -> Result<ServeProcess, String> {
        let mut child = cmd
            .env("PANVAULT_LOG", child_log_level())
            .env_remove("PANVAULT_PASSPHRASE")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stderr = LineCollector::start(child.stderr.take().unwrap());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let text = stderr.text();
            if let Some(rest) = text.split("panvault: serving https://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
                return Ok(ServeProcess {
                    child,
                    addr,
                    stderr,
                });
            }
            tokio::select! {
                open = stderr.changed() => {
                    if !open {
                        // stderr closed without the address: the server is exiting.
                        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
                            .await
                            .map_or_else(|_| "no exit 30 s after closing stderr".into(), |s| s.unwrap().to_string());
                        return Err(format!("serve exited with {status}: {}", stderr.text()));
                    }
                }
                status = child.wait() => {
                    let status = status.unwrap();
                    // Everything it wrote, up to the end of the stream.
                    stderr.finished(Duration::from_secs(10)).await;
                    return Err(format!("serve exited with {status}: {}", stderr.text()));
                }
                () = tokio::time::sleep_until(deadline) => {
                    let _ = child.start_kill();
                    return Err(format!("serve not ready after 60 s: {}", stderr.text()));
                }
            }
        }
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// SIGKILL, and waits (at most 10 s) until it is gone.
    pub async fn kill(&mut self) {
        self.child.start_kill().unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("no exit 10 s after SIGKILL")
            .unwrap();
    }

    /// SIGTERM; the exit status (at most 30 s).
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let st = tokio::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .await
            .unwrap();
        assert!(st.success());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("no exit 30 s after SIGTERM")
            .unwrap();
        // Its last words reach the leak scan's copy before the test goes on.
        self.stderr.finished(Duration::from_secs(10)).await;
        status
    }

    /// Polls `GET /healthz` until it answers 200 (at most `limit`).
    pub async fn wait_healthy(&self, v: &BinVault, limit: Duration) {
        let client = v.client(self.addr, "payments");
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(r) = client.request("GET", "/healthz", None, None).await
                && r.status == 200
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "/healthz did not answer within {limit:?}: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
