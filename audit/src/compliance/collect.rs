//! Collectors for the facts this crate can read by itself: the audit log in the
//! vault's database (through the log's own read functions), file modes, and
//! the PAN scanner. (Vault facts — keys, records, configuration — are collected
//! by the vault, which depends on this crate.)
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::facts::{
    AuditLogFacts, AuditVerifyFacts, FieldStats, FileFacts, FileRole, HitKind, ScanFacts, ScanHit,
};
use crate::log::{self, PublicKey};
use crate::scan::{Kind, ScanOptions, Scanner};

/// Facts about the audit log in `db` (the vault's `vault.db`), verified with the
/// public key in `pubkey`. `retention` is the configured retention of audit
/// events in days and where it comes from.
pub fn audit_log_facts(
    db: &Path,
    pubkey: &Path,
    retention: (Option<i64>, String),
) -> Result<AuditLogFacts, String> {
    let conn = log::open_read_only(db).map_err(|e| format!("{}: {e}", db.display()))?;
    let mut facts = AuditLogFacts {
        database: db.display().to_string(),
        present: false,
        verify: Err("not verified".to_owned()),
        retention_days: retention.0,
        retention_source: retention.1,
        prune_retention_days: Vec::new(),
        oldest_event: None,
        actions: BTreeMap::new(),
        admin_events: 0,
        denied_events: 0,
        fields: FieldStats::default(),
    };
    let db_err = |e: log::AuditError| format!("{}: {e}", db.display());
    facts.present = log::has_audit_log(&conn).map_err(db_err)?;
    if !facts.present {
        return Ok(facts);
    }
    facts.verify = match PublicKey::read_from(pubkey) {
        Err(e) => Err(format!("audit public key {}: {e}", pubkey.display())),
        Ok(key) => log::verify(&conn, &key, None)
            .map_err(|e| e.to_string())
            .map(|r| AuditVerifyFacts {
                events: r.events,
                first_seq: r.first_seq,
                last_seq: r.last_seq,
                checkpoints: r.checkpoints,
                prunes: r.prunes,
                unsigned_tail: r.unsigned_tail,
                problem: r.problem.map(|b| (b.kind.to_string(), b.to_string())),
            }),
    };
    facts.prune_retention_days = log::prune_retention_days(&conn).map_err(db_err)?;
    facts.oldest_event = log::oldest_event_time(&conn).map_err(db_err)?;
    let stats = log::event_stats(&conn).map_err(db_err)?;
    facts.actions = stats.actions;
    facts.admin_events = stats.admin;
    facts.denied_events = stats.denied;
    facts.fields = FieldStats {
        examined: stats.examined,
        missing_actor: stats.missing_actor,
        missing_origin: stats.missing_origin,
        missing_resource: stats.missing_resource,
        missing_code: stats.missing_code,
        missing_purpose: stats.missing_purpose,
    };
    Ok(facts)
}

