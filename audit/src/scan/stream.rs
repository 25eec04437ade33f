//! Runs the detector over a reader in chunks of one reused buffer, decoding UTF-16
//! on the way and turning buffer positions into offsets, lines and columns.
//!
//! Each chunk keeps [`LEFT`] bytes before the resume point (the left boundary of a
//! number) and stops starting candidates [`LOOKAHEAD`] bytes before its end (so a
//! candidate never runs off a chunk that is not the last).

use std::io::{self, Read};

use super::Match;
use super::detect::{Detector, RawHit};

/// Bytes read per chunk.
pub(crate) const CHUNK: usize = 1 << 20;
/// Bytes of left context kept from the previous chunk.
pub(crate) const LEFT: usize = 256;
/// Bytes after the last candidate start a chunk must hold (longest track, chain,
/// base64 look-around).
pub(crate) const LOOKAHEAD: usize = 1024;
/// How much of a stream is sniffed for its encoding.
pub(crate) const HEAD: usize = 4096;

/// `usize` to `u64` (lossless on every supported target).
pub(crate) fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// `u64` to `usize`, saturating.
pub(crate) fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// How positions in the decoded stream map to offsets in the original bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffsetMap {
    /// Original offset of decoded position 0 (a BOM's length).
    pub base: u64,
    /// Original bytes per decoded byte (2 for UTF-16).
    pub scale: u64,
}

impl OffsetMap {
    /// Decoded bytes are the original bytes.
    pub(crate) const IDENTITY: OffsetMap = OffsetMap { base: 0, scale: 1 };

    fn apply(self, pos: u64) -> u64 {
        self.base.saturating_add(self.scale.saturating_mul(pos))
    }
}

/// The text encoding of a stream, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// ASCII-compatible bytes (ASCII, UTF-8, Latin-1, binary): scanned as they are.
    Bytes,
    /// UTF-16: scanned after mapping each code unit to one byte.
    Utf16 {
        /// Big-endian (else little-endian).
        big_endian: bool,
        /// Whether the stream starts with a byte-order mark (2 bytes).
        bom: bool,
    },
}

/// Finds the encoding from a stream's first bytes: a UTF-16 byte-order mark, or
/// text whose every other byte is NUL (ASCII in UTF-16 without a BOM).
pub(crate) fn sniff(head: &[u8]) -> Encoding {
    match head {
        [0xFF, 0xFE, 0, 0, ..] => return Encoding::Bytes, // UTF-32LE: not handled
        [0xFF, 0xFE, ..] => {
            return Encoding::Utf16 {
                big_endian: false,
                bom: true,
            };
        }
        [0xFE, 0xFF, ..] => {
            return Encoding::Utf16 {
                big_endian: true,
                bom: true,
            };
        }
        _ => {}
    }
    let sample = head.get(..HEAD).unwrap_or(head);
    let pairs = sample.len() / 2;
    if pairs < 16 {
        return Encoding::Bytes;
    }
    let (mut even, mut odd) = (0usize, 0usize);
    for pair in sample.chunks_exact(2) {
        if let [a, b] = pair {
            even += usize::from(*a == 0);
            odd += usize::from(*b == 0);
        }
    }
    let mostly = |n: usize| n * 10 >= pairs * 4;
    let rarely = |n: usize| n * 20 <= pairs;
    if mostly(odd) && rarely(even) {
        Encoding::Utf16 {
            big_endian: false,
            bom: false,
        }
    } else if mostly(even) && rarely(odd) {
        Encoding::Utf16 {
            big_endian: true,
            bom: false,
        }
    } else {
        Encoding::Bytes
    }
}

/// Maps a UTF-16 code unit to the byte the detector sees: ASCII as itself, a
/// decimal digit of another script (full-width, Arabic-Indic, …) as its ASCII
/// digit, anything else as 0xFF (neither a digit nor a word byte).
fn unit_byte(unit: u16) -> u8 {
    if let Some(b) = u8::try_from(unit).ok().filter(u8::is_ascii) {
        return b;
    }
    char::from_u32(u32::from(unit))
        .and_then(crate::card::digit_value)
        .map_or(0xFF, |d| b'0' + d)
}

/// A reader that turns UTF-16 into one byte per code unit (see [`unit_byte`]), so
/// decoded position `p` is original offset `bom + 2p`.
pub(crate) struct Utf16Ascii<R> {
    inner: R,
    big_endian: bool,
    raw: Vec<u8>,
    carry: Option<u8>,
}

