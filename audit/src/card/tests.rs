use super::finder::ND_ZEROS;
use super::*;

#[test]
fn published_test_cards_pass_luhn_and_have_brands() {
    for card in TEST_CARDS {
        let d = card.as_bytes();
        assert!(luhn_valid(d), "{card}");
        assert_ne!(brand_of(d), Brand::Unknown, "{card}");
    }
}

#[test]
fn brands_by_prefix() {
    let cases: &[(&str, Brand)] = &[
        ("4242424242424242", Brand::Visa),
        ("5555555555554444", Brand::Mastercard),
        ("2223003122003222", Brand::Mastercard),
        ("2720990000000000", Brand::Mastercard),
        ("378282246310005", Brand::Amex),
        ("341111111111111", Brand::Amex),
        ("6011111111111117", Brand::Discover),
        ("6445644564456445", Brand::Discover),
        ("6500000000000002", Brand::Discover),
        ("3566002020360505", Brand::Jcb),
        ("30569309025904", Brand::Diners),
        ("36227206271667", Brand::Diners),
        ("6200000000000005", Brand::Unionpay),
        ("6759649826438453", Brand::Maestro),
        ("2200000000000004", Brand::Mir),
        ("6000000000000008", Brand::Rupay),
        ("8100000000000000", Brand::Rupay),
        ("9999999999999995", Brand::Unknown),
        ("1234567812345670", Brand::Unknown),
    ];
    for (n, b) in cases {
        assert_eq!(brand_of(n.as_bytes()), *b, "{n}");
    }
}

#[test]
fn test_cards_are_valid_visa_numbers_distinct_per_seed() {
    let mut seen = std::collections::HashSet::new();
    for i in 0..2000 {
        let c = testing::card(i);
        assert_eq!(c.len(), 16);
        assert!(c.starts_with('4'));
        assert!(luhn_valid(c.as_bytes()));
        assert!(seen.insert(c));
    }
    assert_eq!(testing::card(7), testing::card(7));
    let a: Vec<String> = testing::Cards::new(1).take(50).collect();
    assert_eq!(a, testing::Cards::new(1).take(50).collect::<Vec<_>>());
    assert!(a.iter().all(|c| luhn_valid(c.as_bytes())));
    assert_ne!(a[0], a[1]);
    let n = testing::complete(&[4, 2, 4, 2, 4, 2, 4, 2, 4, 2, 4, 2, 4, 2, 4]).unwrap();
    assert_eq!(n, "4242424242424242");
    assert!(testing::complete(&[10]).is_none());
}

#[test]
fn luhn_rejects_bad_check_digit_and_non_digits() {
    assert!(luhn_valid(b"4242424242424242"));
    assert!(!luhn_valid(b"4242424242424241"));
    assert!(!luhn_valid(b"42424242424242a2"));
    assert!(!luhn_valid(b""));
    assert_eq!(luhn_check_digit(b"424242424242424"), Some(b'2'));
    assert_eq!(luhn_check_digit(b"37828224631000"), Some(b'5'));
}

#[test]
fn issued_brand_checks_length() {
    assert_eq!(issued_brand(b"4242424242424242"), Some(Brand::Visa));
    assert_eq!(issued_brand(b"42424242424242"), None);
    assert_eq!(issued_brand(b"378282246310005"), Some(Brand::Amex));
    assert_eq!(issued_brand(b"9999999999999995"), None);
}

/// The digits of `s` as written in the script whose zero is `zero`.
fn in_script(s: &str, zero: u32) -> String {
    s.chars()
        .map(|c| match c.to_digit(10) {
            Some(d) => char::from_u32(zero + d).unwrap(),
            None => c,
        })
        .collect()
}

#[test]
fn unicode_decimal_digits_have_their_values() {
    for &zero in ND_ZEROS {
        for d in 0..10u8 {
            let c = char::from_u32(zero + u32::from(d)).unwrap();
            assert!(
                c.is_numeric() && !c.is_alphabetic(),
                "U+{:04X}",
                u32::from(c)
            );
            assert_eq!(digit_value(c), Some(d), "U+{:04X}", u32::from(c));
        }
        let after = char::from_u32(zero + 10).unwrap();
        assert!(
            digit_value(after).is_none() || ND_ZEROS.contains(&(zero + 10)),
            "U+{:04X}",
            zero + 10
        );
    }
    for &zero in ND_ZEROS {
        for d in 0..10u32 {
            let mut utf8 = [0u8; 4];
            let c = char::from_u32(zero + d).unwrap();
            let lead = c.encode_utf8(&mut utf8).as_bytes()[0];
            assert!(may_start_wide_digit(lead), "U+{:04X}", zero + d);
        }
    }
    assert_eq!(digit_value('7'), Some(7));
    assert_eq!(digit_value('\u{FF17}'), Some(7));
    for c in ['a', ' ', '²', '①', 'Ⅶ', '\u{FF21}', '/', ':'] {
        assert_eq!(digit_value(c), None, "U+{:04X}", u32::from(c));
    }
}

