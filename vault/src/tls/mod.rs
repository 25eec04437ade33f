//! The mTLS side of the server: the rustls configuration (ring provider, TLS 1.2 and
//! 1.3, AEAD suites only, client certificates required, checked against the client
//! CA and its CRLs, which are reloaded when they change, and against panvault's own
//! rules: clientAuth usage, one unambiguous name), the accept loop (handshakes under
//! a timeout in their own task and capped per source address, connection limits in
//! all and per client, idle connections closed, graceful shutdown), the
//! [`ClientIdentity`] read from the verified leaf certificate, a client
//! configuration for panvault's own tools, and the development PKI of
//! `panvault quickstart` and the tests.

mod accept;
mod client;
mod identity;
pub mod pki;
mod server;
mod verifier;

/// Log filter directives `panvault serve` adds unless `PANVAULT_LOG` names
/// rustls itself. rustls warns ("Illegal SNI extension") about every
/// ClientHello whose server name is an IP address, which scanners connecting
/// by IP send on each of their connections (about a thousand per sslyze run);
/// the server ignores such a name, and the warning names neither the peer nor
/// anything to act on. Its other handshake-parsing warnings are of the same kind
/// (the handshake failure itself is logged by the accept loop at debug).
pub const LOG_DIRECTIVES: &[&str] = &["rustls::msgs::handshake=error"];

pub use accept::{ClientKey, ConnStats, PeerAddr, ServeOptions, TlsConfigCell, serve_tls};
pub use client::client_config;
pub use identity::ClientIdentity;
pub use server::{
    AEAD_SUITES, CRL_POLL, iana_suite_name, load_certs, load_certs_from_pem, load_crls, load_key,
    load_key_from_pem, negotiable_suite_names, negotiable_suites, provider, server_config,
    watch_crls,
};
