//! Where a vault's data lives: the SQLite file of its data directory (the
//! default), or a PostgreSQL database named in the `[storage]` table of the data
//! directory's `panvault.toml`. The server reads `[storage]` from its own
//! configuration; admin commands, which only have `--data-dir`, find it through
//! [`Location::of`], so every command reaches the same engine.

use std::fmt;
use std::path::{Path, PathBuf};

use super::StoreError;
use super::pg::PgSettings;
use crate::config::{Engine, StorageSettings};

/// The engine and where its data is.
pub enum Location {
    /// The SQLite database file (`DATA/vault.db`).
    Sqlite(PathBuf),
    /// A PostgreSQL database (the password, if any, redacted whenever printed).
    Postgres(PgSettings),
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            Location::Postgres(s) => f.debug_tuple("Postgres").field(s).finish(),
        }
    }
}

/// The SQLite file's path, or the PostgreSQL URL with its password as `***`.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(s) => write!(f, "{s}"),
        }
    }
}

impl Location {
    /// Where the vault of `data_dir` keeps its data: the `[storage]` table of
    /// `DATA/panvault.toml` if the file has one, else SQLite's `DATA/vault.db`.
    /// Only `[storage]` is read: an admin command works whatever the rest of the
    /// file says (the server checks all of it).
    pub fn of(data_dir: &Path) -> Result<Location, StoreError> {
        let config = crate::DataDir::new(data_dir).config();
        let text = match std::fs::read_to_string(&config) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Location::Sqlite(super::db_path(data_dir)));
            }
            Err(e) => {
                return Err(StoreError::Config(format!("{}: {e}", config.display())));
            }
        };
        let settings = StorageSettings::from_config_text(&text)
            .map_err(|e| StoreError::Config(format!("{}: {e}", config.display())))?;
        Location::from_settings(settings.as_ref(), data_dir)
    }

    /// The location `[storage]` names (`None`: no `[storage]` table, SQLite) for
    /// the vault of `data_dir` (a `url_file` is relative to it).
    pub fn from_settings(
        settings: Option<&StorageSettings>,
        data_dir: &Path,
    ) -> Result<Location, StoreError> {
        let Some(s) = settings else {
            return Ok(Location::Sqlite(super::db_path(data_dir)));
        };
        match s.engine {
            Engine::Sqlite => Ok(Location::Sqlite(super::db_path(data_dir))),
            Engine::Postgres => {
                let parsed = match (s.url(), &s.url_file) {
                    (Some(url), None) => PgSettings::from_url(url),
                    (None, Some(file)) => {
                        let file = if file.is_relative() {
                            data_dir.join(file)
                        } else {
                            file.clone()
                        };
                        PgSettings::from_file(&file)
                    }
                    _ => {
                        return Err(StoreError::Config(
                            "storage: engine = \"postgres\" takes exactly one of url and url_file"
                                .into(),
                        ));
                    }
                };
                parsed
                    .map(Location::Postgres)
                    .map_err(|e| StoreError::Config(format!("storage: {e}")))
            }
        }
    }

    /// Whether this is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Location::Postgres(_))
    }

    /// The engine's name as receipts and reports show it.
    pub fn engine_name(&self) -> &'static str {
        match self {
            Location::Sqlite(_) => "sqlite",
            Location::Postgres(_) => "postgresql",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "s3cr3t-pw-77";

    #[test]
    fn absent_config_or_table_is_sqlite_in_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::of(dir.path()).unwrap();
        assert!(matches!(&loc, Location::Sqlite(p) if p == &dir.path().join("vault.db")));
        std::fs::write(
            dir.path().join("panvault.toml"),
            "listen = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        assert!(!Location::of(dir.path()).unwrap().is_postgres());
    }

    #[test]
    fn postgres_from_url_or_file_never_prints_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("postgres://pv:{PW}@127.0.0.1:5432/pv?sslmode=disable");
        std::fs::write(
            dir.path().join("panvault.toml"),
            format!("[storage]\nengine = \"postgres\"\nurl = \"{url}\"\n"),
        )
        .unwrap();
        let loc = Location::of(dir.path()).unwrap();
        assert!(loc.is_postgres());
        for shown in [format!("{loc}"), format!("{loc:?}")] {
            assert!(!shown.contains(PW), "{shown}");
        }
        std::fs::write(dir.path().join("pg.url"), format!("{url}\n")).unwrap();
        std::fs::write(
            dir.path().join("panvault.toml"),
            "[storage]\nengine = \"postgres\"\nurl_file = \"pg.url\"\n",
        )
        .unwrap();
        assert!(Location::of(dir.path()).unwrap().is_postgres());
        // the settings themselves print redacted too
        let s = StorageSettings::from_config_text(&format!(
            "[storage]\nengine = \"postgres\"\nurl = \"{url}\"\n"
        ))
        .unwrap();
        assert!(!format!("{s:?}").contains(PW));
    }

    #[test]
    fn a_bad_storage_table_is_refused_without_quoting_the_url() {
        let dir = tempfile::tempdir().unwrap();
        for text in [
            "[storage]\nengine = \"postgres\"\n".to_owned(),
            format!(
                "[storage]\nengine = \"postgres\"\nurl = \"mysql://u:{PW}@h/x\"\nurl_file = \"x\"\n"
            ),
            format!("[storage]\nengine = \"postgres\"\nurl = \"mysql://u:{PW}@h/x\"\n"),
            "[storage]\nengine = \"oracle\"\n".to_owned(),
            "[storage]\nengin = \"postgres\"\n".to_owned(),
        ] {
            std::fs::write(dir.path().join("panvault.toml"), &text).unwrap();
            let e = Location::of(dir.path()).unwrap_err().to_string();
            assert!(!e.contains(PW), "{e}");
        }
    }
}