#[test]
fn iin_lookup_by_value_agrees_with_the_table() {
    for p in 0..10_000u32 {
        let text = format!("{p:04}");
        let by_digits = lookup_iin(text.as_bytes()).map(|r| (r.brand, r.digits, r.low));
        let by_value = lookup_prefix(p, 4).map(|r| (r.brand, r.digits, r.low));
        assert_eq!(by_digits, by_value, "{text}");
        let by_table = row_of_prefix4(p).map(|r| (r.brand, r.digits, r.low));
        assert_eq!(by_digits, by_table, "{text}");
    }
    assert_eq!(lookup_iin(b"4").map(|r| r.brand), Some(Brand::Visa));
    assert!(lookup_iin(b"").is_none());
}

/// Spellings of a card that the filter and the scanner both find.
fn spellings(card: &str) -> Vec<String> {
    let g: Vec<String> = card
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    vec![
        g.join("."),
        g.join("  "),
        g.join("_"),
        g.join("\t"),
        g.join(" / "),
        in_script(card, 0xFF10),
        in_script(&g.join(" "), 0xFF10),
        in_script(&g.join("-"), 0x0660),
        in_script(card, 0x0966),
        format!("[{}]", g.join(",")),
        format!("[\"{}\"]", g.join("\",\"")),
        format!("{}{}", &card[..6], in_script(&card[6..], 0xFF10)),
    ]
}

fn scan_str(text: &str) -> Vec<CardHit> {
    let mut f = CardFinder::new(Mode::Scan);
    let mut hits: Vec<CardHit> = text
        .char_indices()
        .filter_map(|(pos, c)| f.push_char(c, pos, c.len_utf8()))
        .collect();
    hits.extend(f.finish());
    hits
}

#[test]
fn both_modes_find_separated_and_unicode_spellings() {
    for card in [
        "4111111111111111",
        "5555555555554444",
        "4917610000000000003",
    ] {
        for (k, text) in spellings(card).iter().enumerate() {
            assert!(
                contains_card_number(text),
                "filter, spelling {k} of a test card"
            );
            let framed = format!("note: {text} ok");
            assert!(contains_card_number(&framed), "filter, framed spelling {k}");
            let hits = scan_str(&framed);
            assert_eq!(hits.len(), 1, "scan, spelling {k} of a test card");
            assert_eq!(usize::from(hits[0].digits), card.len(), "spelling {k}");
            assert_eq!(hits[0].masked, mask(card.as_bytes()), "spelling {k}");
            assert!(hits[0].test_card, "spelling {k}");
        }
    }
}

#[test]
fn filter_finds_cards_inside_anything_scan_only_bounded_ones() {
    for text in [
        "x4111111111111111",
        "4111111111111111x",
        "14111111111111111",
        "ID-4111.1111.1111.1111",
        "4111.1111.1111.1111-ab",
        "+4111 1111 1111 1111",
    ] {
        assert!(contains_card_number(text), "filter: {}", text.len());
        assert!(scan_str(text).is_empty(), "scan: {}", text.len());
    }
}

#[test]
fn neither_mode_finds_other_numbers() {
    for text in [
        "order 1234567890123 ok",
        "4111.1111.1111.1112",
        "4111....1111.1111.1111",
        "2024-01-05 12:34:56.789 GET /x 200 4521",
        "9999 9999 9999 9995",
        "amount 1,234,567.89 EUR",
        "",
        "4",
    ] {
        assert!(
            !contains_card_number(text),
            "filter: case of {} bytes",
            text.len()
        );
        assert!(
            scan_str(text).is_empty(),
            "scan: case of {} bytes",
            text.len()
        );
    }
    // A lone dot is a decimal point to the scanner (the filter refuses it).
    assert!(scan_str("lat 4.111111111111111 lon").is_empty());
    assert!(contains_card_number("lat 4.111111111111111 lon"));
    // A line break ends a chain in scan mode only.
    assert!(scan_str("4111 1111\n1111 1111").is_empty());
    assert!(contains_card_number("4111 1111\n1111 1111"));
}

