//! Archives: `.gz` streams and zip files (`.zip`, office files), recognised by their
//! magic bytes and opened up to [`MAX_DEPTH`] deep, each member decompressed up to
//! the member cap and the whole archive up to [`ARCHIVE_FACTOR`] times that.

use std::io::{self, Cursor, Read, Seek};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use super::{Worker, read_full, read_head};
use crate::scan::stream::{self, to_u64};

/// One archive is decompressed up to this many times the member cap in all.
pub(super) const ARCHIVE_FACTOR: u64 = 8;
/// How deep archives inside archives are opened.
const MAX_DEPTH: usize = 3;

pub(super) fn is_gzip(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
}

pub(super) fn is_zip(head: &[u8]) -> bool {
    head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06")
}

/// The name of what a `.gz` holds: its own name without `.gz`.
pub(super) fn gz_inner_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    match base.strip_suffix(".gz") {
        Some(stem) if !stem.is_empty() => stem.to_string(),
        _ => match base.strip_suffix(".tgz") {
            Some(stem) if !stem.is_empty() => format!("{stem}.tar"),
            _ => base.to_string(),
        },
    }
}

/// A reader that yields at most `limit` bytes and notes whether more were there.
struct Capped<'r> {
    inner: &'r mut dyn Read,
    left: u64,
    count: u64,
    truncated: bool,
}

impl<'r> Capped<'r> {
    fn new(inner: &'r mut dyn Read, limit: u64) -> Self {
        Capped {
            inner,
            left: limit,
            count: 0,
            truncated: false,
        }
    }
}

impl Read for Capped<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            if !self.truncated {
                let mut probe = [0u8; 1];
                self.truncated = read_full(self.inner, &mut probe)? > 0;
            }
            return Ok(0);
        }
        let n = stream::to_usize(self.left).min(out.len());
        let got = self.inner.read(out.get_mut(..n).unwrap_or(&mut []))?;
        self.left -= to_u64(got);
        self.count += to_u64(got);
        Ok(got)
    }
}

impl Worker<'_> {
    /// Scans one archive member (or what a `.gz` holds), opening nested archives.
    pub(super) fn member(
        &mut self,
        reader: &mut dyn Read,
        path: &Path,
        name: String,
        depth: usize,
        budget: &mut u64,
    ) {
        let limit = self.scanner.member_cap().min(*budget);
        let mut capped = Capped::new(reader, limit);
        let result = self.member_inner(&mut capped, path, &name, depth, budget);
        if let Err(e) = result {
            self.warn(path, Some(&name), e);
        }
        if capped.truncated {
            self.warn(
                path,
                Some(&name),
                format_args!(
                    "more than {limit} bytes decompressed: the rest was skipped (--max-file-size)"
                ),
            );
        }
        *budget = budget.saturating_sub(capped.count);
    }

    fn member_inner(
        &mut self,
        r: &mut Capped<'_>,
        path: &Path,
        name: &str,
        depth: usize,
        budget: &mut u64,
    ) -> io::Result<()> {
        let head = read_head(r)?;
        if depth < MAX_DEPTH && is_gzip(&head) {
            let inner = format!("{name}!{}", gz_inner_name(name));
            let mut gz = MultiGzDecoder::new(Cursor::new(head).chain(r));
            self.stats.members += 1;
            self.member(&mut gz, path, inner, depth + 1, budget);
            return Ok(());
        }
        if depth < MAX_DEPTH && is_zip(&head) {
            let mut data = head;
            r.read_to_end(&mut data)?;
            return match zip::ZipArchive::new(Cursor::new(data)) {
                Ok(archive) => {
                    self.zip(archive, path, Some(name), depth + 1, budget);
                    Ok(())
                }
                Err(e) => Err(io::Error::other(format!("not a readable zip: {e}"))),
            };
        }
        self.text(&head, r, path, Some(name), None)
    }

    /// Scans every member of a zip archive.
    pub(super) fn zip<R: Read + Seek>(
        &mut self,
        mut archive: zip::ZipArchive<R>,
        path: &Path,
        prefix: Option<&str>,
        depth: usize,
        budget: &mut u64,
    ) {
        for i in 0..archive.len() {
            let raw_name = archive.name_for_index(i).unwrap_or("?").to_string();
            let name = match prefix {
                Some(p) => format!("{p}!{raw_name}"),
                None => raw_name,
            };
            if *budget == 0 {
                self.warn(
                    path,
                    Some(&name),
                    "archive decompresses to more than the total cap: the rest was skipped",
                );
                break;
            }
            let mut member = match archive.by_index(i) {
                Ok(m) => m,
                Err(e) => {
                    self.warn(path, Some(&name), e);
                    continue;
                }
            };
            if member.is_dir() {
                continue;
            }
            self.stats.members += 1;
            self.member(&mut member, path, name, depth, budget);
        }
    }
}
