//! The in-memory detector: finds card numbers and magnetic-stripe tracks in a byte
//! buffer.
//!
//! Over 600 lines on purpose: the layout parser (candidate tests, chain parsing,
//! tracks, base64 guard) is one hot loop, read best in one place; the word-at-a-time
//! skip is in `swar`, the bridge to the shared detector in `loose`, tests in `tests`.
//!
//! The hot loop skips eight bytes at a time to the next run of four or more ASCII
//! digits (a SWAR range test over a `u64`, then the mask ANDed with itself shifted
//! by one, two and three bytes): every card number contains such a run, so dates,
//! times and small counts never leave the loop. A run is rejected at once unless it
//! can start a card: a bounded run of 12–19 digits, a 4-digit group followed by a
//! space or dash and four more digits, or (with `join_lines`) a run that continues
//! after a line break. Only those candidates are parsed further, into a chain of at
//! most [`MAX_SEGS`] digit runs joined by one kind of separator. Nothing here
//! allocates except the masked text of a hit.
//!
//! The rules, in the order they apply:
//! - A number is bounded: the byte before and after it is not a word byte
//!   (`[A-Za-z0-9_]`). A dash is glue when a word byte is on its other side (UUIDs,
//!   identifiers), a dot is glue when a digit is on its other side (decimals), a
//!   leading `+` marks a phone number.
//! - Grouped numbers use one separator kind (space or dash), only at the boundaries
//!   of the layouts in [`LAYOUTS`]; anything else breaks the number.
//! - Luhn, then the IIN table: the number must have a known IIN and a length the
//!   network issues under it ([`card::issued_brand`]).
//! - A run next to `/` or `+` inside a long span that looks like base64 (mixed
//!   case, frequent character-class changes) is part of the encoding, not a card.
//! - `%B<pan>^<name>^<yymm>…` is a track 1 and `<pan>=<yymm><service code>…` a
//!   track 2: reported as such, and the digits after the separator are skipped.
//!
//! Around each 4+ digit run it stops at, and at each digit of another script, the
//! scanner also runs the detector shared with the vault's request filter
//! ([`card::CardFinder`] in [`card::Mode::Scan`]), which reads the chains written
//! with other separators or digits; its hits that overlap none of the layout
//! parser's are added. Each byte is fed to it at most once.

use zeroize::Zeroize;

use crate::card::{self, Brand};

use self::loose::{LOOSE_REACH, Loose};
pub(crate) use self::swar::next_run4;
use self::swar::{HIGHS, digit_mask, first_byte, load};
use super::Kind;

mod loose;
mod swar;

/// Shortest card number the scanner reports.
pub(crate) const MIN_LEN: usize = 12;
/// Longest card number the scanner reports.
pub(crate) const MAX_LEN: usize = 19;
/// Most digit runs one candidate chain is parsed into (the longest layout has 5).
const MAX_SEGS: usize = 8;
/// Most line breaks of one chain whose two readings (join / separate) are tried.
const MAX_BREAKS: usize = 3;
/// How far the base64 test looks on each side of a candidate.
const B64_REACH: usize = 128;

/// The grouped layouts real cards are printed with: group lengths, and the brand
/// the layout is reserved for (`None`: any brand of that length).
const LAYOUTS: &[(&[usize], Option<Brand>)] = &[
    (&[4, 4, 4, 4, 3], None),
    (&[4, 4, 4, 4], None),
    (&[4, 6, 5], Some(Brand::Amex)),
    (&[4, 6, 4], Some(Brand::Diners)),
];

/// A card number found in a buffer. `start` is the index of its first digit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawHit {
    /// Index of the first digit in the scanned buffer.
    pub start: usize,
    /// Number of digits.
    pub digits: u8,
    /// Network from the IIN table.
    pub brand: Brand,
    /// Plain PAN or a track.
    pub kind: Kind,
    /// First 6 and last 4 digits.
    pub masked: String,
    /// One of the networks' published test numbers.
    pub test_card: bool,
}

