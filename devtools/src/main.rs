//! `panvault-dev`: developer tools, not shipped with panvault. `corpus` writes a
//! labelled test corpus for the PAN scanner; `score` measures a scan of it.
//!
//! ```text
//! panvault-dev corpus --out /tmp/pvc --size 600M --seed 1
//! panvault scan /tmp/pvc/files --format jsonl --threads 2 > /tmp/pvc/findings.jsonl
//! panvault-dev score --corpus /tmp/pvc --findings /tmp/pvc/findings.jsonl
//! ```
#![forbid(unsafe_code)]
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use panvault_audit::scan::{Finding, parse_size};
use panvault_dev::corpus::{self, CorpusSpec, Manifest};

/// panvault-dev: developer tools of panvault (test corpora for the PAN scanner).
#[derive(Debug, Parser)]
#[command(name = "panvault-dev", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Write a labelled corpus for the PAN scanner: DIR/files/… and DIR/manifest.jsonl.
    Corpus(CorpusArgs),
    /// Score scanner findings (JSON lines) against a corpus manifest.
    Score(ScoreArgs),
}

/// Arguments of `corpus`.
#[derive(Debug, clap::Args)]
struct CorpusArgs {
    /// Directory to write (created if needed).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Approximate size on disk (K, M, G suffixes).
    #[arg(long, value_name = "SIZE", default_value = "600M", value_parser = parse_size)]
    size: u64,
    /// Seed: the same seed and sizes give the same corpus.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Typical size of one text file.
    #[arg(long, value_name = "SIZE", default_value = "4M", value_parser = parse_size)]
    file_size: u64,
    /// Threads writing files [default: one per core].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

/// Arguments of `score`.
#[derive(Debug, clap::Args)]
struct ScoreArgs {
    /// The corpus directory (holds manifest.jsonl and files/).
    #[arg(long, value_name = "DIR")]
    corpus: PathBuf,
    /// Findings of `panvault scan DIR/files --format jsonl` (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    findings: PathBuf,
    /// The scan ran with --join-lines (line-broken cards are then expected).
    #[arg(long)]
    join_lines: bool,
    /// Exit 1 if precision is lower.
    #[arg(long, value_name = "RATIO")]
    min_precision: Option<f64>,
    /// Exit 1 if recall is lower.
    #[arg(long, value_name = "RATIO")]
    min_recall: Option<f64>,
}

/// An error the tool ends with: printed on stderr, exit code 1.
#[derive(Debug)]
struct Failure(String);

impl Failure {
    fn new(message: impl Into<String>) -> Self {
        Failure(message.into())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Corpus(args) => corpus_cmd(args),
        Command::Score(args) => score_cmd(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("panvault-dev: {}", e.0);
            ExitCode::FAILURE
        }
    }
}

fn corpus_cmd(args: CorpusArgs) -> Result<ExitCode, Failure> {
    let mut spec = CorpusSpec::new(args.size, args.seed);
    spec.file_size = args.file_size;
    spec.threads = args.threads.unwrap_or(0);
    let started = Instant::now();
    let manifest = corpus::generate(&args.out, &spec)
        .map_err(|e| Failure::new(format!("writing the corpus to {}: {e}", args.out.display())))?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "wrote {} files, {} bytes ({:.1} MiB) to {} in {:.1}s: {} cards ({} only with --join-lines), {} decoys; manifest {}",
        manifest.files,
        manifest.bytes,
        manifest.bytes as f64 / f64::from(1u32 << 20),
        args.out.join("files").display(),
        started.elapsed().as_secs_f64(),
        manifest.cards(true),
        manifest.cards(true) - manifest.cards(false),
        manifest.decoys(),
        args.out.join("manifest.jsonl").display()
    )
    .map_err(|e| Failure::new(format!("writing the summary: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

fn read_findings(path: &PathBuf) -> io::Result<Vec<Finding>> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(BufReader::new(io::stdin().lock()))
    } else {
        Box::new(BufReader::new(File::open(path)?))
    };
    let mut out = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let f: Finding = serde_json::from_str(&line).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("line {}: {e}", n + 1))
        })?;
        out.push(f);
    }
    Ok(out)
}

fn score_cmd(args: ScoreArgs) -> Result<ExitCode, Failure> {
    let manifest_path = args.corpus.join("manifest.jsonl");
    let manifest = Manifest::read(&manifest_path)
        .map_err(|e| Failure::new(format!("reading {}: {e}", manifest_path.display())))?;
    let findings = read_findings(&args.findings)
        .map_err(|e| Failure::new(format!("reading {}: {e}", args.findings.display())))?;
    let root = args.corpus.join("files");
    let score = corpus::score(&manifest, &findings, &root, args.join_lines);
    let mut out = io::stdout().lock();
    write!(out, "{score}")
        .and_then(|()| out.flush())
        .map_err(|e| Failure::new(format!("writing the score: {e}")))?;
    let low_precision = args.min_precision.is_some_and(|m| score.precision() < m);
    let low_recall = args.min_recall.is_some_and(|m| score.recall() < m);
    if low_precision || low_recall {
        return Err(Failure::new(format!(
            "below target: precision {:.4}, recall {:.4}",
            score.precision(),
            score.recall()
        )));
    }
    Ok(ExitCode::SUCCESS)
}
