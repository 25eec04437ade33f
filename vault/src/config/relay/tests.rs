use super::super::{Config, ConfigError, Permission};
use super::*;

const BASE: &str = r#"
listen = "127.0.0.1:8443"
data_dir = "data"
[tls]
cert = "pki/server.pem"
key = "pki/server.key"
client_ca = "pki/ca.pem"
[[clients]]
name = "storefront"
tenant = "demo-shop"
permissions = ["tokenize", "relay"]
[[clients]]
name = "back-office"
tenant = "demo-shop"
permissions = ["read"]
"#;

const PSP: &str = r#"
[[relay.destinations]]
name = "psp"
url = "https://api.psp.example/v1/charges"
ca_file = "psp-ca.pem"
clients = ["storefront"]
"#;

fn parse(extra: &str) -> Result<Config, ConfigError> {
    Config::parse(&format!("{BASE}{extra}"))
}

fn err(extra: &str) -> ConfigError {
    match parse(extra) {
        Ok(_) => panic!("accepted: {extra}"),
        Err(e) => e,
    }
}

#[test]
fn no_relay_section_means_no_relay_and_no_cvc() {
    let c = parse("").unwrap();
    assert!(c.relay.is_none());
    assert_eq!(c.cvc_ttl(), None);
}

#[test]
fn defaults_and_destination() {
    let c = parse(PSP).unwrap();
    let r = c.relay.as_ref().unwrap();
    assert_eq!(r.cvc_ttl_secs, 900);
    assert_eq!(c.cvc_ttl(), Some(Duration::from_secs(900)));
    assert_eq!(r.connect_timeout(), Duration::from_secs(5));
    assert_eq!(r.timeout(), Duration::from_secs(30));
    let d = r.destination("psp").unwrap();
    assert!(d.allows("storefront"));
    assert!(!d.allows("back-office"));
    let t = d.target().unwrap();
    assert_eq!(t.host, "api.psp.example");
    assert_eq!(t.port, 443);
    assert_eq!(t.path_and_query, "/v1/charges");
    assert_eq!(t.uri, "https://api.psp.example:443/v1/charges");
    assert!(r.destination("other").is_none());
    assert!(c.clients[0].can(Permission::Relay));
}

#[test]
fn relative_paths_follow_the_file() {
    let mut c = parse(&format!(
        "{PSP}client_cert = \"c.pem\"\nclient_key = \"/abs/c.key\"\n\
         [relay.destinations.signing]\nalgorithm = \"sha384\"\nsecret_file = \"s\"\nfield = \"sign\"\n"
    ))
    .unwrap();
    c.resolve_paths(Path::new("/etc/pv"));
    let d = &c.relay.as_ref().unwrap().destinations[0];
    assert_eq!(d.ca_file.as_deref(), Some(Path::new("/etc/pv/psp-ca.pem")));
    assert_eq!(d.client_cert.as_deref(), Some(Path::new("/etc/pv/c.pem")));
    assert_eq!(d.client_key.as_deref(), Some(Path::new("/abs/c.key")));
    assert_eq!(
        d.signing.as_ref().unwrap().secret_file,
        Path::new("/etc/pv/s")
    );
    // …and a missing one is named.
    let e = c.check_files().unwrap_err();
    assert!(
        e.field.starts_with("tls.") || e.field.starts_with("relay."),
        "{e}"
    );
}

#[test]
fn cvc_ttl_is_bounded() {
    let c = parse("[relay]\ncvc_ttl_secs = 3600\n").unwrap();
    assert_eq!(c.cvc_ttl(), Some(Duration::from_secs(3600)));
    let e = err("[relay]\ncvc_ttl_secs = 3601\n");
    assert_eq!(e.field, "relay.cvc_ttl_secs", "{e}");
    assert!(e.reason.contains("3600"), "{e}");
    let e = err("[relay]\ncvc_ttl_secs = 0\n");
    assert_eq!(e.field, "relay.cvc_ttl_secs", "{e}");
}

#[test]
fn limits_are_checked() {
    for (text, field) in [
        ("connect_timeout_secs = 0", "relay.connect_timeout_secs"),
        ("timeout_secs = 0", "relay.timeout_secs"),
        (
            "connect_timeout_secs = 10\ntimeout_secs = 5",
            "relay.timeout_secs",
        ),
        ("request_bytes = 10", "relay.request_bytes"),
        ("response_bytes = 10", "relay.response_bytes"),
        ("max_headers = 1000", "relay.max_headers"),
        ("header_bytes = 10000000", "relay.header_bytes"),
    ] {
        let e = err(&format!("[relay]\n{text}\n"));
        assert_eq!(e.field, field, "{text}: {e}");
    }
    let e = err("[relay]\ncolour = 1\n");
    assert_eq!(e.field, "colour", "{e}");
}