/// The detector's settings.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Detector {
    /// Whether a line break may continue a number.
    pub join_lines: bool,
}

/// How a digit run is linked to the run before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Link {
    /// First run of the chain.
    #[default]
    Start,
    /// The chain's separator (space or dash), possibly followed by a line break.
    Sep,
    /// A bare line break (only with `join_lines`): joins or separates.
    Break,
}

/// One digit run of a candidate chain.
#[derive(Clone, Copy, Debug, Default)]
struct Seg {
    start: usize,
    end: usize,
    link: Link,
}

/// A fixed-capacity list (no allocation in the hot path).
#[derive(Debug)]
struct Stack<T: Copy + Default, const N: usize> {
    items: [T; N],
    len: usize,
}

impl<T: Copy + Default, const N: usize> Stack<T, N> {
    fn new() -> Self {
        Stack {
            items: [T::default(); N],
            len: 0,
        }
    }

    fn push(&mut self, item: T) -> bool {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = item;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    fn as_slice(&self) -> &[T] {
        self.items.get(..self.len).unwrap_or(&[])
    }
}

/// A group of a chain read one way: runs up to `last`, `digits` digits in all.
#[derive(Clone, Copy, Debug, Default)]
struct Group {
    last: usize,
    digits: usize,
    /// Whether the group is separated from the previous one by a dash.
    after_dash: bool,
}

/// The outcome of parsing a candidate: a hit or not, and where to go on.
struct Step {
    hit: Option<RawHit>,
    resume: usize,
}

#[inline(always)]
fn is_digit_at(buf: &[u8], i: usize) -> bool {
    buf.get(i).is_some_and(u8::is_ascii_digit)
}

/// A byte of an identifier: digits and letters glue to them.
#[inline(always)]
pub(crate) fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

#[inline(always)]
fn is_word_at(buf: &[u8], i: usize) -> bool {
    buf.get(i).is_some_and(|&b| is_word(b))
}

/// End of the digit run starting at `i` (eight bytes at a time).
#[inline(always)]
fn digit_run_end(buf: &[u8], mut i: usize) -> usize {
    while let Some(word) = buf.get(i..i + 8) {
        let not_digits = !digit_mask(load(word)) & HIGHS;
        if not_digits != 0 {
            return i + first_byte(not_digits);
        }
        i += 8;
    }
    while is_digit_at(buf, i) {
        i += 1;
    }
    i
}

/// Length of a line break at `i` (`\n` or `\r\n`), 0 if none.
#[inline]
fn break_len(buf: &[u8], i: usize) -> usize {
    match buf.get(i) {
        Some(b'\n') => 1,
        Some(b'\r') if buf.get(i + 1) == Some(&b'\n') => 2,
        _ => 0,
    }
}

/// With `join_lines`: where a number whose 4+ digit run starts at `run` may
/// really start, if the previous line ends with a short digit run (and maybe a
/// separator) not yet looked at (at or after `floor`).
fn joined_start(buf: &[u8], run: usize, floor: usize) -> usize {
    let Some(mut k) = run.checked_sub(1) else {
        return run;
    };
    if buf.get(k) != Some(&b'\n') {
        return run;
    }
    if k > 0 && buf.get(k - 1) == Some(&b'\r') {
        k -= 1;
    }
    if k > 0 && matches!(buf.get(k - 1), Some(b' ' | b'-')) {
        k -= 1;
    }
    let mut q = k;
    while q > floor && is_digit_at(buf, q - 1) {
        q -= 1;
    }
    if q < k && q >= floor { q } else { run }
}

/// Whether a number ending before `i` is bounded on the right.
fn right_ok(buf: &[u8], i: usize) -> bool {
    match buf.get(i) {
        None => true,
        Some(&c) if is_word(c) => false,
        Some(b'-') => !is_word_at(buf, i + 1),
        Some(b'.') => !is_digit_at(buf, i + 1),
        Some(_) => true,
    }
}

/// Copies the digits of `segs` into `out`; the count, or `None` past 19.
fn gather(buf: &[u8], segs: &[Seg], out: &mut [u8; MAX_LEN]) -> Option<usize> {
    let mut n = 0;
    for s in segs {
        let part = buf.get(s.start..s.end)?;
        out.get_mut(n..n + part.len())?.copy_from_slice(part);
        n += part.len();
    }
    Some(n)
}

/// The brand if `digits` is a card number (Luhn first: it is cheaper).
fn card_brand(digits: &[u8]) -> Option<Brand> {
    if card::luhn_valid(digits) {
        card::issued_brand(digits)
    } else {
        None
    }
}

/// Builds the hit for verified `digits` and wipes them.
fn make_hit(
    start: usize,
    digits: &mut [u8; MAX_LEN],
    n: usize,
    brand: Brand,
    kind: Kind,
) -> Option<RawHit> {
    let hit = digits.get(..n).and_then(|d| {
        Some(RawHit {
            start,
            digits: u8::try_from(n).ok()?,
            brand,
            kind,
            masked: card::mask(d),
            test_card: card::is_test_card(d),
        })
    });
    digits.zeroize();
    hit
}

/// Checks the digits of `segs` and returns a hit if they are a card of `want` (or
/// of any brand). Wipes the copy either way.
fn check(buf: &[u8], segs: &[Seg], want: Option<Brand>, kind: Kind) -> Option<RawHit> {
    let start = segs.first()?.start;
    let mut digits = [0u8; MAX_LEN];
    let n = gather(buf, segs, &mut digits);
    let brand = n
        .and_then(|n| digits.get(..n))
        .and_then(card_brand)
        .filter(|b| want.is_none_or(|w| w == *b));
    match (brand, n) {
        (Some(brand), Some(n)) => make_hit(start, &mut digits, n, brand, kind),
        _ => {
            digits.zeroize();
            None
        }
    }
}

/// Evidence (log-likelihood ratio, in hundredths) that a byte belongs to base64
/// (64 symbols, uniform) rather than to text or a path (mostly lower-case, a
/// separator every few bytes); `None` outside the base64 alphabet.
fn b64_evidence(b: u8) -> Option<i32> {
    match b {
        b'A'..=b'Z' => Some(140),
        b'a'..=b'z' => Some(-61),
        b'0'..=b'9' => Some(114),
        b'+' | b'/' => Some(-117),
        _ => None,
    }
}

/// Whether the digits `start..end` sit inside base64: the alphabet bytes around
/// them (up to [`B64_REACH`] on each side, across line breaks, as in wrapped
/// base64) are at least 24 letters or digits and more likely random base64 than
/// text or a path.
fn looks_base64(buf: &[u8], start: usize, end: usize) -> bool {
    let mut score = 0i32;
    let mut letters = 0usize;
    let mut take = |b: u8| -> bool {
        match b64_evidence(b) {
            Some(w) => {
                score += w;
                letters += usize::from(b.is_ascii_alphanumeric());
                true
            }
            None => b == b'\n' || b == b'\r',
        }
    };
    let mut i = start;
    while i > 0 && start - i < B64_REACH && buf.get(i - 1).is_some_and(|&b| take(b)) {
        i -= 1;
    }
    let mut j = end;
    while j - end < B64_REACH && buf.get(j).is_some_and(|&b| take(b)) {
        j += 1;
    }
    letters >= 24 && score >= 0
}

/// Printable track-1 character (the name field and discretionary data).
fn is_track_char(b: u8) -> bool {
    (0x20..=0x7e).contains(&b) && b != b'^' && b != b'?' && b != b'%'
}

/// A track 1 (`[%]B<pan>^<name>^<yymm>…[?]`) whose PAN starts at `i`.
fn track1(buf: &[u8], i: usize, run_end: usize) -> Option<Step> {
    let len = run_end - i;
    if !(MIN_LEN..=MAX_LEN).contains(&len) || buf.get(run_end) != Some(&b'^') {
        return None;
    }
    // Name: 1 to 26 printable bytes, then '^'.
    let name = run_end + 1;
    let mut j = name;
    while j - name < 26 && buf.get(j).is_some_and(|&b| is_track_char(b)) {
        j += 1;
    }
    if j == name || buf.get(j) != Some(&b'^') {
        return None;
    }
    // Expiry (YYMM), then the service code and discretionary data.
    let exp = j + 1;
    if !(exp..exp + 4).all(|k| is_digit_at(buf, k)) {
        return None;
    }
    let mut end = digit_run_end(buf, exp);
    if buf.get(end) == Some(&b'?') {
        end += 1;
    }
    let hit = check(
        buf,
        &[Seg {
            start: i,
            end: run_end,
            link: Link::Start,
        }],
        None,
        Kind::Track1,
    );
    Some(Step { hit, resume: end })
}

/// The end of a track 2's data if `pan_end` is followed by `=<yymm><service code>`.
fn track2_end(buf: &[u8], pan_end: usize) -> Option<usize> {
    if buf.get(pan_end) != Some(&b'=') {
        return None;
    }
    let data = pan_end + 1;
    let mut end = digit_run_end(buf, data);
    if end - data < 7 {
        return None;
    }
    if buf.get(end) == Some(&b'?') {
        end += 1;
    }
    Some(end)
}

impl Detector {
    /// Scans the candidates that start in `from..stop` of `buf`, pushing hits, and
    /// returns where a following scan must resume (at least `stop`).
    ///
    /// Bytes before `from` are context only (for the left boundary); bytes after
    /// `stop` are read as far as a candidate that starts before it needs.
    pub(crate) fn scan(
        &self,
        buf: &[u8],
        from: usize,
        stop: usize,
        hits: &mut Vec<RawHit>,
    ) -> usize {
        let first = hits.len();
        let mut loose = Loose::new(buf, from, stop);
        let mut i = from;
        let resume = loop {
            // Every number has a run of 4+ digits; with join_lines, the number may
            // have begun with a shorter run at the end of the previous line.
            let run = next_run4(buf, i);
            loose.upto(run);
            if run >= stop {
                // A chain after `stop` may begin before its first 4-digit run (or
                // have none): the next scan starts there, unless that is inside
                // what the layout parser already consumed.
                break match loose.pending {
                    Some(c) if c >= i && c < run => c,
                    _ => run,
                };
            }
            let start = if self.join_lines {
                joined_start(buf, run, i)
            } else {
                run
            };
            i = self.at_digit(buf, start, hits);
        };
        // A chain that starts before `stop` may have its first 4-digit run after it.
        let reach = stop.saturating_add(LOOSE_REACH).min(buf.len());
        let mut r = resume;
        while r < reach {
            r = next_run4(buf, loose.fed.max(r + 1));
            loose.upto(r.min(reach));
        }
        loose.merge(hits, first);
        resume
    }

