//! `panvault audit`: verify the tamper-evident log, export it for a SIEM, print
//! the latest signed checkpoint to keep off the host, and check erasure receipts.
//!
//! `verify`, `export` and `verify-receipt` open `DIR/vault.db` read-only (a
//! running server keeps serving; a copy or a backup on a read-only medium works)
//! and need only the audit public key, never the vault's secrets. They do not
//! write into the log they read: an event appended after the checkpoint a
//! verification reports would be an unsigned tail of its own making. They say
//! on standard error what they did instead (for the shell's or the scheduler's log).
//! `checkpoint` unseals the vault: it records its own event and signs a
//! checkpoint covering it in the same transaction (PostgreSQL: a cluster
//! checkpoint of every node's head). `prune` unseals it too: it deletes the
//! events past the retention through a signed checkpoint and leaves a signed
//! prune record, with its own event, in one transaction.
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use panvault_audit::log::{
    self as audit, AuditError, Checkpoint, ErasureReceipt, PublicKey, VerifyReport,
};

use panvault_vault::store::Location;
use panvault_vault::store::pg::{self, PgSettings};

use crate::common::{CliError, parse_duration};

/// Exit code when the log or a receipt fails verification.
const EXIT_BROKEN: u8 = 3;

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the whole chain and every checkpoint signature using only the public key.
    ///
    /// With `--export FILE --pubkey KEY`, checks an export (`audit export`) instead
    /// of a vault: no data directory is needed.
    ///
    /// Exit 0 when intact, 3 with the first sequence number where the log breaks
    /// and how (modified, missing, inserted, reordered, truncated, bad signature),
    /// 1 on usage or I/O errors.
    Verify(VerifyArgs),
    /// Write the log as JSON lines: a header, the prune records, the checkpoints
    /// and the events (for a SIEM, or to verify elsewhere with `audit verify --export`).
    Export(ExportArgs),
    /// Sign a checkpoint covering every event committed so far and print it as
    /// one line, to keep off this host (unseals the vault; works while a server runs).
    ///
    /// Give it back later with `audit verify --checkpoint FILE` to prove the log
    /// still extends it (catches truncation and rollback).
    Checkpoint(CheckpointArgs),
    /// Delete the events older than the retention (at least 365 days) that a
    /// signed checkpoint covers, leaving a signed prune record where the kept log
    /// starts (what the server's retention round does; unseals the vault).
    ///
    /// PostgreSQL: every node's chain is cut at one signed cluster checkpoint,
    /// once across the cluster (while another node or command prunes, nothing
    /// is done and the exit code is 1), while the nodes keep serving.
    Prune(PruneArgs),
    /// Check the signature of an erasure receipt (JSON file).
    VerifyReceipt(ReceiptArgs),
    /// Evaluate the vault against a compliance policy (PCI DSS 4.0.1 by default)
    /// and write a report (text, json, sarif, junit, html).
    ///
    /// Exit 0 all pass (warnings and attested controls allowed), 100 something
    /// failed, 101 nothing failed but something was skipped, 1 usage or internal error.
    Run(crate::cmd::compliance::RunArgs),
}

/// `--data-dir`, as every command defines it.
pub(crate) use crate::common::DataDirArg as DataDir;

impl DataDir {
    fn db(&self) -> PathBuf {
        self.layout().database()
    }

    fn pubkey(&self, given: Option<&Path>) -> PathBuf {
        given.map_or_else(|| self.layout().audit_public_key(), Path::to_path_buf)
    }
}

/// `audit verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    dir: DataDir,
    /// The audit public key (default DIR/audit-signing.pub; better a copy kept elsewhere).
    #[arg(long, value_name = "FILE")]
    pubkey: Option<PathBuf>,
    /// Checkpoints kept elsewhere: the output of `audit checkpoint`, or a witness
    /// file (`[audit] checkpoint_witness`, one JSON checkpoint per line). The log
    /// must be consistent with every one and extend the newest.
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// Verify this export (written by `audit export`) instead of the vault's
    /// database; needs `--pubkey` (the data directory is not used).
    #[arg(long, value_name = "FILE", requires = "pubkey")]
    export: Option<PathBuf>,
    /// Fail (exit 3) when events have gone unsigned for longer than this, e.g.
    /// `90s`, `5m`, `2h`, `1d` (a plain number is seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    max_unsigned_age: Option<std::time::Duration>,
}

