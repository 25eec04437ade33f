//! The live TLS probe of `--endpoint HOST:PORT`.
//!
//! 1. A rustls client offering TLS 1.3 and 1.2 with every suite ring implements
//!    connects without a client certificate and records the negotiated version,
//!    suite and ALPN, the certificate chain (not verified: the probe inspects, it
//!    sends no data), whether the server asked for a client certificate, and
//!    whether it then refused the anonymous client.
//! 2. Hand-built ClientHellos that rustls cannot send, for SSL 3.0, TLS 1.0, 1.1
//!    and 1.2, are written to a plain TCP stream and the first record of the
//!    answer is classified (a ServerHello: accepted; an alert or a closed
//!    connection: refused). Each version is offered the whole suite registry
//!    ([`suites`]), one family of key exchange per hello, and a family is offered
//!    again without the suite the server picked until the server refuses: every
//!    suite a server accepts is found and named, whichever it is (a server that
//!    takes TLS 1.0 only with a NULL suite, TLS 1.2 only with Camellia-CBC).
//!    When rustls could not handshake at all, a hand-built handshake in an
//!    accepted version and suite asks about client certificates
//!    ([`legacy_client_auth`]).
//! 3. An SSL 2.0 CLIENT-HELLO (SSL 2.0's own record format) offers its seven
//!    cipher kinds; a SERVER-HELLO names those the server has.
//! 4. TLS 1.3, when the server speaks it: one rustls handshake per TLS 1.3 suite.
//!
//! Not probed: TLS 1.3 suites rustls does not implement (CCM, the
//! integrity-only `TLS_SHA256_SHA256`).
//!
//! About 650 lines on purpose: the steps above stay in one file, in order; the
//! record formats are in `hello.rs` and `ssl2.rs`, the suite registry in [`suites`].
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WantsClientCert};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, ConfigBuilder, DigitallySignedStruct, SignatureScheme,
};

use super::facts::{EndpointFacts, HelloProbe, HelloReply, Negotiated};

mod hello;
mod ssl2;
pub mod suites;

pub use hello::{classify_reply, client_hello, send_hello};
use hello::{exchange, hex_prefix, io_reply};
pub use ssl2::{SSL2_CIPHERS, ssl2, ssl2_client_hello, ssl2_server_hello_ciphers};
pub use suites::suite_name;

/// SSL 3.0.
pub const SSL3_0: u16 = 0x0300;
/// TLS 1.0.
pub const TLS1_0: u16 = 0x0301;
/// TLS 1.1.
pub const TLS1_1: u16 = 0x0302;
/// TLS 1.2.
pub const TLS1_2: u16 = 0x0303;

/// The versions the hand-built hellos offer, oldest first.
pub const HELLO_VERSIONS: [u16; 4] = [SSL3_0, TLS1_0, TLS1_1, TLS1_2];

/// Most ClientHellos per family and version: the server picks one suite per
/// hello, so this bounds the suites named per family (and the connections).
const MAX_ROUNDS: usize = 80;

/// `TLS 1.0` … for a protocol version code.
pub fn version_name(v: u16) -> String {
    match v {
        0x0002 => "SSL 2.0".to_owned(),
        0x0300 => "SSL 3.0".to_owned(),
        TLS1_0 => "TLS 1.0".to_owned(),
        TLS1_1 => "TLS 1.1".to_owned(),
        TLS1_2 => "TLS 1.2".to_owned(),
        0x0304 => "TLS 1.3".to_owned(),
        other => format!("0x{other:04x}"),
    }
}

fn alert_name(code: u8) -> String {
    let name = match code {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        22 => "record_overflow",
        40 => "handshake_failure",
        42 => "bad_certificate",
        47 => "illegal_parameter",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        109 => "missing_extension",
        112 => "unrecognized_name",
        116 => "certificate_required",
        120 => "no_application_protocol",
        _ => return format!("alert {code}"),
    };
    name.to_owned()
}