impl<R: Read> Utf16Ascii<R> {
    pub(crate) fn new(inner: R, big_endian: bool) -> Self {
        Utf16Ascii {
            inner,
            big_endian,
            raw: vec![0; 1 << 16],
            carry: None,
        }
    }
}

impl<R: Read> Read for Utf16Ascii<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let want = out.len().saturating_mul(2).min(self.raw.len());
        loop {
            let mut have = 0;
            if let Some(b) = self.carry.take()
                && let Some(slot) = self.raw.first_mut()
            {
                *slot = b;
                have = 1;
            }
            let n = match self.raw.get_mut(have..want) {
                Some(dst) => match self.inner.read(dst) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                        self.carry = (have == 1).then(|| self.raw.first().copied()).flatten();
                        continue;
                    }
                    Err(e) => return Err(e),
                },
                None => 0,
            };
            if n == 0 {
                return Ok(0); // a dangling odd byte at the end is dropped
            }
            let total = have + n;
            if total % 2 == 1 {
                self.carry = self.raw.get(total - 1).copied();
            }
            let pairs = total / 2;
            if pairs == 0 {
                continue;
            }
            let raw = self.raw.get(..pairs * 2).unwrap_or(&[]);
            for (o, pair) in out.iter_mut().zip(raw.chunks_exact(2)) {
                let bytes = [
                    pair.first().copied().unwrap_or(0),
                    pair.get(1).copied().unwrap_or(0),
                ];
                let unit = if self.big_endian {
                    u16::from_be_bytes(bytes)
                } else {
                    u16::from_le_bytes(bytes)
                };
                *o = unit_byte(unit);
            }
            return Ok(pairs.min(out.len()));
        }
    }
}

/// Which part of a stream to scan, in decoded positions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    /// Position of the reader's first byte.
    pub base: u64,
    /// First position at which a number may start (bytes before are context).
    pub from: u64,
    /// Numbers must start before this position.
    pub to: u64,
}

impl Span {
    /// The whole stream.
    pub(crate) const ALL: Span = Span {
        base: 0,
        from: 0,
        to: u64::MAX,
    };
}

/// What a run over a stream saw.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Outcome {
    /// Decoded bytes read.
    pub bytes: u64,
    /// Line breaks in `from..to` (for segments: to number the next one's lines).
    pub newlines: u64,
    /// Where a scan of the following bytes would resume.
    pub resume: u64,
}

/// Counts lines incrementally, in decoded positions, and the characters (Unicode
/// code points, as SARIF's `columnKind: unicodeCodePoints` says) since the last
/// line break, so a column is a character count, not a byte count.
#[derive(Debug)]
struct Lines {
    upto: u64,
    count: u64,
    /// Characters between the last line break before `upto` and `upto`.
    chars: u64,
}

/// Characters in UTF-8 `bytes`: every byte but continuation bytes (a byte that is
/// not UTF-8 counts as one character).
fn chars_in(bytes: &[u8]) -> u64 {
    to_u64(bytes.iter().filter(|b| (**b & 0xC0) != 0x80).count())
}

impl Lines {
    fn new(from: u64) -> Self {
        Lines {
            upto: from,
            count: 0,
            chars: 0,
        }
    }

    /// Counts the line breaks up to position `to`; `data` starts at `data_pos`.
    fn advance(&mut self, data: &[u8], data_pos: u64, to: u64) {
        if to <= self.upto {
            return;
        }
        let a = to_usize(self.upto.saturating_sub(data_pos));
        let b = to_usize(to.saturating_sub(data_pos)).min(data.len());
        if let Some(slice) = data.get(a..b) {
            self.count += to_u64(memchr::memchr_iter(b'\n', slice).count());
            match memchr::memrchr(b'\n', slice) {
                Some(p) => self.chars = chars_in(slice.get(p + 1..).unwrap_or_default()),
                None => self.chars += chars_in(slice),
            }
        }
        self.upto = to;
    }

    /// Line and column (from 1, in characters) of position `pos`.
    fn at(&mut self, data: &[u8], data_pos: u64, pos: u64) -> (u64, u64) {
        self.advance(data, data_pos, pos);
        (self.count + 1, self.chars + 1)
    }
}

fn to_match(h: RawHit, offset: u64, line: u64, column: u64) -> Match {
    Match {
        offset,
        line,
        column,
        brand: h.brand,
        masked: h.masked,
        length: h.digits,
        kind: h.kind,
        test_card: h.test_card,
    }
}

