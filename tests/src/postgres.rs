//! A real PostgreSQL server for the tests: `initdb` into a temporary directory, the
//! postmaster on a free 127.0.0.1 port (and a unix socket in that directory), optionally
//! with TLS under a certificate of the test PKI. Stopped and removed on drop.
//!
//! PostgreSQL refuses to run as root, and CI runs as root: then the cluster belongs to
//! an unprivileged user (`postgres`, else `nobody`) and both `initdb` and the server run
//! under its uid (`Command::uid`, no `sudo`).
//!
//! No PostgreSQL installed: [`PgServer::start`] returns `None` after
//! [`crate::tools::missing`], which fails the test under CI and skips it elsewhere.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use panvault_vault::tls::pki::LeafSpec;
use rustix::process::{Pid, Signal, geteuid, kill_process, kill_process_group};

use crate::TestPki;

/// How long a cluster may take to initialise or start on a loaded 2-core machine.
const START_DEADLINE: Duration = Duration::from_secs(120);
/// How long a fast shutdown may take before the process group is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// The role the tests connect as (a superuser: the vault creates its own schema).
pub const PG_USER: &str = "panvault";
/// The database the tests use (created by `initdb`).
pub const PG_DATABASE: &str = "postgres";

/// How to start the server.
#[derive(Default)]
pub struct PgOptions<'a> {
    /// Serve TLS (`ssl=on`) under a localhost certificate issued by this PKI's CA.
    pub tls: Option<&'a TestPki>,
    /// Extra `-c name=value` settings.
    pub settings: Vec<(String, String)>,
}

/// Who runs `initdb` and `postgres`: ourselves, or (as root) an unprivileged user.
#[derive(Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

/// A running PostgreSQL cluster in a temporary directory.
pub struct PgServer {
    root: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    password: String,
    run_as: Option<RunAs>,
    args: Vec<String>,
    child: Option<Child>,
    tls: bool,
}

impl PgServer {
    /// A plain server (TLS off). `None`: PostgreSQL is not installed and the test
    /// is skipped (outside CI; under CI this panics).
    pub fn start(test: &str) -> Option<PgServer> {
        PgServer::start_with(test, PgOptions::default())
    }

    /// A server with TLS under a certificate for localhost and 127.0.0.1 issued by
    /// the PKI's CA (verify it with `pki.dir/ca.pem`). Plain connections stay allowed
    /// so that tests can tell both apart.
    pub fn start_tls(test: &str, pki: &TestPki) -> Option<PgServer> {
        PgServer::start_with(
            test,
            PgOptions {
                tls: Some(pki),
                ..PgOptions::default()
            },
        )
    }

    pub fn start_with(test: &str, opts: PgOptions<'_>) -> Option<PgServer> {
        let Some(bin) = find_bin_dir() else {
            crate::tools::missing(
                test,
                "PostgreSQL not installed (no initdb and postgres in $PANVAULT_PG_BIN, on PATH or under /usr/lib/postgresql/*/bin)",
            );
            return None;
        };
        let run_as = if geteuid().is_root() {
            let Some(user) = unprivileged_user() else {
                crate::tools::missing(test, "an unprivileged user to run PostgreSQL as root");
                return None;
            };
            Some(user)
        } else {
            None
        };
        let root = tempfile::Builder::new()
            .prefix("panvault-pg")
            .tempdir()
            .unwrap();
        let password = random_password();
        std::fs::write(root.path().join("pwfile"), format!("{password}\n")).unwrap();
        std::fs::create_dir(root.path().join("sock")).unwrap();
        let mut args = vec![
            "-D".to_owned(),
            path_arg(&root.path().join("data")),
            "-k".to_owned(),
            path_arg(&root.path().join("sock")),
            "-c".to_owned(),
            "listen_addresses=127.0.0.1".to_owned(),
        ];
        let tls = opts.tls.is_some();
        if let Some(pki) = opts.tls {
            let issued = pki.issue(&LeafSpec::localhost_server());
            let (crt, key) = (
                root.path().join("server.crt"),
                root.path().join("server.key"),
            );
            std::fs::write(&crt, &issued.cert_pem).unwrap();
            std::fs::write(&key, issued.key_pem.as_bytes()).unwrap();
            // PostgreSQL refuses a key file others can read.
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            for (name, value) in [
                ("ssl", "on".to_owned()),
                ("ssl_cert_file", path_arg(&crt)),
                ("ssl_key_file", path_arg(&key)),
            ] {
                args.extend(["-c".to_owned(), format!("{name}={value}")]);
            }
        }
        for (name, value) in opts.settings {
            args.extend(["-c".to_owned(), format!("{name}={value}")]);
        }
        if let Some(user) = run_as {
            chown_tree(root.path(), user);
        }
        let mut server = PgServer {
            root,
            bin,
            port: 0,
            password,
            run_as,
            args,
            child: None,
            tls,
        };
        server.initdb();
        server.start_postmaster(None);
        Some(server)
    }