    /// Handles the digit run starting at `i`; returns where to go on.
    #[inline]
    fn at_digit(&self, buf: &[u8], i: usize, hits: &mut Vec<RawHit>) -> usize {
        let run_end = digit_run_end(buf, i);
        let prev = i.checked_sub(1).and_then(|p| buf.get(p)).copied();
        let prev2 = i.checked_sub(2).and_then(|p| buf.get(p)).copied();
        if let Some(p) = prev {
            if is_word(p) {
                if p == b'B'
                    && prev2.is_none_or(|c| c == b'%' || !is_word(c))
                    && let Some(step) = track1(buf, i, run_end)
                {
                    hits.extend(step.hit);
                    return step.resume;
                }
                return run_end;
            }
            let glued = match p {
                b'+' => true,
                b'-' => prev2.is_some_and(is_word),
                b'.' => prev2.is_some_and(|c| c.is_ascii_digit()),
                _ => false,
            };
            if glued {
                return run_end;
            }
        }
        let next = buf.get(run_end).copied();
        if next.is_some_and(is_word) {
            return run_end;
        }
        let len = run_end - i;
        let grouped =
            len == 4 && matches!(next, Some(b' ' | b'-')) && self.group_follows(buf, run_end + 1);
        let contiguous = (MIN_LEN..=MAX_LEN).contains(&len);
        let step = if grouped || (self.join_lines && self.continues(buf, run_end)) {
            self.candidate(buf, i, run_end)
        } else if contiguous {
            if self.link_at(buf, run_end).is_some() {
                self.candidate(buf, i, run_end)
            } else {
                let part = [Seg {
                    start: i,
                    end: run_end,
                    link: Link::Start,
                }];
                contiguous_number(buf, &part, right_ok(buf, run_end))
            }
        } else {
            return run_end;
        };
        hits.extend(step.hit);
        step.resume
    }