/// Offers `version` every suite of the registry, family by family; within a
/// family the server is asked again without each suite it picked, until it
/// refuses. Pushes one [`HelloProbe`] per accepted suite and per inconclusive
/// answer, and one for the refusals of the whole version.
pub fn enumerate(
    addr: SocketAddr,
    host: &str,
    version: u16,
    timeout: Duration,
    out: &mut Vec<HelloProbe>,
) {
    let label = version_name(version);
    let codes = suites::registry();
    let families = suites::by_family(&codes);
    let mut refusal: Option<HelloReply> = None;
    let mut hellos = 0usize;
    let rng = ring::rand::SystemRandom::new();
    'families: for (family, chunk) in &families {
        let mut left = chunk.clone();
        for _ in 0..MAX_ROUNDS {
            if left.is_empty() {
                break;
            }
            let mut random = [0u8; 32];
            let _ = ring::rand::SecureRandom::fill(&rng, &mut random);
            hellos += 1;
            let answer = client_hello(version, &left, Some(host), random)
                .and_then(|hello| exchange(addr, &hello, timeout));
            let (reply, picked) = match answer {
                Ok(a) => a,
                Err(e) => (
                    HelloReply::Unexpected {
                        detail: format!("cannot send: {e}"),
                    },
                    None,
                ),
            };
            let offered = format!("{label} ClientHello ({family} suites)");
            match reply {
                HelloReply::ServerHello { .. } => {
                    out.push(HelloProbe { offered, reply });
                    match picked {
                        Some(c) if left.contains(&c) => left.retain(|x| *x != c),
                        // A suite it was not offered: asking again would loop.
                        _ => break,
                    }
                }
                HelloReply::Alert { .. } | HelloReply::Closed => {
                    refusal.get_or_insert(reply);
                    break;
                }
                HelloReply::Timeout => {
                    // A server (or firewall) that lets hellos of this version go
                    // unanswered would cost a timeout per family: one is enough.
                    out.push(HelloProbe { offered, reply });
                    break 'families;
                }
                HelloReply::Unexpected { .. } => {
                    out.push(HelloProbe { offered, reply });
                    break;
                }
            }
        }
    }
    if let Some(reply) = refusal {
        out.push(HelloProbe {
            offered: format!(
                "{label} ClientHellos ({} suites in {hellos} hellos, by family)",
                codes.len()
            ),
            reply,
        });
    }
}

/// The protocol versions `e` saw accepted: the modern handshake's, and the
/// version of every ServerHello the hand-built hellos got (`TLS 1.0` …).
pub fn accepted_versions(e: &EndpointFacts) -> std::collections::BTreeSet<String> {
    let mut out: std::collections::BTreeSet<String> =
        e.negotiated.iter().map(|n| n.version.clone()).collect();
    out.extend(e.legacy.iter().filter_map(|h| match &h.reply {
        HelloReply::ServerHello { version, .. } => Some(version.clone()),
        _ => None,
    }));
    out
}

/// Every `(version, suite)` the probe saw accepted (IANA names), in the order
/// found: the hand-built hellos' and TLS 1.3's one-suite rustls handshakes.
pub fn accepted_suites(e: &EndpointFacts) -> Vec<(String, String)> {
    e.legacy
        .iter()
        .filter_map(|h| match &h.reply {
            HelloReply::ServerHello { version, suite } => Some((version.clone(), suite.clone())),
            _ => None,
        })
        .collect()
}

