//! Facts from the server configuration: TLS settings, certificates, clients.
use panvault_audit::compliance::{
    CertRole, CertSource, ClientAuth, ClientFacts, TlsConfigFacts, version_rank, x509,
};

use crate::config::LenientConfig;

/// The TLS versions from `min` up.
pub(super) fn versions_from(min: &str) -> Vec<String> {
    ["1.0", "1.1", "1.2", "1.3"]
        .iter()
        .filter(|v| version_rank(v) >= version_rank(min))
        .map(|v| (*v).to_owned())
        .collect()
}

/// The suites the server enables (it has no setting for them), by IANA name; what
/// it can negotiate also depends on its key ([`crate::tls::negotiable_suite_names`]).
pub(super) fn server_suites() -> Vec<String> {
    crate::tls::AEAD_SUITES
        .iter()
        .map(crate::tls::iana_suite_name)
        .collect()
}

/// What the configuration sets up for TLS, and why the server would refuse it.
pub(super) fn tls(c: &LenientConfig) -> TlsConfigFacts {
    TlsConfigFacts {
        source: c.path.display().to_string(),
        versions: versions_from(&c.min_version),
        cipher_suites: c
            .cipher_suites
            .clone()
            .or_else(|| c.negotiable_suites.clone())
            .unwrap_or_else(server_suites),
        // panvault's server always builds a WebPkiClientVerifier over client_ca:
        // a verified client certificate is mandatory whenever a CA is configured.
        client_auth: if c.client_ca.is_some() {
            ClientAuth::Required
        } else {
            ClientAuth::None
        },
        client_ca: c.client_ca.as_ref().map(|p| p.display().to_string()),
        crls: c.crls,
        config_error: c.problem.as_ref().map(ToString::to_string),
    }
}

/// The server's certificate and the client CA the configuration names.
pub(super) fn certificates(c: &LenientConfig) -> Vec<CertSource> {
    let mut out = Vec::new();
    if let Some(p) = &c.cert {
        out.push(x509::read_cert_file(p, CertRole::ServerLeaf));
    }
    if let Some(p) = &c.client_ca {
        out.push(x509::read_cert_file(p, CertRole::ClientCa));
    }
    out
}

/// The clients allowed in, and what they may do.
pub(super) fn clients(c: &LenientConfig) -> Vec<ClientFacts> {
    c.clients
        .iter()
        .map(|cl| ClientFacts {
            name: cl.name.clone(),
            common_name: cl.common_name.clone(),
            uri_san: cl.uri_san.clone(),
            tenant: cl.tenant.clone(),
            permissions: cl.permissions.clone(),
        })
        .collect()
}
