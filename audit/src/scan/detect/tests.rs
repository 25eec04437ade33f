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
