//! The in-memory detector: finds card numbers and magnetic-stripe tracks in a byte
//! buffer.
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

use super::Kind;

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

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `x` that is an ASCII digit (exact, no carries
/// between bytes: the "hasbetween" test of Bit Twiddling Hacks with m = '/', n = ':').
#[inline(always)]
fn digit_mask(x: u64) -> u64 {
    let low7 = x & ONES.wrapping_mul(127);
    let below_colon = ONES.wrapping_mul(127 + u64::from(b':')).wrapping_sub(low7);
    let above_slash = low7.wrapping_add(ONES.wrapping_mul(127 - u64::from(b'/')));
    below_colon & !x & above_slash & HIGHS
}

/// Index of the first set byte of a `digit_mask` result.
#[inline(always)]
fn first_byte(mask: u64) -> usize {
    // trailing_zeros() / 8 is at most 8: the conversion cannot fail.
    usize::try_from(mask.trailing_zeros() / 8).unwrap_or(8)
}

/// Loads 8 bytes little-endian (the slice is always 8 long here).
#[inline(always)]
fn load(word: &[u8]) -> u64 {
    u64::from_le_bytes(<[u8; 8]>::try_from(word).unwrap_or([0; 8]))
}

/// Index of the first run of at least four ASCII digits at or after `from` (the
/// start of that run, if `from` is not inside a digit run), or `buf.len()`.
///
/// Every number the detector accepts without `join_lines` begins with such a run
/// (a 4-digit group or 12+ digits), so shorter runs (dates, times, small counts)
/// are skipped here without leaving the word-at-a-time loop: for each 8-byte word,
/// the digit mask is ANDed with itself shifted by one, two and three bytes (taking
/// the missing bytes from the next word's mask).
#[inline]
pub(crate) fn next_run4(buf: &[u8], from: usize) -> usize {
    let Some(rest) = buf.get(from..) else {
        return buf.len();
    };
    let mut words = rest.chunks_exact(8);
    let mut base = from;
    if let Some(first) = words.next() {
        let mut m = digit_mask(load(first));
        for word in words {
            let n = digit_mask(load(word));
            if m != 0 {
                let m4 =
                    m & ((m >> 8) | (n << 56)) & ((m >> 16) | (n << 48)) & ((m >> 24) | (n << 40));
                if m4 != 0 {
                    return base + first_byte(m4);
                }
            }
            m = n;
            base += 8;
        }
    }
    // The last word and the bytes after it, one at a time.
    let mut run = 0usize;
    let mut k = base;
    while let Some(b) = buf.get(k) {
        if b.is_ascii_digit() {
            run += 1;
            if run == 4 {
                return k - 3;
            }
        } else {
            run = 0;
        }
        k += 1;
    }
    buf.len()
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

/// Bytes before a digit where a number the shared detector reports may begin: at
/// most 19 digits and 18 gaps of [`card::MAX_SEPARATORS`] characters, 4 bytes each.
const LOOSE_REACH: usize = (MAX_LEN + (MAX_LEN - 1) * card::MAX_SEPARATORS) * 4;

/// The UTF-8 character at `i` and its length; an invalid or overlong sequence is
/// one U+FFFD byte (which ends a chain). `None` at the end.
fn char_at(buf: &[u8], i: usize) -> Option<(char, usize)> {
    let lead = *buf.get(i)?;
    if lead < 0x80 {
        return Some((char::from(lead), 1));
    }
    let bad = Some((char::REPLACEMENT_CHARACTER, 1));
    let (len, init, min) = match lead {
        0xC2..=0xDF => (2, lead & 0x1F, 0x80),
        0xE0..=0xEF => (3, lead & 0x0F, 0x800),
        0xF0..=0xF4 => (4, lead & 0x07, 0x1_0000),
        _ => return bad,
    };
    let mut cp = u32::from(init);
    for k in 1..len {
        match buf.get(i + k) {
            Some(&c) if c & 0xC0 == 0x80 => cp = (cp << 6) | u32::from(c & 0x3F),
            _ => return bad,
        }
    }
    match char::from_u32(cp) {
        Some(c) if cp >= min => Some((c, len)),
        _ => bad,
    }
}

/// The character that ends just before `i` and where it starts.
fn char_before(buf: &[u8], i: usize) -> Option<(char, usize)> {
    let last = i.checked_sub(1)?;
    let mut lead = last;
    while lead > 0 && last - lead < 3 && buf.get(lead).is_some_and(|&b| b & 0xC0 == 0x80) {
        lead -= 1;
    }
    match char_at(buf, lead) {
        Some((c, len)) if lead + len == i => Some((c, lead)),
        _ => Some((char::REPLACEMENT_CHARACTER, last)),
    }
}

/// Index of the first non-ASCII decimal digit (full-width, Arabic-Indic, …) in
/// `from..limit`, or `limit`. ASCII is skipped eight bytes at a time.
fn next_wide_digit(buf: &[u8], from: usize, limit: usize) -> usize {
    let mut i = from;
    while i < limit {
        if let Some(word) = buf.get(i..i + 8)
            && load(word) & HIGHS == 0
        {
            i += 8;
            continue;
        }
        let Some(&b) = buf.get(i) else {
            break;
        };
        if b < 0x80 || !card::may_start_wide_digit(b) {
            i += 1;
            continue;
        }
        match char_at(buf, i) {
            Some((c, _)) if card::digit_value(c).is_some() => return i,
            Some((_, len)) => i += len,
            None => break,
        }
    }
    limit
}

/// A separator byte to the shared detector in scan mode (tab, or printable and not
/// alphanumeric).
#[inline]
fn is_sep_byte(b: u8) -> bool {
    b.is_ascii() && !b.is_ascii_alphanumeric() && (b == b'\t' || !b.is_ascii_control())
}

/// Whether the chain of ASCII digits around `t` (groups joined by up to
/// [`card::MAX_SEPARATORS`] separator bytes) has at least [`MIN_LEN`] digits, or
/// touches a byte outside ASCII: a cheap test before the shared detector runs.
fn may_hold_a_card(buf: &[u8], t: usize) -> bool {
    let mut digits = 0usize;
    let mut walk = |range: &mut dyn Iterator<Item = usize>| -> bool {
        let mut seps = 0usize;
        for i in range {
            match buf.get(i) {
                Some(b) if b.is_ascii_digit() => {
                    digits += 1;
                    seps = 0;
                    if digits >= MIN_LEN {
                        return true;
                    }
                }
                Some(&b) if is_sep_byte(b) && seps < card::MAX_SEPARATORS => seps += 1,
                Some(&b) if b >= 0x80 => return true,
                _ => break,
            }
        }
        false
    };
    walk(&mut (t..buf.len())) || walk(&mut (t.saturating_sub(LOOSE_REACH)..t).rev())
}

/// The shared detector ([`card::CardFinder`] in [`card::Mode::Scan`]) run over the
/// digit chains this scanner's own layout parser does not read: other separators
/// (`4111.1111.1111.1111`, double spaces, `_`, tabs, `","` between JSON strings)
/// and digits of other scripts. It looks only around the places the parser stops
/// at (runs of 4+ ASCII digits) and at non-ASCII digits, each byte fed once.
struct Loose<'a> {
    buf: &'a [u8],
    from: usize,
    stop: usize,
    finder: card::CardFinder,
    /// Bytes before this were fed to the finder (or passed over).
    fed: usize,
    /// Where the search for the next non-ASCII digit goes on.
    wide: usize,
    /// Hits and where their last digit ends.
    hits: Vec<(RawHit, usize)>,
    /// The first digit of the first chain seen that starts at or after `stop`:
    /// the next scan must resume no later.
    pending: Option<usize>,
}

impl<'a> Loose<'a> {
    fn new(buf: &'a [u8], from: usize, stop: usize) -> Self {
        Loose {
            buf,
            from,
            stop,
            finder: card::CardFinder::new(card::Mode::Scan),
            fed: 0,
            // Most text is ASCII: one fast pass then spares the search for
            // digits of other scripts.
            wide: if buf
                .get(from..stop.saturating_add(LOOSE_REACH).min(buf.len()))
                .is_none_or(<[u8]>::is_ascii)
            {
                usize::MAX
            } else {
                from
            },
            hits: Vec::new(),
            pending: None,
        }
    }

    /// Handles the digits before `t` (non-ASCII ones), then the run of ASCII
    /// digits at `t` if a gap next to it is one the layout parser does not read.
    fn upto(&mut self, t: usize) {
        let limit = t.min(self.buf.len());
        if self
            .buf
            .get(self.wide.max(self.fed)..limit)
            .is_some_and(<[u8]>::is_ascii)
        {
            self.wide = self.wide.max(limit);
        }
        while self.wide < limit {
            let w = next_wide_digit(self.buf, self.wide.max(self.fed), limit);
            if w >= limit {
                self.wide = limit;
                break;
            }
            self.at(w);
            self.wide = self.fed.max(w + 1);
        }
        if t >= self.fed
            && t < self.buf.len()
            && self.loose_gap_next_to(t)
            && may_hold_a_card(self.buf, t)
        {
            self.at(t);
        }
    }

    /// Whether the digit run at `t` is joined to more digits (or to a byte that may
    /// start a digit of another script) by a gap other than one space or one dash.
    /// The shared detector reports a chain only if all its gaps are alike, so a
    /// chain whose runs all sit between plain gaps (or none) is the layout
    /// parser's: this keeps the detector away from most digit runs.
    fn loose_gap_next_to(&self, t: usize) -> bool {
        let buf = self.buf;
        let end = digit_run_end(buf, t);
        let digit_or_high = |i: usize| buf.get(i).is_some_and(|&b| b.is_ascii_digit() || b >= 0x80);
        let is_sep = is_sep_byte;
        if buf.get(end).is_some_and(|&b| b >= 0x80)
            || t.checked_sub(1)
                .is_some_and(|p| buf.get(p).is_some_and(|&b| b >= 0x80))
        {
            return true;
        }
        // After the run.
        let mut k = end;
        while k < end + card::MAX_SEPARATORS && buf.get(k).is_some_and(|&b| is_sep(b)) {
            k += 1;
        }
        if k > end && digit_or_high(k) {
            let gap = buf.get(end..k).unwrap_or(&[]);
            if gap != b" " && gap != b"-" {
                return true;
            }
        }
        // Before it.
        let mut k = t;
        while k > 0 && t - k < card::MAX_SEPARATORS && buf.get(k - 1).is_some_and(|&b| is_sep(b)) {
            k -= 1;
        }
        if k < t && k > 0 && digit_or_high(k - 1) {
            let gap = buf.get(k..t).unwrap_or(&[]);
            if gap != b" " && gap != b"-" {
                return true;
            }
        }
        false
    }

    /// Feeds the chain holding the digit at `t`, from its start (walking back over
    /// digits and short separator runs) to its end.
    fn at(&mut self, t: usize) {
        if t < self.fed || t >= self.buf.len() {
            return;
        }
        let mut p = t;
        let mut first_digit = t;
        let mut seps = 0usize;
        let mut mid_text = false;
        while p > self.fed {
            if t - p > LOOSE_REACH {
                mid_text = true;
                break;
            }
            let Some((c, at)) = char_before(self.buf, p) else {
                break;
            };
            match card::Mode::Scan.classify(c) {
                card::Class::Digit { .. } => {
                    seps = 0;
                    first_digit = at;
                }
                card::Class::Separator(_) if seps < card::MAX_SEPARATORS => seps += 1,
                // The character that bounds the chain: fed too, for the glue rules.
                _ => {
                    p = at;
                    break;
                }
            }
            p = at;
        }
        if p > self.fed {
            self.finder.reset(mid_text);
        } else {
            p = self.fed;
        }
        if first_digit >= self.stop && self.pending.is_none_or(|q| first_digit < q) {
            self.pending = Some(first_digit);
        }
        let mut i = p;
        loop {
            let Some((c, len)) = char_at(self.buf, i) else {
                if let Some(h) = self.finder.finish() {
                    self.keep(h);
                }
                break;
            };
            if let Some(h) = self.finder.push_char(c, i, len) {
                self.keep(h);
            }
            i += len;
            if i > t && !self.finder.in_chain() {
                break;
            }
        }
        self.fed = i;
    }

    /// Keeps a hit that starts in this scan's range and that the layout parser
    /// would not have read (unless the digits sit inside base64).
    fn keep(&mut self, h: card::CardHit) {
        if !h.loose || h.start < self.from || h.start >= self.stop {
            return;
        }
        let slash = |i: usize| matches!(self.buf.get(i), Some(b'/' | b'+'));
        if ((h.start > 0 && slash(h.start - 1)) || slash(h.end))
            && looks_base64(self.buf, h.start, h.end)
        {
            return;
        }
        let end = h.end;
        self.hits.push((
            RawHit {
                start: h.start,
                digits: h.digits,
                brand: h.brand,
                kind: Kind::Pan,
                masked: h.masked,
                test_card: h.test_card,
            },
            end,
        ));
    }

    /// Adds the hits that overlap none of the parser's (`hits[first..]`, in
    /// order) and sorts them all by position.
    fn merge(self, hits: &mut Vec<RawHit>, first: usize) {
        if self.hits.is_empty() {
            return;
        }
        let strict: Vec<usize> = hits
            .get(first..)
            .unwrap_or(&[])
            .iter()
            .map(|h| h.start)
            .collect();
        for (h, end) in self.hits {
            let k = strict.partition_point(|&s| s < h.start);
            if strict.get(k).is_none_or(|&s| s >= end) {
                hits.push(h);
            }
        }
        if let Some(mine) = hits.get_mut(first..) {
            mine.sort_by_key(|h| h.start);
        }
    }
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
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<(String, Kind)> {
        found_with(text, false)
    }

    fn found_with(text: &str, join_lines: bool) -> Vec<(String, Kind)> {
        let det = Detector { join_lines };
        scan_all(&det, text.as_bytes())
            .into_iter()
            .map(|h| (h.masked, h.kind))
            .collect()
    }

    fn one(text: &str) -> String {
        let f = found(text);
        assert_eq!(
            f.len(),
            1,
            "expected one finding in {:?}, got {f:?}",
            mask_digits(text)
        );
        f.into_iter().next().map(|(m, _)| m).unwrap()
    }

    /// Test messages never show a full number.
    fn mask_digits(text: &str) -> String {
        text.chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect()
    }

    fn none(text: &str) {
        let f = found(text);
        assert!(
            f.is_empty(),
            "expected nothing in {:?}, got {f:?}",
            mask_digits(text)
        );
    }

    #[test]
    fn digit_mask_is_exact() {
        for b in 0u8..=255 {
            let w = u64::from_le_bytes([b, b'a', b, 0xff, b'0', b'9', b'/', b':']);
            let m = digit_mask(w);
            let expect = |x: u8| x.is_ascii_digit();
            for (k, x) in [b, b'a', b, 0xff, b'0', b'9', b'/', b':']
                .iter()
                .enumerate()
            {
                assert_eq!(m >> (8 * k + 7) & 1 == 1, expect(*x), "byte {x} at {k}");
            }
        }
    }

    #[test]
    fn next_run4_finds_the_first_four_digit_run() {
        for len in 0..48 {
            for pos in 0..len {
                for run in 1..6 {
                    let mut v = vec![b'x'; len];
                    for b in &mut v[pos..(pos + run).min(len)] {
                        *b = b'5';
                    }
                    // Short runs elsewhere must not count.
                    if pos >= 4 {
                        v[pos - 4] = b'1';
                        v[pos - 3] = b'2';
                    }
                    let expect = if run >= 4 && pos + 4 <= len { pos } else { len };
                    assert_eq!(next_run4(&v, 0), expect, "len {len} pos {pos} run {run}");
                }
            }
        }
    }

    #[test]
    fn contiguous_numbers_in_context() {
        assert_eq!(one("card=4242424242424242\n"), "424242******4242");
        assert_eq!(one("4242424242424242"), "424242******4242");
        assert_eq!(one("{\"pan\":\"5555555555554444\"}"), "555555******4444");
        assert_eq!(one("a,378282246310005,b"), "378282*****0005");
        assert_eq!(one("<n>4917610000000000003</n>"), "491761*********0003");
        assert_eq!(one("no.4242424242424242 ok"), "424242******4242");
        assert_eq!(
            one("GET /cards/4242424242424242/verify HTTP/1.1"),
            "424242******4242"
        );
    }

    #[test]
    fn grouped_layouts() {
        assert_eq!(one("4242 4242 4242 4242"), "424242******4242");
        assert_eq!(one("x 4242-4242-4242-4242."), "424242******4242");
        assert_eq!(one("3782 822463 10005"), "378282*****0005");
        assert_eq!(one("3782-822463-10005"), "378282*****0005");
        assert_eq!(one("3056 930902 5904"), "305693****5904");
        assert_eq!(one("4917 6100 0000 0000 003"), "491761*********0003");
        // Card then CVV / expiry.
        assert_eq!(one("4242 4242 4242 4242 123"), "424242******4242");
        assert_eq!(one("12/25 4242 4242 4242 4242"), "424242******4242");
        assert_eq!(one("1 4242 4242 4242 4242"), "424242******4242");
    }

    #[test]
    fn wrong_grouping_breaks_the_number() {
        none("4242 4242 42424242");
        none("4242-4242-4242-42-42");
        none("4242 4242-4242 4242");
        none("424 2424 2424 24242");
        // Fields of a record (masked card's last four, expiry, amount) are not a card.
        none("************4242,12/27,1234.56,R123456");
        // 4-6-5 is for amex only, 4-6-4 for diners only.
        none("4242 424242 42424");
        none("4242-4242-4242-4242-4242");
    }

    #[test]
    fn other_separators_and_digits_of_other_scripts() {
        // What the vault's request filter refuses, the scanner finds: one detector
        // (`card::CardFinder`) for both.
        for text in [
            "4242.4242.4242.4242",
            "4242  4242  4242  4242",
            "4242_4242_4242_4242",
            "4242\t4242\t4242\t4242",
            "4242 / 4242 / 4242 / 4242",
            "[4242,4242,4242,4242]",
            "{\"n\":[\"4242\",\"4242\",\"4242\",\"4242\"]}",
            "\u{FF14}\u{FF12}\u{FF14}\u{FF12}\u{FF14}\u{FF12}\u{FF14}\u{FF12}\u{FF14}\u{FF12}\u{FF14}\u{FF12}\u{FF14}\u{FF12}\u{FF14}\u{FF12}",
            "424242\u{FF14}\u{FF12}\u{FF14}\u{FF12}\u{FF14}\u{FF12}42\u{FF14}\u{FF12}",
            "\u{0664}\u{0662}\u{0664}\u{0662} \u{0664}\u{0662}\u{0664}\u{0662} \u{0664}\u{0662}\u{0664}\u{0662} \u{0664}\u{0662}\u{0664}\u{0662}",
            "42.42.42.42.42.42.4242",
        ] {
            for framed in [
                text.to_owned(),
                format!("note: {text} end"),
                format!("é {text}\né"),
            ] {
                let f = found(&framed);
                assert_eq!(f.len(), 1, "{}: {f:?}", mask_digits(&framed));
                assert_eq!(f[0].0, "424242******4242");
            }
        }
        // Glued, decimal, unbounded, or broken by a line break: not a card.
        none("v4242.4242.4242.4242");
        none("ID-4242.4242.4242.4242");
        none("4242.4242.4242.4242-ab");
        none("+4242.4242.4242.4242");
        none("x 4.242424242424242 y");
        none("4242.4242\n4242.4242");
        none("4242....4242.4242.4242");
        none("1.4242.4242.4242.4242");
        none("4242.4242.4242.4241");
        none("4242\u{FF14}\u{FF12}\u{FF14}\u{FF12}4242424242");
        // The position of a hit made of multi-byte digits, and the order of hits.
        let det = Detector::default();
        let text = "ab \u{FF14}\u{FF12}\u{FF14}\u{FF12}\u{FF14}\u{FF12}\u{FF14}\u{FF12}\u{FF14}\u{FF12}\u{FF14}\u{FF12}\u{FF14}\u{FF12}\u{FF14}\u{FF12} or 4242424242424242 or 5555.5555.5555.4444 123";
        let hits = scan_all(&det, text.as_bytes());
        let starts: Vec<usize> = hits.iter().map(|h| h.start).collect();
        assert_eq!(starts, vec![3, 55, 75]);
    }

    #[test]
    fn loose_numbers_across_chunk_boundaries() {
        // A caller scanning `from..stop` gets each number once, whichever side of
        // `stop` its first 4-digit run lies on.
        let text = b"xx 42.42.42.42.42.42.4242 yy 4242_4242_4242_4242 zz";
        let det = Detector::default();
        for cut in 0..text.len() {
            let mut hits = Vec::new();
            let resume = det.scan(text, 0, cut, &mut hits);
            det.scan(text, resume.max(cut), text.len(), &mut hits);
            let starts: Vec<usize> = hits.iter().map(|h| h.start).collect();
            assert_eq!(starts, vec![3, 29], "cut at {cut}");
        }
    }

    #[test]
    fn loose_scan_is_linear_on_long_digit_runs() {
        for text in [
            "0".repeat(1 << 20),
            "0.".repeat(1 << 19),
            "\"0\",".repeat(1 << 18),
            "\u{FF10}".repeat(1 << 18),
        ] {
            assert!(found(&text).is_empty());
        }
    }

    #[test]
    fn boundaries() {
        none("ID4242424242424242");
        none("4242424242424242x");
        none("user_4242424242424242");
        none("0x4242424242424242");
        none("142424242424242424242");
        none("v=1.4242424242424242");
        none("4242424242424242.5");
        none("+4242424242424242");
        none("ab-4242-4242-4242-4242");
        none("4242-4242-4242-4242-ab");
        none("abcd-4242424242424242");
        // UUID-shaped: 8-4-4 joins into 16 digits, last group 12 digits.
        none("42424242-4242-4242-aaaa-bbbbbbbbbbbb");
        none("aaaaaaaa-bbbb-cccc-dddd-561234567891");
        // Luhn failure, unissued IIN, unissued length.
        none("4242424242424241");
        none("9999999999999995");
        none("3782822463100055");
    }

    #[test]
    fn base64_context() {
        let b64 = "QmFzZTY0IGlzIGEgZ3JvdXAgb2YgYmluYXJ5LXRvLXRleHQgZW5jb2Rpbmcgc2NoZW1lcw";
        none(&format!("{b64}/4242424242424242+{b64}"));
        none(&format!("{b64}+4242424242424242/{b64}"));
        assert_eq!(
            one("/Users/JohnDoe/Documents/ProjectFiles/4242424242424242/Q1"),
            "424242******4242"
        );
    }

    #[test]
    fn base64_test_on_random_blobs_and_paths() {
        // SplitMix64, as in the corpus generator.
        let mut state = 1u64;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut missed = 0;
        for _ in 0..10_000 {
            let small = |n: u64| usize::try_from(n).unwrap();
            let len = 60 + small(next() % 17);
            let at = 1 + small(next() % (u64::try_from(len).unwrap() - 18));
            let mut line: Vec<u8> = (0..len).map(|_| alphabet[small(next() % 64)]).collect();
            line[at - 1] = b'/';
            line[at..at + 16].copy_from_slice(b"4242424242424242");
            line[at + 16] = b'+';
            line.extend_from_slice(b"\r\n");
            if !looks_base64(&line, at, at + 16) {
                missed += 1;
            }
        }
        assert!(
            missed <= 50,
            "{missed} of 10000 base64 lines not recognised"
        );
        for path in [
            "/Users/JohnDoe/Documents/ProjectFiles/Reports/4242424242424242/Q1",
            "/home/alexander/Downloads/Statements/4242424242424242/",
            "/SomeVeryLongDirectoryName/4242424242424242/AnotherVeryLongName",
            "s3://bucket/exports/2024/customer/4242424242424242/statement.pdf",
        ] {
            let start = path.find("4242").unwrap();
            assert!(!looks_base64(path.as_bytes(), start, start + 16), "{path}");
        }
    }

    #[test]
    fn tracks() {
        let f = found("x %B4242424242424242^DOE/JOHN^25121010000000000000000000?");
        assert_eq!(f, vec![("424242******4242".to_string(), Kind::Track1)]);
        let f = found("t2=;4242424242424242=25121010000012345678? end");
        assert_eq!(f, vec![("424242******4242".to_string(), Kind::Track2)]);
        // The data after '=' is skipped even when it looks like a mastercard.
        let f = found(";4242424242424241=2512101000001234?");
        assert!(f.is_empty());
        // Track 1 with a bad PAN is not a PAN either.
        none("%B4242424242424241^DOE/JOHN^2512101000000000000000?");
    }

    #[test]
    fn line_breaks_only_with_join_lines() {
        let texts = [
            "card 4242424242\n424242 ok",
            "card 4242 4242\n4242 4242 ok",
            "card 4242 4242 \r\n4242 4242 ok",
            "card 4242-4242-\n4242-4242 ok",
            "card 42\r\n42424242424242 ok",
        ];
        for t in texts {
            assert!(found(t).is_empty(), "{}", mask_digits(t));
            let f = found_with(t, true);
            assert_eq!(f.len(), 1, "{}: {f:?}", mask_digits(t));
        }
        // A number on the next line is still found on its own.
        let f = found_with("id 12\n4242424242424242\n", true);
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn hits_report_first_digit_and_test_flag() {
        let det = Detector::default();
        let hits = scan_all(&det, b"xx 4242 4242 4242 4242 yy 4000056655665557");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].start, 3);
        assert!(hits[0].test_card);
        assert_eq!(hits[0].digits, 16);
    }
}
