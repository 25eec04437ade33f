use super::*;

#[test]
fn made_cards_are_cards_of_their_brand() {
    let mut rng = Rng::new(7);
    for _ in 0..2000 {
        let c = make_card(&mut rng, None, None);
        assert!(is_card(&c.digits));
        assert_eq!(card::issued_brand(&c.digits), Some(c.brand));
    }
    for (len, brand) in [(15, Brand::Amex), (14, Brand::Diners), (12, Brand::Maestro)] {
        let c = make_card(&mut rng, Some(len), Some(brand));
        assert_eq!((c.len(), c.brand), (len, brand));
    }
    assert_eq!(make_card(&mut rng, Some(19), None).len(), 19);
}

#[test]
fn every_brand_is_planted() {
    let mut rng = Rng::new(1);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..3000 {
        seen.insert(make_card(&mut rng, None, None).brand);
    }
    for row in card::IIN_TABLE {
        assert!(seen.contains(&row.brand), "{}", row.brand);
    }
}

#[test]
fn decoys_are_not_cards_by_themselves() {
    let mut rng = Rng::new(3);
    for class in [
        DecoyClass::OrderId,
        DecoyClass::UnissuedIin,
        DecoyClass::LuhnFailure,
        DecoyClass::LongerRun,
    ] {
        for _ in 0..500 {
            let t = render_decoy(&mut rng, class);
            let digits: Vec<u8> = t.bytes().filter(u8::is_ascii_digit).collect();
            assert!(!is_card(&digits), "{class:?}");
        }
    }
}

#[test]
fn plan_covers_every_kind_and_is_deterministic() {
    let spec = CorpusSpec {
        size: 1 << 20,
        seed: 5,
        file_size: 64 << 10,
        threads: 1,
    };
    let a = plan(&spec);
    let b = plan(&spec);
    assert_eq!(a.len(), b.len());
    assert!(a.len() >= KINDS.len());
    for (k, _) in KINDS {
        assert!(a.iter().any(|p| p.kind == *k), "{k:?}");
    }
}
