//! Opening a connection: TCP or a unix socket, TLS through rustls with the *ring*
//! provider (no OpenSSL), the server's certificate verified against the configured
//! CA for `verify-full`.

use std::io::BufReader;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{PgError, PgHost, PgSettings, SslMode};

/// Connects as the settings say.
pub fn connect(settings: &PgSettings) -> Result<postgres::Client, PgError> {
    let (cfg, tls) = driver_config(settings)?;
    Ok(cfg.connect(tls)?)
}

/// The driver's configuration and TLS connector for the settings. The driver keeps
/// its own copy of the password (not zeroized: a pool reconnects with it for as
/// long as it runs).
pub(super) fn driver_config(
    settings: &PgSettings,
) -> Result<(postgres::Config, MakeRustlsConnect), PgError> {
    let (cfg, tls) = async_driver_config(settings)?;
    Ok((postgres::Config::from(cfg), tls))
}

/// [`driver_config`] for the asynchronous driver (the request path's reads).
pub(super) fn async_driver_config(
    settings: &PgSettings,
) -> Result<(tokio_postgres::Config, MakeRustlsConnect), PgError> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.user(&settings.user)
        .dbname(&settings.dbname)
        .application_name("panvault")
        .connect_timeout(settings.connect_timeout);
    if let Some(pw) = &settings.password {
        cfg.password(pw.expose_secret());
    }
    match &settings.host {
        PgHost::Tcp(host, port) => cfg.host(host).port(*port),
        PgHost::Socket(dir, port) => cfg.host_path(dir).port(*port),
    };
    let tls = match client_tls_config(settings)? {
        Some(tls) => {
            cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
            tls
        }
        None => {
            // Never used (the driver does not start TLS when told not to), and it
            // trusts no CA in case it ever were.
            cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(PgError::Tls)?
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth()
        }
    };
    Ok((cfg, MakeRustlsConnect::new(tls)))
}

/// The rustls client configuration of the settings' `sslmode` (`None`: no TLS).
pub fn client_tls_config(settings: &PgSettings) -> Result<Option<ClientConfig>, PgError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(PgError::Tls)?;
    let config = match settings.sslmode {
        SslMode::Disable => return Ok(None),
        SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth(),
        SslMode::VerifyFull => {
            let path = settings.ca_file.as_deref().ok_or_else(|| {
                PgError::Url("sslmode=verify-full needs sslrootcert=<CA file>".into())
            })?;
            let ca_err =
                |reason: &str, source: Option<Box<dyn std::error::Error + Send + Sync>>| {
                    PgError::Ca {
                        path: path.to_owned(),
                        reason: reason.to_owned(),
                        source,
                    }
                };
            let file =
                std::fs::File::open(path).map_err(|e| ca_err("cannot open", Some(e.into())))?;
            let mut roots = RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut BufReader::new(file)) {
                let cert = cert.map_err(|e| ca_err("not PEM", Some(e.into())))?;
                roots
                    .add(cert)
                    .map_err(|e| ca_err("not a usable CA certificate", Some(e.into())))?;
            }
            if roots.is_empty() {
                return Err(ca_err("holds no certificate", None));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(config))
}

/// `sslmode=require`: the handshake's signatures are checked (the session is really
/// keyed to whoever holds the certificate's key) but not who that is: an active
/// attacker in the path can impersonate the server. libpq's meaning of `require`.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
