//! `panvault scan PATH...`: finds card numbers and magnetic-stripe data left in
//! files and archives. Exit 0 when nothing is found, 100 when something is, 1 on
//! error; unreadable files are reported on stderr and do not stop the scan.
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use panvault_audit::scan::{
    ScanOptions, Scanner, parse_size, write_jsonl, write_sarif, write_text,
};

use crate::common::CliError;

/// Exit code when card data was found.
pub const FOUND: u8 = 100;

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `path[!member]:line:column: kind brand masked`, one line per finding.
    Text,
    /// One JSON object per finding and line.
    Jsonl,
    /// SARIF 2.1.0 (code-scanning dashboards).
    Sarif,
}

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files and directories to scan (every file, ignore files are not honoured).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Worker threads [default: one per core].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Leave out paths matching GLOB (whole path, path below PATH, or file name;
    /// a matching directory is not entered). Repeatable.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Scan at most SIZE bytes per file and per decompressed archive member
    /// (K, M, G suffixes: powers of 1024) [default: whole files; 1G per member].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_file_size: Option<u64>,
    /// Also find numbers broken by a line break.
    #[arg(long)]
    pub join_lines: bool,
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    if args.threads == Some(0) {
        return Err(CliError::usage("--threads must be at least 1"));
    }
    let mut opts = ScanOptions::default();
    opts.threads = args.threads.unwrap_or(0);
    opts.exclude = args.exclude;
    opts.max_file_size = args.max_file_size;
    opts.join_lines = args.join_lines;
    let scanner = Scanner::new(opts).map_err(|e| CliError::usage(e.to_string()))?;
    let report = scanner
        .scan(&args.paths)
        .map_err(|e| CliError::usage(e.to_string()))?;

    for w in &report.warnings {
        eprintln!("panvault: warning: {w}");
    }
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let written = match args.format {
        Format::Text => write_text(&mut out, &report.findings),
        Format::Jsonl => write_jsonl(&mut out, &report.findings),
        Format::Sarif => write_sarif(&mut out, &report.findings, env!("CARGO_PKG_VERSION")),
    };
    written
        .and_then(|()| out.flush())
        .map_err(|e| CliError::usage(format!("writing the report: {e}")))?;
    if args.format == Format::Text {
        let s = report.stats;
        eprintln!(
            "panvault: scanned {} files ({} bytes on disk, {} bytes of text, {} archive members): {} findings, {} warnings",
            s.files,
            s.bytes,
            s.scanned,
            s.members,
            report.findings.len(),
            report.warnings.len()
        );
    }
    Ok(if report.found() {
        ExitCode::from(FOUND)
    } else {
        ExitCode::SUCCESS
    })
}
