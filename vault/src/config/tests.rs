use super::*;

const GOOD: &str = r#"
listen = "127.0.0.1:8443"
data_dir = "data"
[tls]
cert = "pki/server.pem"
key = "pki/server.key"
client_ca = "pki/ca.pem"
[[clients]]
name = "storefront"
tenant = "demo-shop"
permissions = ["tokenize", "read", "read"]
[[clients]]
name = "payments"
uri_san = "spiffe://demo/payments"
tenant = "demo-shop"
permissions = ["detokenize"]
"#;

#[test]
fn parses_with_defaults() {
    let c = Config::parse(GOOD).unwrap();
    assert_eq!(c.limits.body_bytes, 65536);
    assert_eq!(c.limits.batch_bytes, 2 * 1024 * 1024);
    assert_eq!(c.tls.min_version, TlsVersion::Tls12);
    assert_eq!(c.clients[0].common_name.as_deref(), Some("storefront"));
    assert_eq!(
        c.clients[0].permissions,
        vec![Permission::Tokenize, Permission::Read]
    );
    assert_eq!(c.clients[1].common_name, None);
    assert!(c.clients[1].can(Permission::Detokenize));
}

#[test]
fn resolves_relative_paths() {
    let mut c = Config::parse(GOOD).unwrap();
    c.resolve_paths(Path::new("/etc/panvault"));
    assert_eq!(c.tls.cert, Path::new("/etc/panvault/pki/server.pem"));
    assert_eq!(c.data_dir, Path::new("/etc/panvault/data"));
}

fn err(text: &str) -> ConfigError {
    Config::parse(text).unwrap_err()
}

#[test]
fn errors_name_the_field() {
    let e = err(&GOOD.replace("listen = \"127.0.0.1:8443\"\n", ""));
    assert_eq!(e.field, "listen", "{e}");
    let e = err(&GOOD.replace("data_dir = \"data\"", "data_dir = \"data\"\ncolour = 1"));
    assert_eq!(e.field, "colour", "{e}");
    let e = err(&GOOD.replace("listen = \"127.0.0.1:8443\"", "listen = \"nowhere\""));
    assert!(e.to_string().contains("listen"), "{e}");
    let e = err(&GOOD.replace("\"detokenize\"", "\"everything\""));
    assert!(
        e.to_string().contains("everything") && e.to_string().contains("permissions"),
        "{e}"
    );
    let e = err(&GOOD.replace(
        "tenant = \"demo-shop\"\npermissions = [\"detokenize\"]",
        "tenant = \"demo shop\"\npermissions = []",
    ));
    assert_eq!(e.field, "clients[1].tenant");
    let e = err(&GOOD.replace("name = \"payments\"", "name = \"storefront\""));
    assert_eq!(e.field, "clients[1].name");
    let e = err(&format!("{GOOD}\n[limits]\nbody_bytes = 10\n"));
    assert_eq!(e.field, "limits.body_bytes");
    let e = err(&format!("{GOOD}\n[limits]\nbatch_bytes = 1024\n"));
    assert_eq!(e.field, "limits.batch_bytes");
    let e = err(&GOOD.replace(
        "client_ca = \"pki/ca.pem\"",
        "client_ca = \"pki/ca.pem\"\nciphers = []",
    ));
    assert_eq!(e.field, "ciphers");
    let e = err(&GOOD.replace(
        "uri_san = \"spiffe://demo/payments\"",
        "uri_san = \"not a uri\"",
    ));
    assert_eq!(e.field, "clients[1].uri_san");
    let e = err(&GOOD.replace(
        "\"spiffe://demo/payments\"",
        "\"spiffe://demo/payments\"\ncommon_name = \"storefront\"",
    ));
    assert_eq!(e.field, "clients[1].common_name");
}

#[test]
fn checkpoint_witness_is_outside_the_data_dir() {
    let with = |w: &str| {
        GOOD.replace(
            "data_dir = \"data\"\n",
            &format!("data_dir = \"data\"\n[audit]\ncheckpoint_witness = \"{w}\"\n"),
        )
    };
    let mut c = Config::parse(&with("witness/checkpoints.jsonl")).unwrap();
    c.resolve_paths(Path::new("/etc/panvault"));
    assert_eq!(
        c.audit.checkpoint_witness.as_deref(),
        Some(Path::new("/etc/panvault/witness/checkpoints.jsonl"))
    );
    assert_eq!(Config::parse(GOOD).unwrap().audit.checkpoint_witness, None);
    let e = err(&with("data/checkpoints.jsonl"));
    assert_eq!(e.field, "audit.checkpoint_witness", "{e}");
    // Its directory must exist (checked with the other files).
    let mut c = Config::parse(&with("no-such-dir/checkpoints.jsonl")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    c.resolve_paths(dir.path());
    c.tls.cert = dir.path().to_owned();
    c.tls.key = dir.path().to_owned();
    c.tls.client_ca = dir.path().to_owned();
    let e = c.check_files().unwrap_err();
    assert_eq!(e.field, "audit.checkpoint_witness", "{e}");
    std::fs::create_dir(dir.path().join("no-such-dir")).unwrap();
    c.check_files().unwrap();
}

#[test]
fn needs_clients_and_files() {
    let text: String = GOOD.split("[[clients]]").next().unwrap().to_owned();
    assert_eq!(err(&text).field, "clients");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("panvault.toml");
    std::fs::write(&path, GOOD).unwrap();
    let e = Config::load(&path).unwrap_err();
    assert_eq!(e.field, "tls.cert", "{e}");
    let e = Config::load(&dir.path().join("missing.toml")).unwrap_err();
    assert_eq!(e.field, "$");
}