/// One thread's scanner: the detector and a reused chunk buffer.
#[derive(Debug)]
pub(crate) struct Chunker {
    det: Detector,
    buf: Vec<u8>,
    hits: Vec<RawHit>,
}

impl Chunker {
    pub(crate) fn new(det: Detector) -> Self {
        Chunker {
            det,
            buf: Vec::new(),
            hits: Vec::new(),
        }
    }

    /// Scans `reader` (decoded bytes), calling `found` for each number in `span`.
    pub(crate) fn run(
        &mut self,
        reader: &mut dyn Read,
        span: Span,
        map: OffsetMap,
        found: &mut dyn FnMut(Match),
    ) -> io::Result<Outcome> {
        let cap = LEFT + CHUNK + LOOKAHEAD;
        if self.buf.len() != cap {
            self.buf = vec![0; cap];
        }
        let mut filled = 0usize;
        let mut buf_pos = span.base;
        let mut pos = to_usize(span.from.saturating_sub(span.base));
        let mut eof = false;
        let mut out = Outcome::default();
        let mut lines = Lines::new(span.from);
        loop {
            while filled < cap && !eof {
                let Some(dst) = self.buf.get_mut(filled..) else {
                    break;
                };
                match reader.read(dst) {
                    Ok(0) => eof = true,
                    Ok(n) => {
                        filled += n;
                        out.bytes += to_u64(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            let data = self.buf.get(..filled).unwrap_or(&[]);
            let to_rel = to_usize(span.to.saturating_sub(buf_pos));
            let mut stop = if eof {
                filled
            } else {
                filled.saturating_sub(LOOKAHEAD)
            };
            let last = eof || to_rel <= stop;
            stop = stop.min(to_rel);
            self.hits.clear();
            let resume = if pos < stop {
                self.det.scan(data, pos, stop, &mut self.hits)
            } else {
                pos
            };
            for h in self.hits.drain(..) {
                let at = buf_pos + to_u64(h.start);
                let (line, column) = lines.at(data, buf_pos, at);
                found(to_match(h, map.apply(at), line, column));
            }
            if last {
                let end = span.to.min(buf_pos + to_u64(filled));
                lines.advance(data, buf_pos, end);
                out.newlines = lines.count;
                out.resume = buf_pos + to_u64(resume);
                return Ok(out);
            }
            let keep_from = resume.min(filled).saturating_sub(LEFT);
            lines.advance(data, buf_pos, buf_pos + to_u64(keep_from));
            self.buf.copy_within(keep_from..filled, 0);
            filled -= keep_from;
            buf_pos += to_u64(keep_from);
            pos = resume - keep_from;
        }
    }
}

/// Scans a buffer held in memory (see [`super::scan_bytes`]).
pub(crate) fn scan_buffer(data: &[u8], join_lines: bool) -> Vec<Match> {
    let det = Detector { join_lines };
    match sniff(data) {
        Encoding::Bytes => {
            let mut hits = Vec::new();
            det.scan(data, 0, data.len(), &mut hits);
            let mut lines = Lines::new(0);
            hits.into_iter()
                .map(|h| {
                    let at = to_u64(h.start);
                    let (line, column) = lines.at(data, 0, at);
                    to_match(h, at, line, column)
                })
                .collect()
        }
        Encoding::Utf16 { big_endian, bom } => {
            let skip = if bom { 2 } else { 0 };
            let body = data.get(skip..).unwrap_or(&[]);
            let decoded: Vec<u8> = body
                .chunks_exact(2)
                .map(|p| {
                    let bytes = [
                        p.first().copied().unwrap_or(0),
                        p.get(1).copied().unwrap_or(0),
                    ];
                    unit_byte(if big_endian {
                        u16::from_be_bytes(bytes)
                    } else {
                        u16::from_le_bytes(bytes)
                    })
                })
                .collect();
            let map = OffsetMap {
                base: to_u64(skip),
                scale: 2,
            };
            let mut hits = Vec::new();
            det.scan(&decoded, 0, decoded.len(), &mut hits);
            let mut lines = Lines::new(0);
            hits.into_iter()
                .map(|h| {
                    let at = to_u64(h.start);
                    let (line, column) = lines.at(&decoded, 0, at);
                    to_match(h, map.apply(at), line, column)
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(text: &str, big_endian: bool, bom: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if bom {
            out.extend(if big_endian {
                [0xFE, 0xFF]
            } else {
                [0xFF, 0xFE]
            });
        }
        for u in text.encode_utf16() {
            out.extend(if big_endian {
                u.to_be_bytes()
            } else {
                u.to_le_bytes()
            });
        }
        out
    }

    #[test]
    fn sniffs_utf16() {
        let text = "name,card\nJoe,4242424242424242\nAnn,5555555555554444\n";
        assert_eq!(sniff(text.as_bytes()), Encoding::Bytes);
        assert_eq!(
            sniff(&utf16(text, false, true)),
            Encoding::Utf16 {
                big_endian: false,
                bom: true
            }
        );
        assert_eq!(
            sniff(&utf16(text, true, true)),
            Encoding::Utf16 {
                big_endian: true,
                bom: true
            }
        );
        assert_eq!(
            sniff(&utf16(text, false, false)),
            Encoding::Utf16 {
                big_endian: false,
                bom: false
            }
        );
        assert_eq!(
            sniff(&utf16(text, true, false)),
            Encoding::Utf16 {
                big_endian: true,
                bom: false
            }
        );
    }

    #[test]
    fn utf16_offsets_point_into_the_original_bytes() {
        let text = "hé\ncard 4242424242424242\n";
        for (be, bom) in [(false, true), (true, true), (false, false)] {
            let data = utf16(&text.repeat(4), be, bom);
            let m = scan_buffer(&data, false);
            assert_eq!(m.len(), 4);
            let skip: usize = if bom { 2 } else { 0 };
            // 'h','é','\n','c','a','r','d',' ' = 8 units before the first digit.
            assert_eq!(m[0].offset, to_u64(skip) + 16);
            assert_eq!((m[0].line, m[0].column), (2, 6));
            // The decoding reader agrees with the in-memory path.
            let mut chunker = Chunker::new(Detector::default());
            let mut reader = Utf16Ascii::new(&data[skip..], be);
            let mut got = Vec::new();
            let map = OffsetMap {
                base: to_u64(skip),
                scale: 2,
            };
            chunker
                .run(&mut reader, Span::ALL, map, &mut |m| got.push(m))
                .unwrap();
            assert_eq!(got, m);
        }
    }

    #[test]
    fn utf16_digits_of_other_scripts_are_read_as_digits() {
        let wide: String = "4242424242424242"
            .chars()
            .map(|c| char::from_u32(0xFF10 + c.to_digit(10).unwrap()).unwrap())
            .collect();
        let text = format!("name,card\nJoe,{wide}\nAnn,4242.4242.4242.4242\n");
        for (be, bom) in [(false, true), (true, true), (false, false)] {
            let m = scan_buffer(&utf16(&text, be, bom), false);
            assert_eq!(m.len(), 2, "be {be} bom {bom}");
            assert!(m.iter().all(|m| m.masked == "424242******4242"));
        }
    }

    /// A reader that returns at most `n` bytes per call.
    struct Dribble<'a>(&'a [u8], usize);

    impl Read for Dribble<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(out.len()).min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn chunk_boundaries_change_nothing() {
        // ~3.5 MiB with numbers everywhere, including across chunk boundaries.
        let mut text = Vec::new();
        let mut k = 0u64;
        while text.len() < CHUNK * 3 + CHUNK / 2 {
            text.extend_from_slice(
                format!("line {k} pan 4242 4242 4242 4242 id 1234567890123\n").as_bytes(),
            );
            text.extend_from_slice(b"%B4242424242424242^DOE/JOHN^2512101000000000000?\n");
            text.extend_from_slice(&vec![b'x'; to_usize(k % 977)]);
            text.extend_from_slice("\u{FF14}\u{FF12} ".repeat(to_usize(k % 5)).as_bytes());
            text.extend_from_slice(b"{\"n\":[\"5555\",\"5555\",\"5555\",\"4444\"]}");
            text.push(b'\n');
            k += 1;
        }
        let whole = scan_buffer(&text, false);
        assert_eq!(to_u64(whole.len()), 3 * k);
        for step in [1usize << 20, 4093, 65536] {
            let mut chunker = Chunker::new(Detector::default());
            let mut got = Vec::new();
            let mut r = Dribble(&text, step);
            let out = chunker
                .run(&mut r, Span::ALL, OffsetMap::IDENTITY, &mut |m| got.push(m))
                .unwrap();
            assert_eq!(got, whole, "step {step}");
            assert_eq!(out.newlines, 3 * k);
        }
    }
}
