//! Walking the paths, opening archives (in [`archive`]), and spreading files over
//! threads.
//!
//! The walk lists every regular file first (symbolic links below a root are not
//! followed), then the workers take jobs from a shared index, largest first. A plain
//! file over [`SPLIT_MIN`] bytes becomes several jobs of about [`SEGMENT`] bytes,
//! cut just after a line break so that no number can straddle two segments; line
//! numbers are fixed up once every segment is done.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use flate2::read::MultiGzDecoder;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use walkdir::WalkDir;

use self::archive::{ARCHIVE_FACTOR, gz_inner_name, is_gzip, is_zip};
use super::detect::Detector;
use super::stream::{
    self, Chunker, Encoding, HEAD, LEFT, LOOKAHEAD, OffsetMap, Span, Utf16Ascii, to_u64,
};
use super::{Finding, Match, ScanError, ScanOptions, redact};

mod archive;

/// Plain files larger than this are split across threads.
pub(crate) const SPLIT_MIN: u64 = 64 << 20;
/// Size of one segment of a split file.
pub(crate) const SEGMENT: u64 = 32 << 20;
/// Archive members are decompressed up to this size unless `max_file_size` says.
pub(crate) const DEFAULT_MEMBER_CAP: u64 = 1 << 30;
/// How far after a nominal segment boundary a line break is looked for.
const SPLIT_WINDOW: usize = 64 << 10;