/// Records the server's chain; accepts any certificate (the probe inspects, it
/// never sends data), but checks the handshake signatures.
#[derive(Debug)]
struct Recorder {
    chain: Mutex<Vec<Vec<u8>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = self
            .chain
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        chain.clear();
        chain.push(end_entity.to_vec());
        chain.extend(intermediates.iter().map(|c| c.to_vec()));
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Notes whether the server asked for a client certificate; has none to give.
#[derive(Debug, Default)]
struct AskedForCert(AtomicBool);

impl ResolvesClientCert for AskedForCert {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.store(true, Ordering::SeqCst);
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

fn builder(
    provider: Arc<CryptoProvider>,
    recorder: Arc<Recorder>,
) -> Result<ConfigBuilder<ClientConfig, WantsClientCert>, rustls::Error> {
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(recorder))
}

/// TLS 1.3 by rustls, one suite per handshake (every TLS 1.3 suite ring
/// implements): pushes a [`HelloProbe`] per suite the server picked, and one
/// for those it refused.
fn tls13_suites(addr: SocketAddr, host: &str, timeout: Duration, out: &mut Vec<HelloProbe>) {
    let all: Vec<rustls::SupportedCipherSuite> = rustls::crypto::ring::default_provider()
        .cipher_suites
        .into_iter()
        .filter(|s| matches!(s, rustls::SupportedCipherSuite::Tls13(_)))
        .collect();
    let mut refused: Vec<String> = Vec::new();
    let mut last_error = String::new();
    for suite in &all {
        let name = suite_name(u16::from(suite.suite()));
        match tls13_handshake(addr, host, *suite, timeout) {
            Ok(Some(picked)) => out.push(HelloProbe {
                offered: format!("TLS 1.3 handshake offering only {name}"),
                reply: HelloReply::ServerHello {
                    version: version_name(0x0304),
                    suite: suite_name(picked),
                },
            }),
            Ok(None) => refused.push(name),
            Err(e) => {
                refused.push(name);
                last_error = e.to_string();
            }
        }
    }
    if !refused.is_empty() {
        out.push(HelloProbe {
            offered: format!("TLS 1.3 handshakes offering only {}", refused.join(", ")),
            reply: match alert_name_of(&last_error) {
                Some(description) => HelloReply::Alert { description },
                None => HelloReply::Closed,
            },
        });
    }
}

/// The alert in a rustls error text (`received fatal alert: HandshakeFailure`).
fn alert_name_of(e: &str) -> Option<String> {
    e.split_once("received fatal alert: ")
        .map(|(_, a)| a.trim().to_owned())
}

/// One rustls TLS 1.3 handshake offering only `suite`: the suite the server
/// picked, if it answered with a ServerHello.
fn tls13_handshake(
    addr: SocketAddr,
    host: &str,
    suite: rustls::SupportedCipherSuite,
    timeout: Duration,
) -> io::Result<Option<u16>> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![suite];
    let provider = Arc::new(provider);
    let recorder = Arc::new(Recorder {
        chain: Mutex::new(Vec::new()),
        provider: Arc::clone(&provider),
    });
    let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| io::Error::other(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(recorder)
        .with_client_cert_resolver(Arc::new(AskedForCert::default()));
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let mut conn = ClientConnection::new(Arc::new(config), name)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let mut sock = TcpStream::connect_timeout(&addr, timeout)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.set_write_timeout(Some(timeout))?;
    let mut failure = None;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut sock) {
            failure = Some(e);
            break;
        }
    }
    match (conn.negotiated_cipher_suite(), failure) {
        (Some(s), _) => Ok(Some(u16::from(s.suite()))),
        (None, Some(e)) => Err(e),
        (None, None) => Ok(None),
    }
}

/// Whether an I/O error from rustls is a fatal alert sent by the peer.
fn alert_of(e: &io::Error) -> Option<rustls::AlertDescription> {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(a)) => Some(*a),
        _ => None,
    }
}

