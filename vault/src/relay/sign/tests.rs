use std::path::PathBuf;

use ring::{digest, hmac};
use serde_json::Value;

use super::*;
use crate::relay::template::{CardValues, resolve};

const VISA: &str = "4111111111111111";
const SECRET: &[u8] = b"merchant-secret";

fn rule(
    alg: SigningAlgorithm,
    fields: &[&str],
    header: Option<&str>,
    field: Option<&str>,
) -> SigningRule {
    SigningRule {
        algorithm: alg,
        secret_file: PathBuf::from("unused"),
        fields: fields.iter().map(|s| (*s).to_owned()).collect(),
        separator: "|".to_owned(),
        header: header.map(str::to_owned),
        field: field.map(str::to_owned),
        encoding: SigningEncoding::Hex,
    }
}

fn signer(r: &SigningRule) -> Signer {
    Signer::with_secret(r, Zeroizing::new(SECRET.to_vec())).unwrap()
}

fn body() -> Zeroizing<String> {
    let card = CardValues {
        number: VISA,
        exp_month: 3,
        exp_year: 2031,
        cvc: None,
        name: None,
    };
    resolve(
        BodyKind::Json,
        r#"{"amount":1999,"card":{"number":"{{card.number}}"}}"#,
        &card,
    )
    .unwrap()
}

#[test]
fn hmac_sha256_of_the_body_in_a_header() {
    let s = signer(&rule(
        SigningAlgorithm::HmacSha256,
        &[],
        Some("X-Signature"),
        None,
    ));
    let mut headers = vec![(
        HeaderName::from_static("x-signature"),
        HeaderValue::from_static("forged"),
    )];
    let b = body();
    let expect = crate::service::hex(
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, SECRET), b.as_bytes()).as_ref(),
    );
    let out = s.apply(BodyKind::Json, b.clone(), &mut headers).unwrap();
    assert_eq!(*out, *b);
    assert_eq!(headers.len(), 1, "the caller's header is replaced");
    assert_eq!(headers[0].1.to_str().unwrap(), expect);
}

#[test]
fn hmac_sha512_base64() {
    let mut r = rule(SigningAlgorithm::HmacSha512, &[], Some("x-sig"), None);
    r.encoding = SigningEncoding::Base64;
    let mut headers = Vec::new();
    let b = body();
    signer(&r)
        .apply(BodyKind::Json, b.clone(), &mut headers)
        .unwrap();
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA512, SECRET), b.as_bytes());
    assert_eq!(
        headers[0].1.to_str().unwrap(),
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    );
}

#[test]
fn sha384_of_fields_into_a_json_field() {
    let s = signer(&rule(
        SigningAlgorithm::Sha384,
        &["amount", "card.number"],
        None,
        Some("sign"),
    ));
    let mut headers = Vec::new();
    let out = s.apply(BodyKind::Json, body(), &mut headers).unwrap();
    assert!(headers.is_empty());
    let v: Value = serde_json::from_str(&out).unwrap();
    let mut ctx = digest::Context::new(&digest::SHA384);
    ctx.update(format!("1999|{VISA}").as_bytes());
    ctx.update(SECRET);
    assert_eq!(v["sign"], crate::service::hex(ctx.finish().as_ref()));
    assert_eq!(v["card"]["number"], VISA);
    assert_eq!(v["amount"], 1999);
}

#[test]
fn an_empty_object_gets_the_field_alone() {
    let s = signer(&rule(SigningAlgorithm::Sha384, &[], None, Some("sign")));
    let out = s
        .apply(
            BodyKind::Json,
            Zeroizing::new(" {} ".to_owned()),
            &mut Vec::new(),
        )
        .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 1);
}

#[test]
fn refusals() {
    let field = signer(&rule(SigningAlgorithm::Sha384, &[], None, Some("sign")));
    for b in [r#"{"sign":"mine"}"#, "[1,2]", "\"x\""] {
        let e = field
            .apply(
                BodyKind::Json,
                Zeroizing::new(b.to_owned()),
                &mut Vec::new(),
            )
            .unwrap_err();
        assert_eq!(e.code(), "bad_template", "{b}");
    }
    let e = field
        .apply(
            BodyKind::Form,
            Zeroizing::new("a=1".to_owned()),
            &mut Vec::new(),
        )
        .unwrap_err();
    assert_eq!(e.code(), "bad_template");
    let fields = signer(&rule(
        SigningAlgorithm::HmacSha256,
        &["missing"],
        Some("x-sig"),
        None,
    ));
    let e = fields
        .apply(BodyKind::Json, body(), &mut Vec::new())
        .unwrap_err();
    assert_eq!(e.code(), "bad_template");
    let fields = signer(&rule(
        SigningAlgorithm::HmacSha256,
        &["card"],
        Some("x-sig"),
        None,
    ));
    let e = fields
        .apply(BodyKind::Json, body(), &mut Vec::new())
        .unwrap_err();
    assert_eq!(e.code(), "bad_template");
}

#[test]
fn the_secret_is_never_printed() {
    let s = signer(&rule(
        SigningAlgorithm::HmacSha256,
        &[],
        Some("x-sig"),
        None,
    ));
    let shown = format!("{s:?}");
    assert!(!shown.contains("merchant-secret"), "{shown}");
}

#[test]
fn load_reads_the_file_and_drops_one_newline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, b"merchant-secret\n").unwrap();
    let mut r = rule(SigningAlgorithm::HmacSha256, &[], Some("x-sig"), None);
    r.secret_file = path.clone();
    let loaded = Signer::load(&r).unwrap();
    let mut h1 = Vec::new();
    let mut h2 = Vec::new();
    loaded.apply(BodyKind::Json, body(), &mut h1).unwrap();
    signer(&r).apply(BodyKind::Json, body(), &mut h2).unwrap();
    assert_eq!(h1, h2);
    std::fs::write(&path, b"\n").unwrap();
    assert!(Signer::load(&r).is_err());
}
