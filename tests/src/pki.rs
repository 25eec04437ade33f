//! The throwaway PKI of the tests and the clients every test server knows.

use std::path::{Path, PathBuf};

use panvault_vault::tls::pki::{self, CertAuthority, Issued, LeafSpec};

/// The clients every test server knows: name, tenant, permissions.
pub const CLIENTS: &[(&str, &str, &[&str])] = &[
    (
        "storefront",
        "demo-shop",
        &["tokenize", "read", "delete", "erase"],
    ),
    ("payments", "demo-shop", &["read", "detokenize"]),
    (
        "other-shop",
        "other-shop",
        &["tokenize", "read", "detokenize"],
    ),
    ("monitor", "monitoring", &["metrics"]),
];

/// A throwaway PKI: the development PKI of `quickstart` (CA, localhost server,
/// the [`CLIENTS`]) plus whatever a test issues.
pub struct TestPki {
    pub dir: PathBuf,
    pub ca: CertAuthority,
}

impl TestPki {
    pub fn new(dir: &Path) -> TestPki {
        let names: Vec<&str> = CLIENTS.iter().map(|c| c.0).collect();
        pki::ensure_dev_pki(dir, &names).unwrap();
        let ca = CertAuthority::load(
            &std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
            &std::fs::read_to_string(dir.join("ca.key")).unwrap(),
        )
        .unwrap();
        TestPki {
            dir: dir.to_owned(),
            ca,
        }
    }

    /// The PEM certificate and key of a client the PKI made.
    pub fn client_pems(&self, name: &str) -> (String, String) {
        (
            std::fs::read_to_string(self.dir.join(format!("{name}.pem"))).unwrap(),
            std::fs::read_to_string(self.dir.join(format!("{name}.key"))).unwrap(),
        )
    }

    pub fn issue(&self, spec: &LeafSpec) -> Issued {
        self.ca.issue(spec).unwrap()
    }

    pub fn ca_pem(&self) -> String {
        self.ca.cert_pem().to_owned()
    }
}