/// Export formats.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
}

/// `audit export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    dir: DataDir,
    /// First event to export (checkpoints and prune records are always all
    /// there; only an export of the whole kept log can be verified alone).
    #[arg(long, value_name = "SEQ", default_value_t = 1)]
    from: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    format: Format,
    /// Write to FILE (created with mode 0600) instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// `audit checkpoint`.
#[derive(Debug, clap::Args)]
pub struct CheckpointArgs {
    #[command(flatten)]
    dir: DataDir,
    /// The audit public key to check the checkpoint with (default DIR/audit-signing.pub).
    #[arg(long, value_name = "FILE")]
    pubkey: Option<PathBuf>,
    /// Also append the checkpoint (as a JSON line) to this witness file.
    #[arg(long, value_name = "FILE")]
    witness: Option<PathBuf>,
    #[command(flatten)]
    secret: crate::common::SecretArgs,
}

/// `audit prune`.
#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Keep events younger than this many days (at least 365, PCI DSS 10.5.1).
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    retention_days: i64,
    #[command(flatten)]
    secret: crate::common::SecretArgs,
}

/// `audit verify-receipt`.
#[derive(Debug, clap::Args)]
pub struct ReceiptArgs {
    /// The receipt (JSON).
    #[arg(value_name = "FILE")]
    receipt: PathBuf,
    #[command(flatten)]
    dir: DataDir,
    /// The audit public key (default DIR/audit-signing.pub).
    #[arg(long, value_name = "FILE")]
    pubkey: Option<PathBuf>,
}

/// Runs the subcommand.
pub fn run(c: Command) -> Result<ExitCode, CliError> {
    match c {
        Command::Verify(a) => verify(&a),
        Command::Export(a) => export(&a),
        Command::Checkpoint(a) => checkpoint(&a),
        Command::Prune(a) => prune(&a),
        Command::VerifyReceipt(a) => verify_receipt(&a),
        Command::Run(a) => crate::cmd::compliance::run(a),
    }
}