#[test]
fn destination_errors_name_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "name = \"psp\"",
            "name = \"PSP\"",
            "relay.destinations[0].name",
        ),
        (
            "name = \"psp\"",
            "name = \"\"",
            "relay.destinations[0].name",
        ),
        (
            "name = \"psp\"",
            "name = \"a23456789012345678901234567890123\"",
            "relay.destinations[0].name",
        ),
        (
            "url = \"https://api.psp.example/v1/charges\"",
            "url = \"http://api.psp.example/v1/charges\"",
            "relay.destinations[0].url",
        ),
        (
            "url = \"https://api.psp.example/v1/charges\"",
            "url = \"https://user@api.psp.example/v1/charges\"",
            "relay.destinations[0].url",
        ),
        (
            "url = \"https://api.psp.example/v1/charges\"",
            "url = \"https://api.psp.example:0/x\"",
            "relay.destinations[0].url",
        ),
        (
            "url = \"https://api.psp.example/v1/charges\"",
            "url = \"https:///x\"",
            "relay.destinations[0].url",
        ),
        (
            "url = \"https://api.psp.example/v1/charges\"",
            "url = \"https://api.psp.example/x#frag\"",
            "relay.destinations[0].url",
        ),
        (
            "clients = [\"storefront\"]",
            "clients = []",
            "relay.destinations[0].clients",
        ),
        (
            "clients = [\"storefront\"]",
            "clients = [\"storefront\", \"nobody\"]",
            "relay.destinations[0].clients[1]",
        ),
        (
            "ca_file = \"psp-ca.pem\"",
            "ca_file = \"psp-ca.pem\"\nclient_cert = \"c.pem\"",
            "relay.destinations[0].client_key",
        ),
        (
            "ca_file = \"psp-ca.pem\"",
            "ca_file = \"psp-ca.pem\"\nclient_key = \"c.key\"",
            "relay.destinations[0].client_cert",
        ),
    ];
    for (from, to, field) in cases {
        let e = err(&PSP.replace(from, to));
        assert_eq!(e.field, *field, "{to}: {e}");
    }
    let e = err(&format!("{PSP}{PSP}"));
    assert_eq!(e.field, "relay.destinations[1].name", "{e}");
    assert!(e.reason.contains("duplicate"), "{e}");
    let e = err(&format!("{PSP}{}", PSP.replace("url =", "path =")));
    assert!(e.to_string().contains("path"), "{e}");
}

#[test]
fn signing_rules_are_checked() {
    let sign = |body: &str| format!("{PSP}[relay.destinations.signing]\n{body}\n");
    let ok = parse(&sign(
        "algorithm = \"hmac-sha512\"\nsecret_file = \"k\"\nheader = \"X-Signature\"\nfields = [\"amount\", \"card.number\"]\nencoding = \"base64\"",
    ))
    .unwrap();
    let s = ok.relay.unwrap().destinations[0].signing.clone().unwrap();
    assert_eq!(s.algorithm, SigningAlgorithm::HmacSha512);
    assert_eq!(s.encoding, SigningEncoding::Base64);
    assert_eq!(s.fields, ["amount", "card.number"]);
    for (body, field) in [
        (
            "algorithm = \"md5\"\nsecret_file = \"k\"\nheader = \"x\"",
            "$",
        ),
        (
            "algorithm = \"sha384\"\nsecret_file = \"k\"",
            "relay.destinations[0].signing.header",
        ),
        (
            "algorithm = \"sha384\"\nsecret_file = \"k\"\nheader = \"x\"\nfield = \"sign\"",
            "relay.destinations[0].signing.header",
        ),
        (
            "algorithm = \"sha384\"\nsecret_file = \"k\"\nheader = \"bad header\"",
            "relay.destinations[0].signing.header",
        ),
        (
            "algorithm = \"sha384\"\nsecret_file = \"k\"\nheader = \"Content-Length\"",
            "relay.destinations[0].signing.header",
        ),
        (
            "algorithm = \"sha384\"\nsecret_file = \"k\"\nfield = \"a.b\"",
            "relay.destinations[0].signing.field",
        ),
        (
            "algorithm = \"sha384\"\nsecret_file = \"k\"\nfield = \"sign\"\nfields = [\"ok\", \"bad..path\"]",
            "relay.destinations[0].signing.fields[1]",
        ),
        ("algorithm = \"sha384\"\nfield = \"sign\"", "secret_file"),
    ] {
        let e = err(&sign(body));
        assert_eq!(e.field, field, "{body}: {e}");
    }
}

#[test]
fn urls() {
    let t = parse_target("https://[::1]:8443/a?b=c").unwrap();
    assert_eq!((t.host.as_str(), t.port), ("::1", 8443));
    assert_eq!(t.uri, "https://[::1]:8443/a?b=c");
    let t = parse_target("https://127.0.0.1:9").unwrap();
    assert_eq!(t.path_and_query, "/");
    let t = parse_target("https://h.example?x=1").unwrap();
    assert_eq!(t.path_and_query, "/?x=1");
    for bad in [
        "HTTPS://h/",
        "https://h/ x",
        "https://h:99999/",
        "https://h:/",
        "https://[::1/",
        "https://h_h/",
        "ftp://h/",
        "https://a:b:c/",
    ] {
        assert!(parse_target(bad).is_err(), "{bad}");
    }
}

#[test]
fn names() {
    assert!(is_destination_name("psp-1"));
    assert!(!is_destination_name("psp_1"));
    assert!(!is_destination_name("Psp"));
    assert!(is_header_name("X-Sig"));
    assert!(!is_header_name("X Sig"));
}