    /// Whether a second group can start at `at`: the second group of every layout
    /// has 4 or 6 digits (with `join_lines`, a line break may split it).
    #[inline]
    fn group_follows(&self, buf: &[u8], at: usize) -> bool {
        let n = digit_run_end(buf, at) - at;
        n >= 4 || (self.join_lines && n > 0 && self.continues(buf, at + n))
    }

    /// With `join_lines`: whether the number may go on after `end` across a line
    /// break (optionally after a separator).
    fn continues(&self, buf: &[u8], end: usize) -> bool {
        let after_sep = if matches!(buf.get(end), Some(b' ' | b'-')) {
            end + 1
        } else {
            end
        };
        let n = break_len(buf, after_sep);
        n > 0 && is_digit_at(buf, after_sep + n)
    }

    /// How the run ending at `end` links to a next run: the link, where the next
    /// run starts and the separator byte if any.
    fn link_at(&self, buf: &[u8], end: usize) -> Option<(Link, usize, Option<u8>)> {
        match buf.get(end) {
            Some(&c @ (b' ' | b'-')) => {
                if is_digit_at(buf, end + 1) {
                    return Some((Link::Sep, end + 1, Some(c)));
                }
                let n = if self.join_lines {
                    break_len(buf, end + 1)
                } else {
                    0
                };
                (n > 0 && is_digit_at(buf, end + 1 + n)).then_some((
                    Link::Sep,
                    end + 1 + n,
                    Some(c),
                ))
            }
            _ if self.join_lines => {
                let n = break_len(buf, end);
                (n > 0 && is_digit_at(buf, end + n)).then_some((Link::Break, end + n, None))
            }
            _ => None,
        }
    }