fn verify(a: &VerifyArgs) -> Result<ExitCode, CliError> {
    let key = read_pubkey(&a.dir.pubkey(a.pubkey.as_deref()))?;
    // Kept checkpoints: a single log's, or a multi-node log's cluster checkpoints.
    let mut cluster_anchors = None;
    let anchors = match &a.checkpoint {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
            match Checkpoint::parse_many(&text) {
                Ok(anchors) => anchors,
                Err(e) => {
                    cluster_anchors = Some(
                        audit::ClusterCheckpoint::parse_many(&text)
                            .map_err(|_| fail(&format!("{}", path.display()), &e))?,
                    );
                    Vec::new()
                }
            }
        }
        None => Vec::new(),
    };
    let report = match (&a.export, &cluster_anchors) {
        (Some(path), Some(kept)) => {
            let file = File::open(path)
                .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
            export_verified(
                path,
                audit::verify_cluster_export(io::BufReader::new(file), &key, kept),
            )?
        }
        (None, Some(kept)) if let Some(settings) = postgres_of(&a.dir.data_dir)? => {
            verify_postgres(&settings, |r| audit::verify_cluster_export(r, &key, kept))?
        }
        (None, Some(_)) => {
            return Err(CliError::usage(
                "cluster checkpoints anchor a multi-node export: give --export FILE".to_owned(),
            ));
        }
        (Some(path), None) => verify_export(path, &key, &anchors)?,
        (None, None) if let Some(settings) = postgres_of(&a.dir.data_dir)? => {
            verify_postgres(&settings, |r| audit::verify_export(r, &key, &anchors))?
        }
        (None, None) => {
            let conn = audit::open_read_only(&a.dir.db())
                .map_err(|e| fail(&a.dir.db().display().to_string(), &e))?;
            audit::verify_against(&conn, &key, &anchors).map_err(|e| fail("audit verify", &e))?
        }
    };
    let now = time::OffsetDateTime::now_utc();
    print_report(&report, newest(&anchors), now);
    let outcome = match &report.problem {
        None => "intact".to_owned(),
        Some(b) => format!("broken at seq {} ({})", b.seq, b.kind),
    };
    eprintln!(
        "panvault: audit verify by {}: {outcome}, {} checked (read-only: not recorded in the log)",
        crate::common::admin_actor().actor,
        count(report.events, "event")
    );
    if let Some(b) = &report.problem {
        return Err(CliError::with_code(
            format!("audit log broken at {b}"),
            EXIT_BROKEN,
        ));
    }
    if let (Some(max), Some(since)) = (a.max_unsigned_age, report.unsigned_since) {
        let age = now - since;
        if age > max {
            return Err(CliError::with_code(
                format!(
                    "the audit log's tail is unsigned for {}, longer than --max-unsigned-age {}: \
                     {} after checkpoint #{} could be removed without a trace \
                     (is the server running? `panvault audit checkpoint` signs it)",
                    human(age),
                    human_std(max),
                    count(report.unsigned_tail, "event"),
                    report.last_checkpoint.as_ref().map_or(0, |c| c.id),
                ),
                EXIT_BROKEN,
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Verifies an export file; a file that is not a well-formed export fails like
/// a broken log (exit 3), since it may be one that was tampered with.
fn verify_export(
    path: &Path,
    key: &PublicKey,
    anchors: &[Checkpoint],
) -> Result<VerifyReport, CliError> {
    let file = File::open(path).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    export_verified(
        path,
        audit::verify_export(io::BufReader::new(file), key, anchors),
    )
}

/// The outcome of verifying the export at `path`, as the command reports it.
fn export_verified(
    path: &Path,
    verified: Result<VerifyReport, AuditError>,
) -> Result<VerifyReport, CliError> {
    match verified {
        Ok(r) => Ok(r),
        Err(e @ AuditError::BadExport { .. }) => Err(CliError::with_code(
            format!("{}: not a verifiable audit export: {e}", path.display()),
            EXIT_BROKEN,
        )),
        Err(e) => Err(fail(&path.display().to_string(), &e)),
    }
}

/// The newest of the given checkpoints (highest id, then seq).
fn newest(anchors: &[Checkpoint]) -> Option<&Checkpoint> {
    anchors.iter().max_by_key(|c| (c.id, c.seq))
}

/// A duration for people: `42s`, `5m 3s`, `2h 10m`, `3d 4h`.
fn human(d: time::Duration) -> String {
    human_secs(d.whole_seconds().max(0).unsigned_abs())
}

fn human_std(d: std::time::Duration) -> String {
    human_secs(d.as_secs())
}

fn human_secs(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn print_report(r: &VerifyReport, anchor: Option<&Checkpoint>, now: time::OffsetDateTime) {
    let mut out = io::stdout().lock();
    let range = if !r.nodes.is_empty() {
        // A log shared by several nodes: one chain each.
        let heads: Vec<String> = r
            .nodes
            .iter()
            .map(|h| format!("{} {}", h.node, h.seq))
            .collect();
        format!(
            "{} on {} (last seq {})",
            count(r.events, "event"),
            count(u64::try_from(r.nodes.len()).unwrap_or(u64::MAX), "node"),
            heads.join(", ")
        )
    } else if r.events == 0 {
        "no events".to_owned()
    } else {
        format!(
            "{} (seq {}..={})",
            count(r.events, "event"),
            r.first_seq,
            r.last_seq
        )
    };
    let signed = format!(
        "{}, {}",
        count(r.checkpoints, "checkpoint"),
        count(r.prunes, "prune record")
    );
    let _ = if r.is_intact() {
        writeln!(out, "audit log intact: {range}, {signed}")
    } else {
        writeln!(out, "verified before the break: {range}, {signed}")
    };
    if !r.nodes.is_empty() && r.prunes > 0 {
        let _ = writeln!(
            out,
            "each node's events up to its cut in the latest of {} were pruned under the \
             retention policy",
            count(r.prunes, "signed prune record")
        );
    }
    if r.first_seq > 1 {
        let _ = writeln!(
            out,
            "events before seq {} were pruned under the retention policy (signed record)",
            r.first_seq
        );
    }
    if let Some(cp) = &r.last_checkpoint {
        let _ = writeln!(out, "latest checkpoint: #{} at seq {}", cp.id, cp.seq);
    }
    if r.is_intact() && r.unsigned_tail > 0 {
        let age = r
            .unsigned_since
            .map(|t| format!(", the oldest {} old", human(now - t)))
            .unwrap_or_default();
        let after = if r.nodes.is_empty() {
            "the latest checkpoint"
        } else {
            "the latest checkpoint naming their node"
        };
        let _ = writeln!(
            out,
            "unsigned tail: {} after {after}{age}: chained, not yet signed",
            count(r.unsigned_tail, "event")
        );
    }
    if let (Some(a), true) = (anchor, r.is_intact()) {
        let _ = writeln!(
            out,
            "the log extends the newest given checkpoint #{} (seq {})",
            a.id, a.seq
        );
    }
}

/// "1 event", "2 events".
fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The PostgreSQL settings of the vault in `dir`, if its data is there.
fn postgres_of(dir: &Path) -> Result<Option<PgSettings>, CliError> {
    match Location::of(dir) {
        Ok(Location::Postgres(s)) => Ok(Some(s)),
        Ok(Location::Sqlite(_)) => Ok(None),
        Err(e) => Err(CliError::usage(e.to_string())),
    }
}

/// Verifies a PostgreSQL log the documented way: it is written out in the export
/// format (one snapshot) and read by the one verifier as it streams (a pipe to
/// a thread), never held whole. An export that fails part way fails the check.
fn verify_postgres(
    settings: &PgSettings,
    verify: impl FnOnce(io::BufReader<io::PipeReader>) -> Result<VerifyReport, AuditError>,
) -> Result<VerifyReport, CliError> {
    let shown = settings.to_string();
    let mut client = pg::connect(settings).map_err(|e| CliError::usage(format!("{shown}: {e}")))?;
    let (reader, writer) =
        io::pipe().map_err(|e| CliError::usage(format!("cannot make a pipe: {e}")))?;
    let (exported, verified) = std::thread::scope(|s| {
        let exporter =
            s.spawn(move || pg::audit::export_jsonl(&mut client, BufWriter::new(writer)));
        let verified = verify(io::BufReader::new(reader));
        (exporter.join(), verified)
    });
    match exported {
        Ok(Ok(_)) => {}
        // The verifier stopped reading: its own error says why.
        Ok(Err(AuditError::Io(e))) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Ok(Err(e)) => return Err(fail(&format!("exporting the log from {shown}"), &e)),
        Err(_) => return Err(CliError::usage("the export thread panicked")),
    }
    verified.map_err(|e| fail("audit verify", &e))
}

fn export(a: &ExportArgs) -> Result<ExitCode, CliError> {
    let Format::Jsonl = a.format;
    if let Some(settings) = postgres_of(&a.dir.data_dir)? {
        if a.from > 1 {
            return Err(CliError::usage(
                "--from: a log shared by several nodes (PostgreSQL) is exported whole",
            ));
        }
        let shown = settings.to_string();
        let mut client =
            pg::connect(&settings).map_err(|e| CliError::usage(format!("{shown}: {e}")))?;
        let n = match &a.output {
            Some(path) => {
                let file = create_private(path)
                    .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
                pg::audit::export_jsonl(&mut client, BufWriter::new(file))
            }
            None => pg::audit::export_jsonl(&mut client, BufWriter::new(io::stdout().lock())),
        }
        .map_err(|e| fail("audit export", &e))?;
        eprintln!("exported {n} events, with every checkpoint and prune record");
        return Ok(ExitCode::SUCCESS);
    }
    let conn = audit::open_read_only(&a.dir.db())
        .map_err(|e| fail(&a.dir.db().display().to_string(), &e))?;
    let n = match &a.output {
        Some(path) => {
            let file = create_private(path)
                .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
            audit::export_jsonl(&conn, a.from, BufWriter::new(file))
        }
        None => audit::export_jsonl(&conn, a.from, BufWriter::new(io::stdout().lock())),
    }
    .map_err(|e| fail("audit export", &e))?;
    eprintln!("exported {n} events, with every checkpoint and prune record");
    eprintln!(
        "panvault: audit export by {}: {} from seq {} (read-only: not recorded in the log)",
        crate::common::admin_actor().actor,
        count(n, "event"),
        a.from
    );
    Ok(ExitCode::SUCCESS)
}

fn checkpoint(a: &CheckpointArgs) -> Result<ExitCode, CliError> {
    let key = read_pubkey(&a.dir.pubkey(a.pubkey.as_deref()))?;
    let unlock = a.secret.unlock_for(&a.dir.data_dir)?;
    let mut admin =
        panvault_vault::Admin::open(&a.dir.data_dir, &unlock, panvault_vault::system_clock())
            .map_err(crate::common::vault_err)?;
    drop(unlock);
    let cp = admin
        .audit_checkpoint(&crate::common::admin_actor(), a.witness.as_deref())
        .map_err(crate::common::vault_err)?;
    if cp.verify(&key).is_err() {
        return Err(CliError::with_code(
            format!(
                "checkpoint #{} does not verify with the public key {}: the vault's audit key is not the one you hold",
                cp.id(),
                a.dir.pubkey(a.pubkey.as_deref()).display()
            ),
            EXIT_BROKEN,
        ));
    }
    // One line `audit verify --checkpoint` reads back: a cluster checkpoint
    // (PostgreSQL) in its JSON form, which names its signer, id and every
    // node's head.
    let line = cp.to_line().map_err(|e| fail("audit checkpoint", &e))?;
    crate::outln!("{line}");
    if let audit::SignedCheckpoint::Cluster(c) = &cp {
        let heads: Vec<String> = c
            .heads
            .iter()
            .map(|h| format!("{} at seq {}", h.node, h.seq))
            .collect();
        eprintln!(
            "signed cluster checkpoint #{} of node {}: {}",
            c.id,
            c.node,
            heads.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn prune(a: &PruneArgs) -> Result<ExitCode, CliError> {
    if a.retention_days < audit::MIN_RETENTION.whole_days() {
        return Err(CliError::usage(format!(
            "--retention-days {}: at least {} (PCI DSS 10.5.1 keeps a year of audit events)",
            a.retention_days,
            audit::MIN_RETENTION.whole_days()
        )));
    }
    let unlock = a.secret.unlock_for(&a.dir.data_dir)?;
    let mut admin =
        panvault_vault::Admin::open(&a.dir.data_dir, &unlock, panvault_vault::system_clock())
            .map_err(crate::common::vault_err)?;
    drop(unlock);
    let pruned = admin
        .audit_prune(&crate::common::admin_actor(), a.retention_days)
        .map_err(crate::common::vault_err)?;
    if pruned.busy() {
        return Err(CliError::usage(
            "another node or `audit prune` is pruning the audit log now: nothing done (run it again later)",
        ));
    }
    match pruned.describe() {
        Some(d) => crate::outln!("pruned {}: {d}", count(pruned.deleted(), "event")),
        None => crate::outln!(
            "nothing to prune: no event older than {} days is covered by a signed checkpoint",
            a.retention_days
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn verify_receipt(a: &ReceiptArgs) -> Result<ExitCode, CliError> {
    let key = read_pubkey(&a.dir.pubkey(a.pubkey.as_deref()))?;
    let text = std::fs::read_to_string(&a.receipt)
        .map_err(|e| CliError::usage(format!("{}: {e}", a.receipt.display())))?;
    let r = ErasureReceipt::from_json(&text)
        .map_err(|e| fail(&format!("{}", a.receipt.display()), &e))?;
    match audit::verify_receipt(&r, &key) {
        Ok(()) => {
            let node = r
                .audit_node
                .as_ref()
                .map_or_else(String::new, |n| format!(" of node {n}"));
            println!(
                "erasure receipt valid: tenant {}, subject {}, {} tokens erased, audit event seq {}{node}",
                r.tenant, r.subject_hash, r.tokens_erased, r.audit_seq
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(_) => Err(CliError::with_code(
            "erasure receipt does not verify with the audit public key",
            EXIT_BROKEN,
        )),
    }
}

fn read_pubkey(path: &Path) -> Result<PublicKey, CliError> {
    PublicKey::read_from(path)
        .map_err(|e| fail(&format!("audit public key {}", path.display()), &e))
}

/// Creates (or truncates) `path`, readable by its owner only.
fn create_private(path: &Path) -> io::Result<File> {
    panvault_vault::data_dir::create_owner_only(path)
}

/// An audit error as a CLI error (exit 1), with its causes.
fn fail(context: &str, e: &AuditError) -> CliError {
    let mut msg = format!("{context}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    CliError::usage(msg)
}

#[cfg(test)]
mod tests;
