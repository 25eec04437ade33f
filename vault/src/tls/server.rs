//! The rustls server configuration.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::cipher_suite;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite};

use crate::config::{ConfigError, TlsSettings, TlsVersion};

/// The cipher suites offered: TLS 1.3's AEAD suites, and for TLS 1.2 only ECDHE
/// key exchange with AES-GCM or ChaCha20-Poly1305 (no CBC, no static RSA).
pub static AEAD_SUITES: &[SupportedCipherSuite] = &[
    cipher_suite::TLS13_AES_256_GCM_SHA384,
    cipher_suite::TLS13_AES_128_GCM_SHA256,
    cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// ring's provider restricted to [`AEAD_SUITES`].
pub fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = AEAD_SUITES.to_vec();
    Arc::new(p)
}

/// The IANA name of a suite, as sslyze and testssl.sh print it: TLS 1.3's
/// `TLS_AES_256_GCM_SHA384`, where rustls says `TLS13_AES_256_GCM_SHA384`.
pub fn iana_suite_name(s: &SupportedCipherSuite) -> String {
    let name = s
        .suite()
        .as_str()
        .map_or_else(|| format!("0x{:04x}", u16::from(s.suite())), str::to_owned);
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

/// The suites of [`AEAD_SUITES`] a client can negotiate with a server holding
/// `key` from `min_version` on: TLS 1.3's whatever the key, and of TLS 1.2's
/// only those the key can sign the key exchange of (`ECDHE_ECDSA` for an EC or
/// Ed25519 key, `ECDHE_RSA` for an RSA key).
pub fn negotiable_suites(
    key: &PrivateKeyDer<'_>,
    min_version: TlsVersion,
) -> Result<Vec<SupportedCipherSuite>, String> {
    let signer = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| format!("unusable private key: {e}"))?;
    let alg = signer.algorithm();
    Ok(AEAD_SUITES
        .iter()
        .copied()
        .filter(|s| match s {
            SupportedCipherSuite::Tls13(_) => true,
            SupportedCipherSuite::Tls12(_) => {
                min_version == TlsVersion::Tls12 && s.usable_for_signature_algorithm(alg)
            }
        })
        .collect())
}

/// [`negotiable_suites`] for a configuration, by IANA name. When the key
/// cannot be read (the server then refuses to start, which the configuration
/// check reports) these are the suites the configured versions enable.
pub fn negotiable_suite_names(tls: &TlsSettings) -> Vec<String> {
    let suites = load_key("tls.key", &tls.key)
        .map_err(|e| e.to_string())
        .and_then(|key| negotiable_suites(&key, tls.min_version));
    let suites = suites.unwrap_or_else(|_| {
        AEAD_SUITES
            .iter()
            .copied()
            .filter(|s| {
                tls.min_version == TlsVersion::Tls12 || matches!(s, SupportedCipherSuite::Tls13(_))
            })
            .collect()
    });
    suites.iter().map(iana_suite_name).collect()
}

/// Certificates from PEM text.
pub fn load_certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut rd = pem;
    let certs = rustls_pemfile::certs(&mut rd)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(certs)
}

fn read(field: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::new(field, format!("{}: {e}", path.display())))
}

/// The certificates (PEM) in `path`; `field` names it in errors.
pub fn load_certs(field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    load_certs_from_pem(&read(field, path)?)
        .map_err(|e| ConfigError::new(field, format!("{}: {e}", path.display())))
}

/// A private key from PEM text (PKCS#8, SEC1 or PKCS#1).
pub fn load_key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    let mut rd = pem;
    rustls_pemfile::private_key(&mut rd)
        .map_err(|e| format!("not a PEM private key: {e}"))?
        .ok_or_else(|| "no PEM private key found".to_owned())
}

/// The private key (PEM: PKCS#8, SEC1 or PKCS#1) in `path`.
pub fn load_key(field: &str, path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let bytes = zeroize::Zeroizing::new(read(field, path)?);
    load_key_from_pem(&bytes)
        .map_err(|e| ConfigError::new(field, format!("{}: {e}", path.display())))
}

/// The CRLs (PEM, or one DER CRL) in `path`.
pub fn load_crls(
    field: &str,
    path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, ConfigError> {
    let bytes = read(field, path)?;
    if bytes.starts_with(b"-----") || bytes.iter().take(64).all(|b| b.is_ascii()) {
        let mut rd = bytes.as_slice();
        let crls = rustls_pemfile::crls(&mut rd)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                ConfigError::new(field, format!("{}: not a PEM CRL: {e}", path.display()))
            })?;
        if crls.is_empty() {
            return Err(ConfigError::new(
                field,
                format!("{}: no CRL found", path.display()),
            ));
        }
        Ok(crls)
    } else {
        Ok(vec![CertificateRevocationListDer::from(bytes)])
    }
}

