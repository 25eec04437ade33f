//! The bridge to the shared detector: [`Loose`] runs [`card::CardFinder`] around
//! the places the layout parser stops at, for the chains that parser does not read
//! (other separators, digits of other scripts).

use crate::card;

use super::swar::{HIGHS, load};
use super::{Kind, MAX_LEN, MIN_LEN, RawHit, digit_run_end, looks_base64};

/// Bytes before a digit where a number the shared detector reports may begin: at
/// most 19 digits and 18 gaps of [`card::MAX_SEPARATORS`] characters, 4 bytes each.
pub(super) const LOOSE_REACH: usize = (MAX_LEN + (MAX_LEN - 1) * card::MAX_SEPARATORS) * 4;

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
pub(super) struct Loose<'a> {
    buf: &'a [u8],
    from: usize,
    stop: usize,
    finder: card::CardFinder,
    /// Bytes before this were fed to the finder (or passed over).
    pub(super) fed: usize,
    /// Where the search for the next non-ASCII digit goes on.
    wide: usize,
    /// Hits and where their last digit ends.
    hits: Vec<(RawHit, usize)>,
    /// The first digit of the first chain seen that starts at or after `stop`:
    /// the next scan must resume no later.
    pub(super) pending: Option<usize>,
}

impl<'a> Loose<'a> {
    pub(super) fn new(buf: &'a [u8], from: usize, stop: usize) -> Self {
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
    pub(super) fn upto(&mut self, t: usize) {
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
    pub(super) fn merge(self, hits: &mut Vec<RawHit>, first: usize) {
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
