use super::*;
use panvault_audit::log::{Action, Actor, AuditChain, NewEvent, Outcome, SigningKey};

struct Vault {
    dir: tempfile::TempDir,
    key: SigningKey,
}

impl Vault {
    fn data_dir(&self) -> DataDir {
        DataDir {
            data_dir: self.dir.path().to_path_buf(),
        }
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.path().join("vault.db")).unwrap()
    }
}

/// A data directory with 20 events, a checkpoint every 5, and the public key.
fn vault() -> Vault {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_seed(&[3; 32]).unwrap();
    key.public_key()
        .write_to(&dir.path().join("audit-signing.pub"))
        .unwrap();
    let mut conn = rusqlite::Connection::open(dir.path().join("vault.db")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    audit::migrate(&conn).unwrap();
    let mut chain = AuditChain::load(&conn).unwrap();
    let tx = conn.transaction().unwrap();
    let now = time::OffsetDateTime::now_utc();
    for i in 0..20 {
        let ev = NewEvent::new(
            now,
            Actor::client("shop", "ff"),
            Action::Tokenize,
            Outcome::Success,
        )
        .with_tenant("acme")
        .with_token(format!("tok_{i}"));
        chain.append(&tx, &ev).unwrap();
        if (i + 1) % 5 == 0 {
            chain.checkpoint(&tx, &key, now).unwrap();
        }
    }
    tx.commit().unwrap();
    Vault { dir, key }
}

fn verify_args(v: &Vault, checkpoint: Option<PathBuf>) -> Command {
    Command::Verify(VerifyArgs {
        dir: v.data_dir(),
        pubkey: None,
        checkpoint,
        export: None,
        max_unsigned_age: None,
    })
}

#[test]
fn verify_exit_codes() {
    let v = vault();
    assert!(run(verify_args(&v, None)).is_ok());

    v.db()
        .execute("UPDATE audit_events SET token = 'tok_x' WHERE seq = 7", [])
        .unwrap();
    let err = run(verify_args(&v, None)).unwrap_err();
    assert_eq!(err.exit_code(), EXIT_BROKEN);
    assert!(
        err.to_string()
            .starts_with("audit log broken at seq 7: modified"),
        "{err}"
    );

    let missing = Vault {
        dir: tempfile::tempdir().unwrap(),
        key: SigningKey::from_seed(&[1; 32]).unwrap(),
    };
    v.key
        .public_key()
        .write_to(&missing.dir.path().join("audit-signing.pub"))
        .unwrap();
    assert_eq!(run(verify_args(&missing, None)).unwrap_err().exit_code(), 1);
}

#[test]
fn a_kept_checkpoint_catches_truncation() {
    let v = vault();
    let conn = v.db();
    let cp = audit::latest_checkpoint(&conn).unwrap().unwrap();
    let kept = v.dir.path().join("kept.txt");
    std::fs::write(&kept, format!("{cp}\n")).unwrap();
    assert!(run(verify_args(&v, Some(kept.clone()))).is_ok());

    conn.execute("DELETE FROM audit_events WHERE seq > 12", [])
        .unwrap();
    conn.execute("DELETE FROM audit_checkpoints WHERE seq > 12", [])
        .unwrap();
    assert!(run(verify_args(&v, None)).is_ok());
    let err = run(verify_args(&v, Some(kept))).unwrap_err();
    assert_eq!(err.exit_code(), EXIT_BROKEN);
    assert!(
        err.to_string()
            .starts_with("audit log broken at seq 13: truncated"),
        "{err}"
    );
}

fn events(v: &Vault) -> i64 {
    v.db()
        .query_row("SELECT count(*) FROM audit_events", [], |r| r.get(0))
        .unwrap()
}

/// Verify and export read the log without appending to it.
#[test]
fn reading_the_log_does_not_write_into_it() {
    let v = vault();
    let before = events(&v);
    assert!(run(verify_args(&v, None)).is_ok());
    let args = ExportArgs {
        dir: v.data_dir(),
        from: 1,
        format: Format::Jsonl,
        output: Some(v.dir.path().join("out.jsonl")),
    };
    assert!(run(Command::Export(args)).is_ok());
    assert_eq!(events(&v), before);
}

#[test]
fn an_old_unsigned_tail_fails_with_max_unsigned_age() {
    let v = vault();
    let conn = v.db();
    let mut chain = AuditChain::load(&conn).unwrap();
    let old = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
    for i in 0..2 {
        let ev = NewEvent::new(old, Actor::admin("ops"), Action::Tokenize, Outcome::Success)
            .with_token(format!("tok_tail_{i}"));
        chain.append(&conn, &ev).unwrap();
    }
    let with = |max: &str| {
        Command::Verify(VerifyArgs {
            dir: v.data_dir(),
            pubkey: None,
            checkpoint: None,
            export: None,
            max_unsigned_age: Some(parse_duration(max).unwrap()),
        })
    };
    assert!(run(verify_args(&v, None)).is_ok());
    assert!(run(with("1d")).is_ok());
    let err = run(with("30m")).unwrap_err();
    assert_eq!(err.exit_code(), EXIT_BROKEN);
    assert!(err.to_string().contains("unsigned for 2h"), "{err}");
}

#[test]
fn durations() {
    assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
    assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
    assert_eq!(parse_duration("5m").unwrap().as_secs(), 300);
    assert_eq!(parse_duration("2h").unwrap().as_secs(), 7200);
    assert_eq!(parse_duration("1d").unwrap().as_secs(), 86_400);
    assert!(parse_duration("1w").is_err());
    assert!(parse_duration("m").is_err());
    assert_eq!(human_secs(59), "59s");
    assert_eq!(human_secs(3700), "1h 1m");
}

#[test]
fn export_to_a_file() {
    let v = vault();
    let out = v.dir.path().join("events.jsonl");
    let args = ExportArgs {
        dir: v.data_dir(),
        from: 16,
        format: Format::Jsonl,
        output: Some(out.clone()),
    };
    assert!(run(Command::Export(args)).is_ok());
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("{\"type\":\"header\","), "{text}");
    let events: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("{\"type\":\"event\","))
        .collect();
    assert_eq!(events.len(), 5);
    assert!(events[0].contains("\"seq\":16,"));
    // The whole log verifies from the file alone; a partial export is refused.
    let whole = v.dir.path().join("whole.jsonl");
    let args = ExportArgs {
        dir: v.data_dir(),
        from: 1,
        format: Format::Jsonl,
        output: Some(whole.clone()),
    };
    assert!(run(Command::Export(args)).is_ok());
    let verify_file = |f: &Path| {
        run(Command::Verify(VerifyArgs {
            dir: DataDir {
                data_dir: v.dir.path().join("no-such-dir"),
            },
            pubkey: Some(v.dir.path().join("audit-signing.pub")),
            checkpoint: None,
            export: Some(f.to_owned()),
            max_unsigned_age: None,
        }))
    };
    assert!(verify_file(&whole).is_ok());
    let err = verify_file(&out).unwrap_err();
    assert_eq!(err.exit_code(), EXIT_BROKEN);
    assert!(err.to_string().contains("partial export"), "{err}");
}