/// Says so when a CRL is already past its next update: every client will be
/// refused while it is installed.
fn warn_if_stale(i: usize, path: &Path, crls: &[CertificateRevocationListDer<'_>]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    for crl in crls {
        let next = x509_parser::parse_x509_crl(crl.as_ref())
            .ok()
            .and_then(|(_, c)| c.next_update())
            .map(|t| t.timestamp());
        if next.is_some_and(|t| t <= now) {
            tracing::warn!(
                file = %path.display(),
                "tls.crls[{i}] is past its next update: every client certificate is refused until a current CRL replaces it"
            );
        }
    }
}

/// Builds the server's TLS configuration from `[tls]`: ring provider, TLS 1.2 and
/// 1.3 (or 1.3 only), AEAD suites only, ALPN `h2` and `http/1.1`, and a client
/// certificate required and verified against `client_ca` (and `crls`, checked for
/// the client's own certificate; a certificate whose status no CRL covers is
/// refused, and so is every certificate while a CRL is past its next update),
/// carrying the clientAuth extended key usage and one unambiguous name.
pub fn server_config(tls: &TlsSettings) -> Result<Arc<ServerConfig>, ConfigError> {
    let provider = provider();
    let certs = load_certs("tls.cert", &tls.cert)?;
    let key = load_key("tls.key", &tls.key)?;
    let mut roots = RootCertStore::empty();
    for ca in load_certs("tls.client_ca", &tls.client_ca)? {
        roots.add(ca).map_err(|e| {
            ConfigError::new("tls.client_ca", format!("{}: {e}", tls.client_ca.display()))
        })?;
    }
    let mut crls = Vec::new();
    for (i, p) in tls.crls.iter().enumerate() {
        let loaded = load_crls(&format!("tls.crls[{i}]"), p)?;
        warn_if_stale(i, p, &loaded);
        crls.extend(loaded);
    }
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
    if !crls.is_empty() {
        // A CRL past its next update no longer says who is revoked: refuse
        // (fail closed) rather than trust it.
        verifier = verifier
            .with_crls(crls)
            .only_check_end_entity_revocation()
            .enforce_revocation_expiration();
    }
    let verifier = verifier
        .build()
        .map_err(|e| ConfigError::new("tls.client_ca", format!("{e}")))?;
    let verifier = Arc::new(super::verifier::ClientVerifier::new(verifier));
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| ConfigError::new("tls.min_version", e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| {
            ConfigError::new(
                "tls.key",
                format!("does not match tls.cert or is unsupported: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How often [`watch_crls`] looks at the CRL files.
pub const CRL_POLL: Duration = Duration::from_secs(2);

/// What a file looked like: modification time and length (`None`: unreadable).
fn stamp(p: &Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Every [`CRL_POLL`], looks at the files of `tls.crls`; when one changed, builds
/// the server configuration again and puts it in `cell`, so that new connections
/// are checked against the new CRLs (connections already open stay). A CRL that
/// does not load (being written, say) leaves the previous configuration in
/// place, with a warning, and is tried again at the next change. Runs until
/// aborted.
pub async fn watch_crls(tls: TlsSettings, cell: super::TlsConfigCell) {
    let stamps = |t: &TlsSettings| t.crls.iter().map(|p| stamp(p)).collect::<Vec<_>>();
    let mut loaded = stamps(&tls);
    let mut failed = None;
    let mut tick = tokio::time::interval(CRL_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = stamps(&tls);
        if now == loaded || failed.as_ref() == Some(&now) {
            continue;
        }
        let settings = tls.clone();
        match tokio::task::spawn_blocking(move || server_config(&settings)).await {
            Ok(Ok(config)) => {
                cell.replace(config);
                loaded = now;
                failed = None;
                tracing::info!("CRLs changed: new connections are checked against them");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "CRLs changed but do not load; the previous ones stay in force");
                failed = Some(now);
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod negotiable_tests {
    use super::*;

    fn key_der(alg: &'static rcgen::SignatureAlgorithm) -> PrivateKeyDer<'static> {
        let kp = rcgen::KeyPair::generate_for(alg).unwrap();
        load_key_from_pem(kp.serialize_pem().as_bytes()).unwrap()
    }

    #[test]
    fn an_ecdsa_key_negotiates_no_rsa_suite() {
        let names = |key: &PrivateKeyDer<'_>, v| -> Vec<String> {
            negotiable_suites(key, v)
                .unwrap()
                .iter()
                .map(iana_suite_name)
                .collect()
        };
        let ec = key_der(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            names(&ec, TlsVersion::Tls12),
            [
                "TLS_AES_256_GCM_SHA384",
                "TLS_AES_128_GCM_SHA256",
                "TLS_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            ]
        );
        assert_eq!(names(&ec, TlsVersion::Tls13).len(), 3);
        let ed = key_der(&rcgen::PKCS_ED25519);
        assert!(
            names(&ed, TlsVersion::Tls12)
                .iter()
                .all(|n| !n.contains("ECDHE_RSA"))
        );
    }
}
