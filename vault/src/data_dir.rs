//! The data directory: the one place that knows the name of every file in it, and
//! the one owner-only file writer. A name written twice drifts (a second copy of
//! `"vault.db"` in a command is a command that looks for the wrong file one day).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A vault's data directory and the paths of the files in it.
///
/// ```
/// use panvault_vault::DataDir;
/// let dir = DataDir::new("/srv/panvault");
/// assert_eq!(dir.database(), std::path::Path::new("/srv/panvault/vault.db"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The SQLite database: cards, keys, seal, audit log.
    pub const DATABASE: &'static str = "vault.db";
    /// Suffixes of the files SQLite keeps beside the database (write-ahead log,
    /// shared memory, rollback journal).
    pub const DATABASE_SIDE_SUFFIXES: [&'static str; 3] = ["-wal", "-shm", "-journal"];
    /// The advisory lock file: a serving vault holds a shared `flock` on it for its
    /// lifetime, `master rotate` an exclusive one.
    pub const SERVE_LOCK: &'static str = "serve.lock";
    /// The audit log's public verification key, written by `init`.
    pub const AUDIT_PUBLIC_KEY: &'static str = "audit-signing.pub";
    /// The server configuration `quickstart` writes (any other path works with
    /// `serve --config`).
    pub const CONFIG: &'static str = "panvault.toml";
    /// The development PKI `quickstart` makes.
    pub const PKI: &'static str = "pki";

    /// The development passphrase `quickstart` makes.
    /// (The compliance checks recognise a development vault by it.)
    pub const DEV_PASSPHRASE: &'static str = panvault_audit::compliance::DEV_PASSPHRASE_FILE;
    /// Base name of the CA's certificate and key in [`DataDir::PKI`].
    pub const PKI_CA: &'static str = "ca";
    /// Base name of the server's certificate and key in [`DataDir::PKI`].
    pub const PKI_SERVER: &'static str = "server";

    /// The data directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// [`DataDir::DATABASE`].
    pub fn database(&self) -> PathBuf {
        self.root.join(Self::DATABASE)
    }

    /// The database and the files SQLite keeps beside it.
    pub fn database_files(&self) -> Vec<PathBuf> {
        let db = self.database();
        let mut out = vec![db.clone()];
        out.extend(Self::DATABASE_SIDE_SUFFIXES.iter().map(|s| {
            let mut p = db.clone().into_os_string();
            p.push(s);
            PathBuf::from(p)
        }));
        out
    }

    /// [`DataDir::SERVE_LOCK`].
    pub fn serve_lock(&self) -> PathBuf {
        self.root.join(Self::SERVE_LOCK)
    }

    /// [`DataDir::AUDIT_PUBLIC_KEY`].
    pub fn audit_public_key(&self) -> PathBuf {
        self.root.join(Self::AUDIT_PUBLIC_KEY)
    }

    /// [`DataDir::CONFIG`].
    pub fn config(&self) -> PathBuf {
        self.root.join(Self::CONFIG)
    }

    /// [`DataDir::PKI`].
    pub fn pki(&self) -> PathBuf {
        self.root.join(Self::PKI)
    }

    /// [`DataDir::DEV_PASSPHRASE`].
    pub fn dev_passphrase(&self) -> PathBuf {
        self.root.join(Self::DEV_PASSPHRASE)
    }

    /// `PKI_DIR/<name>.pem` and `PKI_DIR/<name>.key`: a certificate and its key.
    pub fn pki_pair(pki_dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        (
            pki_dir.join(format!("{name}.pem")),
            pki_dir.join(format!("{name}.key")),
        )
    }

    /// `pki/<name>.pem` and `pki/<name>.key`, relative to the data directory (as a
    /// configuration file beside it names them).
    pub fn pki_pair_relative(name: &str) -> (String, String) {
        (
            format!("{}/{name}.pem", Self::PKI),
            format!("{}/{name}.key", Self::PKI),
        )
    }
}

/// Options that open `path` for writing with mode 0600 on Unix: the file is
/// readable by its owner only from the moment it exists (a `chmod` after the write
/// leaves a window). The mode applies to files this creates; the caller adds
/// `create`, `create_new`, `truncate` or `append` as it needs.
pub fn owner_only() -> OpenOptions {
    let mut opts = OpenOptions::new();
    opts.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts
}

/// Creates (or truncates) `path` readable by its owner only, for streaming into.
pub fn create_owner_only(path: &Path) -> std::io::Result<File> {
    owner_only().create(true).truncate(true).open(path)
}

/// Writes `contents` to `path` (created or truncated) readable by its owner only,
/// and syncs it to disk.
pub fn write_owner_only(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut f = create_owner_only(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_lives_under_the_root() {
        let d = DataDir::new("/d");
        assert_eq!(d.database(), Path::new("/d/vault.db"));
        assert_eq!(d.serve_lock(), Path::new("/d/serve.lock"));
        assert_eq!(d.audit_public_key(), Path::new("/d/audit-signing.pub"));
        assert_eq!(d.config(), Path::new("/d/panvault.toml"));
        assert_eq!(
            DataDir::pki_pair(&d.pki(), DataDir::PKI_CA),
            (
                PathBuf::from("/d/pki/ca.pem"),
                PathBuf::from("/d/pki/ca.key")
            )
        );
        assert_eq!(
            DataDir::pki_pair_relative(DataDir::PKI_SERVER).0,
            "pki/server.pem"
        );
        assert_eq!(d.database_files().len(), 4);
        assert_eq!(d.database_files()[1], Path::new("/d/vault.db-wal"));
    }

    #[cfg(unix)]
    #[test]
    fn owner_only_files_are_0600_from_the_start() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        write_owner_only(&p, b"x").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"x");
    }
}