/// A file or member that could not be read (or only partly); the scan goes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The file, as reached from the scanned path.
    pub path: String,
    /// The archive member, if the problem is inside an archive.
    pub member: Option<String>,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.member {
            Some(m) => write!(f, "{}!{m}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Counters of one scan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScanStats {
    /// Files opened.
    pub files: u64,
    /// Bytes of those files on disk.
    pub bytes: u64,
    /// Bytes run through the detector (decompressed and decoded).
    pub scanned: u64,
    /// Archive members opened.
    pub members: u64,
}

impl ScanStats {
    fn add(&mut self, o: &ScanStats) {
        self.files += o.files;
        self.bytes += o.bytes;
        self.scanned += o.scanned;
        self.members += o.members;
    }
}

/// What a scan found.
#[derive(Clone, Debug, Default)]
pub struct ScanReport {
    /// Card numbers, sorted by path, member and offset.
    pub findings: Vec<Finding>,
    /// Files and members that could not be read, or only partly.
    pub warnings: Vec<Warning>,
    /// Counters.
    pub stats: ScanStats,
}

impl ScanReport {
    /// Whether any card data was found.
    pub fn found(&self) -> bool {
        !self.findings.is_empty()
    }
}

/// A configured scanner (options checked, exclude globs compiled).
#[derive(Debug)]
pub struct Scanner {
    opts: ScanOptions,
    exclude: GlobSet,
    threads: usize,
    split_min: u64,
    segment: u64,
}

/// Part of a file a job covers.
#[derive(Clone, Copy, Debug)]
enum Part {
    Whole,
    /// Segment `index` of a split file, nominally `start..end`.
    Segment {
        index: usize,
        start: u64,
        end: u64,
    },
}

#[derive(Debug)]
struct Job {
    path: PathBuf,
    size: u64,
    part: Part,
}

impl Job {
    /// Expected work, to start the longest jobs first: compressed files cost
    /// several times their size on disk.
    fn weight(&self) -> u64 {
        match self.part {
            Part::Whole if likely_compressed(&self.path) => self.size.saturating_mul(6),
            Part::Whole => self.size,
            Part::Segment { start, end, .. } => end - start,
        }
    }
}

/// Whether a file's name says it is compressed (only used for scheduling: the
/// content decides how it is read).
fn likely_compressed(path: &Path) -> bool {
    const EXTENSIONS: &[&str] = &[
        "gz", "tgz", "zip", "jar", "docx", "xlsx", "pptx", "odt", "ods", "odp",
    ];
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// The findings of one segment, before line numbers are fixed.
#[derive(Debug)]
struct SegmentResult {
    path: PathBuf,
    index: usize,
    newlines: u64,
    resume: u64,
    findings: Vec<Finding>,
}

/// One worker thread's state and results.
#[derive(Debug)]
struct Worker<'s> {
    scanner: &'s Scanner,
    chunker: Chunker,
    findings: Vec<Finding>,
    warnings: Vec<Warning>,
    segments: Vec<SegmentResult>,
    stats: ScanStats,
}

fn display(path: &Path) -> String {
    redact(&path.to_string_lossy())
}

/// Reads until `buf` is full or the stream ends; the count.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while let Some(dst) = buf.get_mut(n..) {
        if dst.is_empty() {
            break;
        }
        match r.read(dst) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The first [`HEAD`] bytes of a stream.
fn read_head(r: &mut dyn Read) -> io::Result<Vec<u8>> {
    let mut head = vec![0; HEAD];
    let n = read_full(r, &mut head)?;
    head.truncate(n);
    Ok(head)
}

/// Where a segment boundary nominally at `nominal` really falls: just after the
/// first line break there that is not followed by a digit (so that no number, even
/// joined across lines, spans it). Both neighbours compute the same point.
fn split_point(file: &mut File, nominal: u64, size: u64) -> io::Result<u64> {
    if nominal == 0 || nominal >= size {
        return Ok(nominal.min(size));
    }
    file.seek(SeekFrom::Start(nominal))?;
    let mut window = vec![0u8; SPLIT_WINDOW];
    let n = read_full(file, &mut window)?;
    let window = window.get(..n).unwrap_or(&[]);
    for k in memchr::memchr_iter(b'\n', window) {
        let at = nominal + to_u64(k) + 1;
        match window.get(k + 1) {
            Some(b) if b.is_ascii_digit() => {}
            Some(_) => return Ok(at),
            None if at >= size => return Ok(size),
            None => {}
        }
    }
    Ok(nominal)
}

impl Scanner {
    /// Checks the options and compiles the exclude patterns.
    pub fn new(opts: ScanOptions) -> Result<Scanner, ScanError> {
        let mut set = GlobSetBuilder::new();
        for pattern in &opts.exclude {
            let glob = GlobBuilder::new(pattern)
                .literal_separator(false)
                .build()
                .map_err(|e| ScanError::Exclude {
                    pattern: pattern.clone(),
                    reason: e.kind().to_string(),
                })?;
            set.add(glob);
        }
        let exclude = set.build().map_err(|e| ScanError::Exclude {
            pattern: opts.exclude.join(" "),
            reason: e.kind().to_string(),
        })?;
        let threads = if opts.threads == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            opts.threads
        };
        Ok(Scanner {
            opts,
            exclude,
            threads,
            split_min: SPLIT_MIN,
            segment: SEGMENT,
        })
    }

    /// Smaller split sizes, for tests.
    #[cfg(test)]
    fn with_split(mut self, split_min: u64, segment: u64) -> Self {
        self.split_min = split_min;
        self.segment = segment;
        self
    }

    fn member_cap(&self) -> u64 {
        self.opts.max_file_size.unwrap_or(DEFAULT_MEMBER_CAP)
    }

    fn excluded(&self, root: &Path, path: &Path) -> bool {
        if self.exclude.is_empty() {
            return false;
        }
        self.exclude.is_match(path)
            || path
                .strip_prefix(root)
                .is_ok_and(|rel| self.exclude.is_match(rel))
            || path
                .file_name()
                .is_some_and(|name| self.exclude.is_match(name))
    }

    /// Scans files and directories. Fails only if a path given does not exist or
    /// cannot be read at all; files that cannot be read are [`Warning`]s.
    pub fn scan<P: AsRef<Path>>(&self, roots: &[P]) -> Result<ScanReport, ScanError> {
        for root in roots {
            let root = root.as_ref();
            std::fs::metadata(root).map_err(|e| ScanError::Root {
                path: PathBuf::from(display(root)),
                reason: e.to_string(),
            })?;
        }
        let mut warnings = Vec::new();
        let mut jobs = Vec::new();
        for root in roots {
            self.collect(root.as_ref(), &mut jobs, &mut warnings);
        }
        jobs.sort_by_key(|j| std::cmp::Reverse(j.weight()));

        let next = AtomicUsize::new(0);
        let workers = self.threads.clamp(1, jobs.len().max(1));
        let results: Vec<Worker<'_>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| {
                        let mut w = Worker::new(self);
                        while let Some(job) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                            w.run(job);
                        }
                        w
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        let mut report = ScanReport {
            warnings,
            ..ScanReport::default()
        };
        let mut segments = Vec::new();
        for w in results {
            report.findings.extend(w.findings);
            report.warnings.extend(w.warnings);
            segments.extend(w.segments);
            report.stats.add(&w.stats);
        }
        report.findings.extend(merge_segments(segments));
        report
            .findings
            .sort_by(|a, b| (&a.path, &a.member, a.offset).cmp(&(&b.path, &b.member, b.offset)));
        report
            .warnings
            .sort_by(|a, b| (&a.path, &a.member).cmp(&(&b.path, &b.member)));
        Ok(report)
    }

    /// Lists the jobs under `root`.
    fn collect(&self, root: &Path, jobs: &mut Vec<Job>, warnings: &mut Vec<Warning>) {
        let walk = WalkDir::new(root)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !self.excluded(root, e.path()));
        for entry in walk {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    warnings.push(Warning {
                        path: display(e.path().unwrap_or(root)),
                        member: None,
                        message: e
                            .io_error()
                            .map_or_else(|| e.to_string(), ToString::to_string),
                    });
                    continue;
                }
            };
            if !entry.file_type().is_file() {
                continue;
            }
            let size = match entry.metadata() {
                Ok(m) => m.len(),
                Err(e) => {
                    warnings.push(Warning {
                        path: display(entry.path()),
                        member: None,
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            let path = entry.into_path();
            if size > self.split_min && self.splittable(&path) {
                let count = size.div_ceil(self.segment);
                for index in 0..count {
                    jobs.push(Job {
                        path: path.clone(),
                        size,
                        part: Part::Segment {
                            index: stream::to_usize(index),
                            start: index * self.segment,
                            end: ((index + 1) * self.segment).min(size),
                        },
                    });
                }
            } else {
                jobs.push(Job {
                    path,
                    size,
                    part: Part::Whole,
                });
            }
        }
    }

    /// Whether a large file is plain bytes (not an archive, not UTF-16) and under
    /// the size cap, so that it can be split.
    fn splittable(&self, path: &Path) -> bool {
        if self.opts.max_file_size.is_some() {
            return false;
        }
        let head = File::open(path).and_then(|mut f| read_head(&mut f));
        head.is_ok_and(|h| !is_gzip(&h) && !is_zip(&h) && stream::sniff(&h) == Encoding::Bytes)
    }
}

/// Fixes the line numbers of split files and drops what a segment found inside
/// data its predecessor had already consumed (a track running over the boundary).
fn merge_segments(mut segments: Vec<SegmentResult>) -> Vec<Finding> {
    segments.sort_by(|a, b| (&a.path, a.index).cmp(&(&b.path, b.index)));
    let mut by_path: BTreeMap<PathBuf, Vec<SegmentResult>> = BTreeMap::new();
    for s in segments {
        by_path.entry(s.path.clone()).or_default().push(s);
    }
    let mut out = Vec::new();
    for (_, segs) in by_path {
        let mut lines_before = 0u64;
        let mut consumed = 0u64;
        for s in segs {
            for mut f in s.findings {
                if f.offset < consumed {
                    continue;
                }
                f.line += lines_before;
                out.push(f);
            }
            lines_before += s.newlines;
            consumed = consumed.max(s.resume);
        }
    }
    out
}

impl<'s> Worker<'s> {
    fn new(scanner: &'s Scanner) -> Self {
        Worker {
            scanner,
            chunker: Chunker::new(Detector {
                join_lines: scanner.opts.join_lines,
            }),
            findings: Vec::new(),
            warnings: Vec::new(),
            segments: Vec::new(),
            stats: ScanStats::default(),
        }
    }

    fn warn(&mut self, path: &Path, member: Option<&str>, message: impl fmt::Display) {
        self.warnings.push(Warning {
            path: display(path),
            member: member.map(redact),
            message: message.to_string(),
        });
    }

    fn run(&mut self, job: &Job) {
        let result = match job.part {
            Part::Whole => self.whole(job),
            Part::Segment { index, start, end } => self.segment(job, index, start, end),
        };
        if let Err(e) = result {
            self.warn(&job.path, None, e);
        }
    }

    /// Scans a whole file: an archive, or text.
    fn whole(&mut self, job: &Job) -> io::Result<()> {
        let path = &job.path;
        let mut file = File::open(path)?;
        let head = read_head(&mut file)?;
        self.stats.files += 1;
        self.stats.bytes += job.size;
        let member_cap = self.scanner.member_cap();
        let mut budget = member_cap.saturating_mul(ARCHIVE_FACTOR);
        if is_gzip(&head) {
            file.seek(SeekFrom::Start(0))?;
            let name = gz_inner_name(&path.to_string_lossy());
            let mut gz = MultiGzDecoder::new(BufReader::with_capacity(1 << 16, file));
            self.stats.members += 1;
            self.member(&mut gz, path, name, 1, &mut budget);
            return Ok(());
        }
        if is_zip(&head) {
            file.seek(SeekFrom::Start(0))?;
            match zip::ZipArchive::new(BufReader::with_capacity(1 << 16, file)) {
                Ok(archive) => {
                    self.zip(archive, path, None, 1, &mut budget);
                    return Ok(());
                }
                Err(e) => {
                    // Damaged archive: say so, and scan its bytes as they are.
                    self.warn(
                        path,
                        None,
                        format_args!("not a readable zip ({e}): scanned as plain bytes"),
                    );
                    let mut file = File::open(path)?;
                    let head = read_head(&mut file)?;
                    return self.text(
                        &head,
                        &mut file,
                        path,
                        None,
                        self.scanner.opts.max_file_size,
                    );
                }
            }
        }
        self.text(
            &head,
            &mut file,
            path,
            None,
            self.scanner.opts.max_file_size,
        )
    }

    /// Scans a segment of a large plain file.
    fn segment(&mut self, job: &Job, index: usize, start: u64, end: u64) -> io::Result<()> {
        let mut file = File::open(&job.path)?;
        let from = split_point(&mut file, start, job.size)?;
        let to = split_point(&mut file, end, job.size)?;
        if index == 0 {
            self.stats.files += 1;
        }
        self.stats.bytes += end - start;
        let base = from.saturating_sub(to_u64(LEFT));
        file.seek(SeekFrom::Start(base))?;
        let mut reader = (&mut file).take(to.saturating_add(to_u64(LOOKAHEAD)) - base);
        let span = Span { base, from, to };
        let path_text = display(&job.path);
        let mut findings = Vec::new();
        let outcome = self
            .chunker
            .run(&mut reader, span, OffsetMap::IDENTITY, &mut |m| {
                findings.push(finding(&path_text, None, m));
            })?;
        self.stats.scanned += to.saturating_sub(from);
        self.segments.push(SegmentResult {
            path: job.path.clone(),
            index,
            newlines: outcome.newlines,
            resume: outcome.resume,
            findings,
        });
        Ok(())
    }

    /// Scans a stream of text: `head` followed by `rest`, decoded if UTF-16.
    fn text(
        &mut self,
        head: &[u8],
        rest: &mut dyn Read,
        path: &Path,
        member: Option<&str>,
        cap: Option<u64>,
    ) -> io::Result<()> {
        let path_text = display(path);
        let member_text = member.map(redact);
        let findings = &mut self.findings;
        let mut found = |m: Match| findings.push(finding(&path_text, member_text.as_deref(), m));
        let mut capped_rest;
        let rest: &mut dyn Read = match cap {
            Some(limit) => {
                capped_rest = rest.take(limit.saturating_sub(to_u64(head.len())));
                &mut capped_rest
            }
            None => rest,
        };
        let outcome = match stream::sniff(head) {
            Encoding::Bytes => {
                let mut reader = Cursor::new(head).chain(rest);
                self.chunker
                    .run(&mut reader, Span::ALL, OffsetMap::IDENTITY, &mut found)?
            }
            Encoding::Utf16 { big_endian, bom } => {
                let skip = if bom { 2 } else { 0 };
                let body = head.get(skip..).unwrap_or(&[]);
                let mut reader = Utf16Ascii::new(Cursor::new(body).chain(rest), big_endian);
                let map = OffsetMap {
                    base: to_u64(skip),
                    scale: 2,
                };
                self.chunker.run(&mut reader, Span::ALL, map, &mut found)?
            }
        };
        self.stats.scanned += outcome.bytes;
        if let (Some(limit), None) = (cap, member)
            && std::fs::metadata(path).is_ok_and(|m| m.len() > limit)
        {
            self.warn(
                path,
                None,
                format_args!("larger than {limit} bytes: scanned only the start (--max-file-size)"),
            );
        }
        Ok(())
    }
}

/// A finding from a match in a file.
fn finding(path: &str, member: Option<&str>, m: Match) -> Finding {
    Finding {
        path: path.to_string(),
        member: member.map(str::to_string),
        line: m.line,
        column: m.column,
        offset: m.offset,
        brand: m.brand,
        masked: m.masked,
        length: m.length,
        kind: m.kind,
        test_card: m.test_card,
    }
}

#[cfg(test)]
mod tests;
