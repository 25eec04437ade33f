//! Collectors for the facts this crate can read by itself: the audit log in the
//! vault's database, file modes, and the PAN scanner. (Vault facts — keys,
//! records — come from the vault's inventory, which the CLI reads.)
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};
use time::OffsetDateTime;

use super::facts::{
    AuditLogFacts, AuditVerifyFacts, FieldStats, FileFacts, FileRole, HitKind, MaskingRow,
    ScanFacts, ScanHit,
};
use crate::log::{self, PublicKey};
use crate::scan::{Kind, ScanOptions, Scanner};

/// Actions that touch card data and must name the tenant (and token).
const DATA_ACTIONS: &[&str] = &[
    "tokenize",
    "read",
    "token.read",
    "detokenize",
    "delete",
    "token.delete",
    "erase",
];

fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

fn count(conn: &Connection, sql: &str) -> rusqlite::Result<u64> {
    conn.query_row(sql, [], |r| r.get::<_, i64>(0))
        .map(|n| u64::try_from(n).unwrap_or(0))
}

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
    let db_err = |e: rusqlite::Error| format!("{}: {e}", db.display());
    facts.present = table_exists(&conn, "audit_events").map_err(db_err)?;
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
    if table_exists(&conn, "audit_prunes").map_err(db_err)? {
        let mut stmt = conn
            .prepare("SELECT time_ns - cutoff_ns FROM audit_prunes ORDER BY id")
            .map_err(db_err)?;
        let rows = stmt.query_map([], |r| r.get::<_, i64>(0)).map_err(db_err)?;
        for ns in rows {
            facts
                .prune_retention_days
                .push(ns.map_err(db_err)? / 86_400_000_000_000);
        }
    }
    let oldest: Option<i64> = conn
        .query_row("SELECT min(time_ns) FROM audit_events", [], |r| r.get(0))
        .optional()
        .map_err(db_err)?
        .flatten();
    facts.oldest_event =
        oldest.and_then(|ns| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)).ok());
    let mut stmt = conn
        .prepare("SELECT action, count(*) FROM audit_events GROUP BY action")
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(db_err)?;
    for row in rows {
        let (action, n) = row.map_err(db_err)?;
        facts.actions.insert(action, u64::try_from(n).unwrap_or(0));
    }
    facts.admin_events = count(
        &conn,
        "SELECT count(*) FROM audit_events WHERE actor LIKE 'admin:%'",
    )
    .map_err(db_err)?;
    facts.denied_events = count(
        &conn,
        "SELECT count(*) FROM audit_events WHERE outcome = 'denied'",
    )
    .map_err(db_err)?;
    let data_list = DATA_ACTIONS
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(",");
    facts.fields = FieldStats {
        examined: count(&conn, "SELECT count(*) FROM audit_events").map_err(db_err)?,
        missing_actor: count(&conn, "SELECT count(*) FROM audit_events WHERE actor IS NULL OR actor = ''").map_err(db_err)?,
        missing_origin: count(&conn, "SELECT count(*) FROM audit_events WHERE actor NOT LIKE 'admin:%' AND (peer IS NULL OR peer = '')")
            .map_err(db_err)?,
        missing_resource: count(
            &conn,
            &format!("SELECT count(*) FROM audit_events WHERE action IN ({data_list}) AND outcome = 'success' AND (tenant IS NULL OR tenant = '' OR (action <> 'erase' AND (token IS NULL OR token = '')))"),
        )
        .map_err(db_err)?,
        missing_code: count(&conn, "SELECT count(*) FROM audit_events WHERE outcome <> 'success' AND (code IS NULL OR code = '')").map_err(db_err)?,
        missing_purpose: count(&conn, "SELECT count(*) FROM audit_events WHERE action = 'detokenize' AND (purpose IS NULL OR purpose = '')")
            .map_err(db_err)?,
    };
    Ok(facts)
}

/// The digits the stored cards in `db` keep in the clear, per card-number
/// length, read without unsealing: a format-preserving token (all digits, as
/// long as the card, BIN and last four kept) gives the length; an opaque token
/// does not, and those cards are one row of unknown length.
pub fn masking_facts(db: &Path) -> Result<Vec<MaskingRow>, String> {
    let conn = log::open_read_only(db).map_err(|e| format!("{}: {e}", db.display()))?;
    let db_err = |e: rusqlite::Error| format!("{}: {e}", db.display());
    // GLOB '*[^0-9]*' is true when any character is not a digit.
    let mut stmt = conn
        .prepare(
            "SELECT CASE WHEN token GLOB '*[^0-9]*' THEN NULL ELSE length(token) END AS len, \
             count(*), max(length(bin)), max(length(last4)) FROM cards GROUP BY len ORDER BY len",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, Option<i64>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })
        .map_err(db_err)?;
    let mut out = Vec::new();
    for row in rows {
        let (len, cards, lead, trail) = row.map_err(db_err)?;
        let num = |v: i64, what: &str| {
            u32::try_from(v).map_err(|_| format!("{}: impossible {what} {v}", db.display()))
        };
        out.push(MaskingRow {
            pan_len: len.map(|l| num(l, "token length")).transpose()?,
            cards: u64::try_from(cards)
                .map_err(|_| format!("{}: impossible count {cards}", db.display()))?,
            leading: num(lead.unwrap_or(0), "BIN length")?,
            trailing: num(trail.unwrap_or(0), "last-four length")?,
        });
    }
    Ok(out)
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