/// Splits `HOST:PORT` (or `[v6]:PORT`) into the host.
fn host_of(endpoint: &str) -> &str {
    let host = endpoint.rsplit_once(':').map_or(endpoint, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Probes `endpoint` (`HOST:PORT`) with `timeout` per connection.
pub fn probe(endpoint: &str, timeout: Duration) -> EndpointFacts {
    let mut facts = EndpointFacts {
        endpoint: endpoint.to_owned(),
        address: None,
        error: None,
        negotiated: None,
        handshake_error: None,
        chain: Vec::new(),
        client_cert_requested: false,
        anonymous_refused: false,
        legacy: Vec::new(),
    };
    let addr = match endpoint.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        Ok(None) => {
            facts.error = Some("the name resolves to no address".to_owned());
            return facts;
        }
        Err(e) => {
            facts.error = Some(format!("cannot resolve: {e}"));
            return facts;
        }
    };
    facts.address = Some(addr.to_string());
    let host = host_of(endpoint).to_owned();
    if let Err(e) = modern(&mut facts, addr, &host, timeout) {
        facts.error = Some(format!("cannot connect: {e}"));
        return facts;
    }
    if facts
        .negotiated
        .as_ref()
        .is_some_and(|n| n.version == "TLS 1.3")
    {
        tls13_suites(addr, &host, timeout, &mut facts.legacy);
    }
    ssl2(addr, timeout, &mut facts.legacy);
    for version in HELLO_VERSIONS {
        enumerate(addr, &host, version, timeout, &mut facts.legacy);
    }
    if facts.negotiated.is_none() {
        // rustls found nothing it can speak: ask about client certificates in
        // a version and suite the server did accept.
        let accepted = facts.legacy.iter().rev().find_map(|h| match &h.reply {
            HelloReply::ServerHello { version, suite } => Some((version.clone(), suite.clone())),
            _ => None,
        });
        if let Some((version, suite)) = accepted {
            let version_code = HELLO_VERSIONS
                .into_iter()
                .find(|v| version_name(*v) == version);
            let suite_code = suites::registry()
                .into_iter()
                .find(|c| suite_name(*c) == suite);
            if let (Some(v), Some(c)) = (version_code, suite_code) {
                match legacy_client_auth(addr, &host, v, c, timeout) {
                    Ok(ask) => {
                        facts.client_cert_requested = ask.requested;
                        facts.anonymous_refused = ask.refused;
                    }
                    Err(e) => {
                        facts.handshake_error = Some(format!(
                            "{} (and asking about client certificates in {version}: {e})",
                            facts
                                .handshake_error
                                .as_deref()
                                .unwrap_or("no modern handshake")
                        ));
                    }
                }
            }
        }
    }
    facts
}

/// What a server said about client certificates in a hand-built handshake.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientAuthAnswer {
    /// Its first flight held a CertificateRequest.
    pub requested: bool,
    /// It refused (an alert or a closed connection) an empty Certificate.
    pub refused: bool,
}

/// Offers `version` and `suite` (which the server accepted before), reads the
/// server's first flight up to ServerHelloDone, and if it holds a
/// CertificateRequest answers with an empty Certificate: a server that
/// requires a certificate refuses at once; one that does not waits for the
/// rest of the handshake (read as "not refused" after a short wait).
pub fn legacy_client_auth(
    addr: SocketAddr,
    host: &str,
    version: u16,
    suite: u16,
    timeout: Duration,
) -> io::Result<ClientAuthAnswer> {
    let mut random = [0u8; 32];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
    let hello = client_hello(version, &[suite], Some(host), random)?;
    let mut sock = TcpStream::connect_timeout(&addr, timeout)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.set_write_timeout(Some(timeout))?;
    sock.write_all(&hello)?;
    let mut answer = ClientAuthAnswer::default();
    let mut flight: Vec<u8> = Vec::new();
    let mut done = false;
    while !done {
        let mut header = [0u8; 5];
        sock.read_exact(&mut header)?;
        if header[0] != 0x16 {
            return Err(io::Error::other(format!(
                "record type {} in the server's first flight",
                header[0]
            )));
        }
        let mut body = vec![0u8; usize::from(u16::from_be_bytes([header[3], header[4]]))];
        sock.read_exact(&mut body)?;
        flight.extend_from_slice(&body);
        // Whole handshake messages: type, 24-bit length, body.
        while let Some(&[kind, a, b, c]) = flight.get(..4) {
            let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
            if flight.len() < 4 + len {
                break;
            }
            match kind {
                13 => answer.requested = true,
                14 => done = true,
                _ => {}
            }
            flight.drain(..4 + len);
        }
        if flight.len() > 1 << 20 {
            return Err(io::Error::other("the server's first flight never ends"));
        }
    }
    if !answer.requested {
        return Ok(answer);
    }
    let v = version.to_be_bytes();
    sock.write_all(&[0x16, v[0], v[1], 0, 7, 11, 0, 0, 3, 0, 0, 0])?;
    sock.set_read_timeout(Some(timeout.min(Duration::from_secs(2))))?;
    let mut first = [0u8; 1];
    answer.refused = match sock.read(&mut first) {
        // An alert, or the connection closed or reset.
        Ok(0) => true,
        Ok(_) => first[0] == 0x15,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
    };
    Ok(answer)
}

