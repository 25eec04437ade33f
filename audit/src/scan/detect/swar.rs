//! The fast skip: eight bytes at a time to the next run of four ASCII digits (a SWAR
//! range test over a `u64`).

const ONES: u64 = 0x0101_0101_0101_0101;
pub(super) const HIGHS: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `x` that is an ASCII digit (exact, no carries
/// between bytes: the "hasbetween" test of Bit Twiddling Hacks with m = '/', n = ':').
#[inline(always)]
pub(super) fn digit_mask(x: u64) -> u64 {
    let low7 = x & ONES.wrapping_mul(127);
    let below_colon = ONES.wrapping_mul(127 + u64::from(b':')).wrapping_sub(low7);
    let above_slash = low7.wrapping_add(ONES.wrapping_mul(127 - u64::from(b'/')));
    below_colon & !x & above_slash & HIGHS
}

/// Index of the first set byte of a `digit_mask` result.
#[inline(always)]
pub(super) fn first_byte(mask: u64) -> usize {
    // trailing_zeros() / 8 is at most 8: the conversion cannot fail.
    usize::try_from(mask.trailing_zeros() / 8).unwrap_or(8)
}

/// Loads 8 bytes little-endian (the slice is always 8 long here).
#[inline(always)]
pub(super) fn load(word: &[u8]) -> u64 {
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