#[test]
fn scan_mode_reports_positions_and_looseness() {
    let text = "a 4111.1111.1111.1111 b 4242 4242 4242 4242 c";
    let hits = scan_str(text);
    assert_eq!(hits.len(), 2);
    assert_eq!((hits[0].start, hits[0].end), (2, 21));
    assert!(hits[0].loose);
    assert_eq!((hits[1].start, hits[1].end), (24, 43));
    assert!(!hits[1].loose);
    // Full-width digits are three bytes each.
    let wide = format!("x {} y", in_script("4111111111111111", 0xFF10));
    let hits = scan_str(&wide);
    assert_eq!((hits[0].start, hits[0].end), (2, 2 + 48));
    assert!(hits[0].loose);
    // Gaps that differ are the fields of a record to the scanner, not to the filter.
    assert!(scan_str("4111 1111-1111 1111").is_empty());
    assert!(contains_card_number("4111 1111-1111 1111"));
    assert!(scan_str("**** 4111,12/27,1111.11").is_empty());
    // A card followed by something else is still found.
    assert_eq!(scan_str("4111.1111.1111.1111 123")[0].end, 19);
}

#[test]
fn a_mid_text_start_never_reports_the_first_chain() {
    let mut f = CardFinder::new(Mode::Scan);
    f.reset(true);
    let text = "1111.1111.1111 then 4111.1111.1111.1111";
    let mut hits: Vec<CardHit> = text
        .char_indices()
        .filter_map(|(p, c)| f.push_char(c, p, 1))
        .collect();
    hits.extend(f.finish());
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].start, 20);
}

#[test]
fn long_digit_runs_are_linear() {
    // 2 MB of zeros (all Luhn-valid, no IIN) and of grouped digits: each
    // character is a constant number of steps, so this finishes at test speed.
    let zeros = "0".repeat(2 << 20);
    assert!(!contains_card_number(&zeros));
    assert!(scan_str(zeros.get(..1 << 16).unwrap()).is_empty());
    let runs = "\"0\",".repeat(1 << 14);
    assert!(!contains_card_number(&runs));
    let mut grouped = "1234 5678 ".repeat(1 << 13);
    assert!(!contains_card_number(&grouped));
    grouped.push_str("4111-1111-1111-1111");
    assert!(contains_card_number(&grouped));
}

proptest::proptest! {
    #[test]
    fn any_test_card_spelled_any_way_is_found(
        card in proptest::sample::select(TEST_CARDS),
        seps in proptest::collection::vec(
            proptest::sample::select(vec!["", " ", "  ", ".", "-", "_", "\t", ", ", "\",\"", "/", " - "]),
            19,
        ),
        one_sep in proptest::sample::select(vec![" ", "  ", ".", "-", "_", "\t", ",", ", ", "\",\"", "/", " - "]),
        cuts in proptest::collection::vec(proptest::bool::ANY, 19),
        scripts in proptest::collection::vec(
            proptest::sample::select(vec![0x30u32, 0xFF10, 0x0660, 0x06F0, 0x0966, 0x09E6, 0x0E50, 0x1D7CE]),
            19,
        ),
        before in "[a-z ]{0,8}",
        after in "[a-z ]{0,8}",
    ) {
        // The filter: any separator in any gap.
        let spell = |sep: &dyn Fn(usize) -> &'static str| {
            let mut text = before.clone();
            text.push(' ');
            for (k, c) in card.chars().enumerate() {
                if k > 0 {
                    text.push_str(sep(k));
                }
                let d = c.to_digit(10).unwrap();
                text.push(char::from_u32(scripts[k] + d).unwrap());
            }
            text.push(' ');
            text.push_str(&after);
            text
        };
        let text = spell(&|k| seps[k]);
        proptest::prop_assert!(contains_card_number(&text), "filter missed a spelling");
        // The scanner: one separator, in any gaps (not a lone dot).
        let text = spell(&|k| if cuts[k] { one_sep } else { "" });
        let lone_dot = one_sep == "." && cuts.iter().skip(1).take(card.len() - 1).filter(|c| **c).count() == 1;
        proptest::prop_assert!(contains_card_number(&text), "filter missed a spelling");
        let hits = scan_str(&text);
        if lone_dot {
            proptest::prop_assert!(hits.is_empty());
            return Ok(());
        }
        proptest::prop_assert_eq!(hits.len(), 1, "scan missed a spelling");
        proptest::prop_assert_eq!(&hits[0].masked, &mask(card.as_bytes()));
    }
}

#[test]
fn masking_shows_at_most_six_and_four() {
    assert_eq!(mask(b"4242424242424242"), "424242******4242");
    assert_eq!(mask(b"378282246310005"), "378282*****0005");
    assert_eq!(mask(b"123456789012"), "********9012");
}