    /// `postgres://panvault:PASSWORD@127.0.0.1:PORT/postgres` with the given
    /// `sslmode` (and no CA: add `sslrootcert` for `verify-full`).
    pub fn url(&self, sslmode: &str) -> String {
        format!(
            "postgres://{PG_USER}:{}@127.0.0.1:{}/{PG_DATABASE}?sslmode={sslmode}",
            self.password, self.port
        )
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The directory of the unix socket (`host=` for a socket connection).
    pub fn socket_dir(&self) -> PathBuf {
        self.root.path().join("sock")
    }

    /// The server's log (stderr of the postmaster).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("postgres.log")).unwrap_or_default()
    }

    /// Fast shutdown (SIGINT: connections are cut, nothing acknowledged is lost),
    /// waiting for the postmaster to exit; its process group is killed if it
    /// does not within the deadline.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_child(&child);
        let _ = kill_process(pid, Signal::INT);
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = kill_process_group(pid, Signal::KILL);
                    let _ = child.wait();
                    break;
                }
            }
        }
        // Backends exit when the postmaster does; take any straggler down with it.
        let _ = kill_process_group(pid, Signal::KILL);
    }

    /// Start the stopped server again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.start_postmaster(Some(self.port));
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(self.root.path())
            .stdin(Stdio::null())
            .env("LC_ALL", "C")
            .env_remove("PGDATA");
        if let Some(user) = self.run_as {
            // std drops the supplementary groups too when root sets a uid.
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd
    }

    fn initdb(&self) {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.root.path().join("data"))
            .args(["-U", PG_USER, "-E", "UTF8", "--no-locale", "--no-sync"])
            .arg(format!(
                "--pwfile={}",
                path_arg(&self.root.path().join("pwfile"))
            ))
            // Passwords over TCP (what the vault uses); the socket is for the harness.
            .args(["--auth-host=scram-sha-256", "--auth-local=trust"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed ({}){}: {}{}",
            out.status,
            match self.run_as {
                Some(u) => format!(
                    " (run as uid {}: every directory above {} must be searchable by it; set TMPDIR otherwise)",
                    u.uid,
                    self.root.path().display()
                ),
                None => String::new(),
            },
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Start the postmaster (on `port`, or a free one, retrying if another process
    /// took it first) and wait until it reports itself ready.
    fn start_postmaster(&mut self, port: Option<u16>) {
        for _ in 0..5 {
            let port = port.unwrap_or_else(free_port);
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.root.path().join("postgres.log"))
                .unwrap();
            let child = self
                .command("postgres")
                .args(&self.args)
                .args(["-p", &port.to_string()])
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .process_group(0)
                .spawn()
                .unwrap();
            self.port = port;
            self.child = Some(child);
            if self.wait_ready() {
                return;
            }
            self.stop();
        }
        panic!("PostgreSQL did not start; its log:\n{}", self.log());
    }

    /// Wait for `postmaster.pid` to say "ready" (its status line, PostgreSQL ≥ 10),
    /// or the postmaster to exit (false: e.g. its port was taken).
    fn wait_ready(&mut self) -> bool {
        let pidfile = self.root.path().join("data").join("postmaster.pid");
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let child = self.child.as_mut().unwrap();
            if child.try_wait().unwrap().is_some() {
                self.child = None;
                return false;
            }
            if let Ok(text) = std::fs::read_to_string(&pidfile)
                && text.lines().nth(7).is_some_and(|s| s.trim() == "ready")
            {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL not ready after {START_DEADLINE:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The directory holding `initdb` and `postgres`: `PANVAULT_PG_BIN`, else PATH, else
/// the newest `/usr/lib/postgresql/*/bin` (Debian does not put them on PATH).
pub fn find_bin_dir() -> Option<PathBuf> {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("PANVAULT_PG_BIN") {
        return Some(PathBuf::from(dir)).filter(|d| has_both(d));
    }
    if let Some(dir) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|d| has_both(d))
    {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_both(d))
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}

/// `postgres`, else `nobody`, from /etc/passwd.
fn unprivileged_user() -> Option<RunAs> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    ["postgres", "nobody"].iter().find_map(|name| {
        passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() > 3 && f[0] == *name).then_some(())?;
            let (uid, gid) = (f[2].parse().ok()?, f[3].parse().ok()?);
            (uid != 0).then_some(RunAs { uid, gid })
        })
    })
}

fn chown_tree(dir: &Path, user: RunAs) {
    std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            chown_tree(&path, user);
        } else {
            std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid)).unwrap();
        }
    }
}

/// A throwaway password, distinctive enough that a test can look for it in output.
fn random_password() -> String {
    use std::hash::{BuildHasher, RandomState};
    let state = RandomState::new();
    format!(
        "pw{:016x}{:016x}",
        state.hash_one(1u8),
        state.hash_one(std::process::id())
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn path_arg(path: &Path) -> String {
    path.to_str().expect("temporary paths are UTF-8").to_owned()
}