    /// Parses the candidate whose first run is `start..first_end`.
    fn candidate(&self, buf: &[u8], start: usize, first_end: usize) -> Step {
        let mut segs: Stack<Seg, MAX_SEGS> = Stack::new();
        segs.push(Seg {
            start,
            end: first_end,
            link: Link::Start,
        });
        let mut sep: Option<u8> = None;
        let mut breaks = 0usize;
        let mut end = first_end;
        while let Some((link, next, c)) = self.link_at(buf, end) {
            if c.is_some() {
                if sep.is_some_and(|s| Some(s) != c) {
                    break;
                }
                sep = c;
            }
            if link == Link::Break {
                if breaks == MAX_BREAKS {
                    break;
                }
                breaks += 1;
            }
            end = digit_run_end(buf, next);
            if !segs.push(Seg {
                start: next,
                end,
                link,
            }) {
                break;
            }
        }
        let segs = segs.as_slice();
        let dash = sep == Some(b'-');
        // Readings of the line breaks: bit k set = break k separates. All-joined first.
        for reading in 0..(1usize << breaks) {
            if dash && reading != 0 {
                break; // a line break stands for a space, never for a dash
            }
            let groups = group(segs, reading, dash);
            if let Some(step) = self.try_reading(buf, segs, groups.as_slice()) {
                return step;
            }
        }
        Step {
            hit: None,
            resume: first_end,
        }
    }