/// The rustls handshake: version, suite, chain, client-certificate behaviour.
fn modern(
    facts: &mut EndpointFacts,
    addr: SocketAddr,
    host: &str,
    timeout: Duration,
) -> io::Result<()> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(Recorder {
        chain: Mutex::new(Vec::new()),
        provider: Arc::clone(&provider),
    });
    let asked = Arc::new(AskedForCert::default());
    let mut config = builder(Arc::clone(&provider), Arc::clone(&recorder))
        .map_err(|e| io::Error::other(e.to_string()))?
        .with_client_cert_resolver(Arc::clone(&asked) as Arc<dyn ResolvesClientCert>);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let mut conn = ClientConnection::new(Arc::new(config), name)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let mut sock = TcpStream::connect_timeout(&addr, timeout)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.set_write_timeout(Some(timeout))?;
    let mut refused = false;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut sock) {
            refused = alert_of(&e).is_some()
                || e.kind() == io::ErrorKind::UnexpectedEof
                || e.kind() == io::ErrorKind::ConnectionReset;
            facts.handshake_error = Some(e.to_string());
            break;
        }
    }
    if facts.handshake_error.is_none() {
        // TLS 1.3: the server checks the client's (empty) Certificate after the
        // client has finished; a server that requires one answers with an alert
        // (or closes the connection).
        sock.set_read_timeout(Some(timeout.min(Duration::from_secs(2))))?;
        match conn.complete_io(&mut sock) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                refused = true;
                facts.handshake_error = Some(e.to_string());
            }
            Ok(_) => {
                let mut buf = [0u8; 1];
                match conn.reader().read(&mut buf) {
                    Ok(0) => {
                        refused = true;
                        facts.handshake_error = Some("the server closed the connection".to_owned());
                    }
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        refused = true;
                        facts.handshake_error = Some("the server closed the connection".to_owned());
                    }
                    _ => {}
                }
            }
        }
    }
    facts.client_cert_requested = asked.0.load(Ordering::SeqCst);
    facts.anonymous_refused = facts.client_cert_requested && refused;
    if let (Some(v), Some(s)) = (conn.protocol_version(), conn.negotiated_cipher_suite()) {
        let version = match v {
            rustls::ProtocolVersion::TLSv1_3 => "TLS 1.3".to_owned(),
            rustls::ProtocolVersion::TLSv1_2 => "TLS 1.2".to_owned(),
            other => format!("{other:?}"),
        };
        facts.negotiated = Some(Negotiated {
            version,
            suite: suite_name(u16::from(s.suite())),
            alpn: conn
                .alpn_protocol()
                .map(|a| String::from_utf8_lossy(a).into_owned()),
        });
    }
    let chain = recorder
        .chain
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    facts.chain = chain
        .iter()
        .filter_map(|der| super::x509::cert_facts(der).ok())
        .collect();
    Ok(())
}

#[cfg(test)]
mod tests;