#[cfg(unix)]
fn mode_of(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn mode_of(meta: &std::fs::Metadata) -> u32 {
    if meta.permissions().readonly() {
        0o400
    } else {
        0o600
    }
}

/// The mode of `path` as `role` (a missing file is reported as not present).
pub fn file_facts(path: &Path, role: FileRole) -> FileFacts {
    match std::fs::metadata(path) {
        Ok(meta) => FileFacts {
            path: path.display().to_string(),
            role,
            mode: Some(mode_of(&meta)),
            error: None,
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileFacts {
            path: path.display().to_string(),
            role,
            mode: None,
            error: None,
        },
        Err(e) => FileFacts {
            path: path.display().to_string(),
            role,
            mode: None,
            error: Some(e.to_string()),
        },
    }
}

/// `path` without `.` components (`qs/./vault.db` is `qs/vault.db`), so that
/// reports name files the way a person would.
pub fn clean_path(path: &Path) -> PathBuf {
    let cleaned: PathBuf = path.components().collect();
    if cleaned.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        cleaned
    }
}

/// Whether the PEM or key file at `path` holds a private key (read at most 1 MiB;
/// an unreadable file counts as one, so that it is held to the strict mode).
fn holds_private_key(path: &Path) -> bool {
    use std::io::Read as _;
    let mut text = Vec::new();
    match std::fs::File::open(path).and_then(|f| f.take(1 << 20).read_to_end(&mut text)) {
        Ok(_) => text.windows(11).any(|w| w == b"PRIVATE KEY"),
        Err(_) => true,
    }
}

/// The role of the file `name` found under the data directory (`top`: directly in it).
fn role_of(path: &Path, name: &str, top: bool) -> FileRole {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if top && name == "vault.db" {
        FileRole::Database
    } else if top && name.starts_with("vault.db-") {
        FileRole::DatabaseWal
    } else if ext == "share" {
        FileRole::Share
    } else if ext == "key" {
        FileRole::PrivateKey
    } else if matches!(ext.as_str(), "pub" | "pem" | "crt" | "cer") {
        if holds_private_key(path) {
            FileRole::PrivateKey
        } else {
            FileRole::Public
        }
    } else {
        FileRole::DataFile
    }
}

/// Every directory and file below `dir`, depth first in name order (symbolic
/// links are reported by their target's mode but never followed into).
fn walk(dir: &Path, top: bool, out: &mut Vec<FileFacts>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        paths.push(entry.path());
    }
    paths.sort();
    for p in paths {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match std::fs::symlink_metadata(&p) {
            Ok(meta) if meta.is_dir() => {
                out.push(file_facts(&p, FileRole::Subdir));
                if let Err(e) = walk(&p, false, out) {
                    out.push(FileFacts {
                        path: p.display().to_string(),
                        role: FileRole::Subdir,
                        mode: None,
                        error: Some(e),
                    });
                }
            }
            Ok(_) => out.push(file_facts(&p, role_of(&p, &name, top))),
            Err(e) => out.push(FileFacts {
                path: p.display().to_string(),
                role: FileRole::DataFile,
                mode: None,
                error: Some(e.to_string()),
            }),
        }
    }
    Ok(())
}

/// The modes of the data directory and of every directory and file below it
/// (certificates and public keys are held to [`FileRole::Public`], any file
/// holding a private key to the strict mode), plus `extra` files the
/// configuration names (shares, TLS keys, certificates). For each certificate
/// in `extra`, the private key beside it (`ca.pem` → `ca.key`) is checked too:
/// a CA key can mint client certificates.
pub fn data_dir_modes(
    data_dir: &Path,
    extra: &[(PathBuf, FileRole)],
) -> Result<Vec<FileFacts>, String> {
    let data_dir = clean_path(data_dir);
    let mut out = vec![file_facts(&data_dir, FileRole::DataDir)];
    walk(&data_dir, true, &mut out)?;
    let mut named: Vec<(PathBuf, FileRole)> = Vec::new();
    for (p, role) in extra {
        let p = clean_path(p);
        if *role == FileRole::Public {
            let key = p.with_extension("key");
            if key != p && key.exists() {
                named.push((p.clone(), *role));
                named.push((key, FileRole::PrivateKey));
                continue;
            }
        }
        named.push((p, *role));
    }
    for (p, role) in named {
        match out.iter_mut().find(|f| Path::new(&f.path) == p.as_path()) {
            // The configuration says what it is (a TLS key named `server.pem`).
            Some(seen) if role != FileRole::Public => seen.role = role,
            Some(_) => {}
            None => out.push(file_facts(&p, role)),
        }
    }
    Ok(out)
}

/// Runs the PAN scanner over `roots` (the data directory with its database and
/// WAL, log files or directories).
pub fn scan_facts(roots: &[PathBuf]) -> Result<ScanFacts, String> {
    let scanner = Scanner::new(ScanOptions::default()).map_err(|e| e.to_string())?;
    let roots: Vec<PathBuf> = roots.iter().map(|r| clean_path(r)).collect();
    let report = scanner.scan(&roots).map_err(|e| e.to_string())?;
    let hits = report
        .findings
        .iter()
        .map(|f| ScanHit {
            path: match &f.member {
                Some(m) => format!("{}!{m}", f.path),
                None => f.path.clone(),
            },
            line: f.line,
            masked: f.masked.clone(),
            kind: match f.kind {
                Kind::Track1 => HitKind::Track1,
                Kind::Track2 => HitKind::Track2,
                _ => HitKind::Pan,
            },
            test_card: f.test_card,
        })
        .collect();
    Ok(ScanFacts {
        roots: roots.iter().map(|r| r.display().to_string()).collect(),
        files: report.stats.files,
        bytes: report.stats.bytes,
        hits,
        warnings: report
            .warnings
            .iter()
            .map(|w| match &w.member {
                Some(m) => format!("{}!{m}: {}", w.path, w.message),
                None => format!("{}: {}", w.path, w.message),
            })
            .collect(),
    })
}