    /// Tries the layouts, then the first group alone, for one reading of the chain.
    fn try_reading(&self, buf: &[u8], segs: &[Seg], groups: &[Group]) -> Option<Step> {
        for (layout, want) in LAYOUTS {
            let Some(head) = groups.get(..layout.len()) else {
                continue;
            };
            if !head.iter().map(|g| g.digits).eq(layout.iter().copied()) {
                continue;
            }
            let last = head.last()?;
            let end = segs.get(last.last)?.end;
            let bounded = match groups.get(layout.len()) {
                Some(next) => !next.after_dash,
                None => right_ok(buf, end),
            };
            if !bounded {
                continue;
            }
            if let Some(hit) = check(buf, segs.get(..=last.last)?, *want, Kind::Pan) {
                return Some(Step {
                    hit: Some(hit),
                    resume: end,
                });
            }
        }
        let first = groups.first()?;
        if !(MIN_LEN..=MAX_LEN).contains(&first.digits) {
            return None;
        }
        let end = segs.get(first.last)?.end;
        let bounded = match groups.get(1) {
            Some(next) => !next.after_dash,
            None => right_ok(buf, end),
        };
        let step = contiguous_number(buf, segs.get(..=first.last)?, bounded);
        (step.hit.is_some() || step.resume != end).then_some(step)
    }
}

/// Checks a number written without separators (its digits may be split by line
/// breaks in `parts`): a track 2, digits inside base64, or a card.
fn contiguous_number(buf: &[u8], parts: &[Seg], bounded: bool) -> Step {
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return Step {
            hit: None,
            resume: buf.len(),
        };
    };
    let (start, end) = (first.start, last.end);
    if !bounded {
        return Step {
            hit: None,
            resume: end,
        };
    }
    if let Some(track_end) = track2_end(buf, end) {
        let hit = check(buf, parts, None, Kind::Track2);
        return Step {
            hit,
            resume: track_end,
        };
    }
    let slash = |i: usize| matches!(buf.get(i), Some(b'/' | b'+'));
    if ((start > 0 && slash(start - 1)) || slash(end)) && looks_base64(buf, start, end) {
        return Step {
            hit: None,
            resume: end,
        };
    }
    let hit = check(buf, parts, None, Kind::Pan);
    Step { hit, resume: end }
}

/// Groups the runs of a chain for one reading of its line breaks (bit k of
/// `reading` set: the k-th break separates, as a space would).
fn group(segs: &[Seg], reading: usize, dash: bool) -> Stack<Group, MAX_SEGS> {
    let mut groups: Stack<Group, MAX_SEGS> = Stack::new();
    let mut current: Option<Group> = None;
    let mut k = 0usize;
    for (idx, s) in segs.iter().enumerate() {
        let n = s.end - s.start;
        let separate = match s.link {
            Link::Start => true,
            Link::Sep => true,
            Link::Break => {
                let bit = reading >> k & 1 == 1;
                k += 1;
                bit
            }
        };
        match current.as_mut() {
            Some(g) if !separate => {
                g.last = idx;
                g.digits += n;
            }
            _ => {
                if let Some(g) = current.take() {
                    groups.push(g);
                }
                current = Some(Group {
                    last: idx,
                    digits: n,
                    after_dash: dash && s.link == Link::Sep,
                });
            }
        }
    }
    if let Some(g) = current {
        groups.push(g);
    }
    groups
}

/// Scans a whole buffer (the end of `buf` is the end of the data).
pub(crate) fn scan_all(det: &Detector, buf: &[u8]) -> Vec<RawHit> {
    let mut hits = Vec::new();
    det.scan(buf, 0, buf.len(), &mut hits);
    hits
}

#[cfg(test)]
mod tests;