#[test]
fn receipts() {
    let v = vault();
    let time = time::OffsetDateTime::now_utc();
    let sh = audit::subject_hash(&[9; 32], "acme", "customer-1");
    let r = ErasureReceipt::sign(&v.key, sh, "acme", 2, time, 20).unwrap();
    let file = v.dir.path().join("receipt.json");
    std::fs::write(&file, r.to_json().unwrap()).unwrap();
    let args = |f: &Path| ReceiptArgs {
        receipt: f.to_path_buf(),
        dir: v.data_dir(),
        pubkey: None,
    };
    assert!(run(Command::VerifyReceipt(args(&file))).is_ok());
    // The erase endpoint's whole answer is accepted as it came.
    std::fs::write(
        &file,
        format!(
            "{{\"receipt\":{},\"wal_scrubbed\":true}}",
            r.to_json().unwrap()
        ),
    )
    .unwrap();
    assert!(run(Command::VerifyReceipt(args(&file))).is_ok());
    std::fs::write(&file, r.to_json().unwrap()).unwrap();
    std::fs::write(
        &file,
        r.to_json()
            .unwrap()
            .replace("\"tokens_erased\":2", "\"tokens_erased\":1"),
    )
    .unwrap();
    assert_eq!(
        run(Command::VerifyReceipt(args(&file)))
            .unwrap_err()
            .exit_code(),
        EXIT_BROKEN
    );
    std::fs::write(&file, "not json").unwrap();
    assert_eq!(
        run(Command::VerifyReceipt(args(&file)))
            .unwrap_err()
            .exit_code(),
        1
    );
}
