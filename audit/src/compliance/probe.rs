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

pub mod suites;

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

fn push_u16(out: &mut Vec<u8>, v: usize) -> io::Result<()> {
    let v = u16::try_from(v)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ClientHello field too long"))?;
    out.extend_from_slice(&v.to_be_bytes());
    Ok(())
}

fn push_ext(out: &mut Vec<u8>, kind: u16, body: &[u8]) -> io::Result<()> {
    out.extend_from_slice(&kind.to_be_bytes());
    push_u16(out, body.len())?;
    out.extend_from_slice(body);
    Ok(())
}

/// A ClientHello record offering `version` with `suites`, with SNI `host` (when
/// it is a name), the usual groups and point formats, signature algorithms from
/// TLS 1.2 on, and the renegotiation-info SCSV. An SSL 3.0 hello carries no
/// extensions (SSL 3.0 has none) and an SSL 3.0 record version.
pub fn client_hello(
    version: u16,
    suites: &[u16],
    host: Option<&str>,
    random: [u8; 32],
) -> io::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(256);
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&random);
    body.push(0); // no session id
    push_u16(&mut body, (suites.len() + 1) * 2)?;
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&0x00ffu16.to_be_bytes()); // TLS_EMPTY_RENEGOTIATION_INFO_SCSV
    body.extend_from_slice(&[1, 0]); // compression: null only
    if version <= SSL3_0 {
        return record(version, &body);
    }
    let mut ext = Vec::new();
    if let Some(h) = host.filter(|h| h.parse::<std::net::IpAddr>().is_err() && !h.is_empty()) {
        let mut sni = Vec::new();
        push_u16(&mut sni, h.len() + 3)?;
        sni.push(0);
        push_u16(&mut sni, h.len())?;
        sni.extend_from_slice(h.as_bytes());
        push_ext(&mut ext, 0x0000, &sni)?;
    }
    // supported_groups: x25519, secp256r1, secp384r1, secp521r1, x448, ffdhe2048-8192
    let groups: [u16; 10] = [
        0x001d, 0x0017, 0x0018, 0x0019, 0x001e, 0x0100, 0x0101, 0x0102, 0x0103, 0x0104,
    ];
    let mut g = Vec::new();
    push_u16(&mut g, groups.len() * 2)?;
    for x in groups {
        g.extend_from_slice(&x.to_be_bytes());
    }
    push_ext(&mut ext, 0x000a, &g)?;
    // ec_point_formats: uncompressed
    push_ext(&mut ext, 0x000b, &[1, 0])?;
    if version >= TLS1_2 {
        // Every signature scheme an old server may insist on (SHA-1, DSA).
        let schemes: [u16; 17] = [
            0x0403, 0x0503, 0x0603, 0x0807, 0x0808, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601,
            0x0203, 0x0201, 0x0402, 0x0202, 0x0502, 0x0602,
        ];
        let mut sa = Vec::new();
        push_u16(&mut sa, schemes.len() * 2)?;
        for s in schemes {
            sa.extend_from_slice(&s.to_be_bytes());
        }
        push_ext(&mut ext, 0x000d, &sa)?;
    }
    // Some TLS terminators drop a ClientHello of 256 to 511 bytes: pad it past
    // (the padding extension, RFC 7685).
    let size = 4 + body.len() + 2 + ext.len();
    if (256..512).contains(&size) {
        let pad = 512usize.saturating_sub(size + 4);
        push_ext(&mut ext, 0x0015, &vec![0u8; pad])?;
    }
    push_u16(&mut body, ext.len())?;
    body.extend_from_slice(&ext);
    record(version, &body)
}

/// The handshake record around a ClientHello body: record version TLS 1.0 (what
/// clients send for compatibility), SSL 3.0 for an SSL 3.0 hello.
fn record(version: u16, body: &[u8]) -> io::Result<Vec<u8>> {
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ClientHello too long"))?;
    let mut hs = vec![1u8];
    hs.extend_from_slice(len.to_be_bytes().get(1..).unwrap_or(&[0, 0, 0]));
    hs.extend_from_slice(body);
    let mut record = vec![0x16, 0x03, if version <= SSL3_0 { 0x00 } else { 0x01 }];
    push_u16(&mut record, hs.len())?;
    record.extend_from_slice(&hs);
    Ok(record)
}

fn hex_prefix(b: &[u8]) -> String {
    b.iter()
        .take(16)
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join("")
}

/// The version and suite codes of a ServerHello record.
fn server_hello_codes(header: &[u8], body: &[u8]) -> Option<(u16, Option<u16>)> {
    if header.first() != Some(&0x16) || body.first() != Some(&2) {
        return None;
    }
    let version = body
        .get(4..6)
        .and_then(|v| <[u8; 2]>::try_from(v).ok())
        .map(u16::from_be_bytes)?;
    let sid_len = body.get(38).copied().map(usize::from);
    let suite = sid_len
        .and_then(|l| body.get(39 + l..41 + l))
        .and_then(|s| <[u8; 2]>::try_from(s).ok())
        .map(u16::from_be_bytes);
    Some((version, suite))
}

/// Classifies the first record a server sent back.
pub fn classify_reply(header: &[u8], body: &[u8]) -> HelloReply {
    match header.first() {
        Some(0x15) => {
            let desc = body
                .get(1)
                .copied()
                .map_or_else(|| "unknown".to_owned(), alert_name);
            HelloReply::Alert { description: desc }
        }
        Some(0x16) if body.first() == Some(&2) => match server_hello_codes(header, body) {
            Some((v, suite)) => HelloReply::ServerHello {
                version: version_name(v),
                suite: suite.map_or_else(|| "?".to_owned(), suite_name),
            },
            None => HelloReply::Unexpected {
                detail: format!("short ServerHello {}", hex_prefix(body)),
            },
        },
        _ => HelloReply::Unexpected {
            detail: format!("{}{}", hex_prefix(header), hex_prefix(body)),
        },
    }
}

fn io_reply(e: &io::Error) -> HelloReply {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => HelloReply::Timeout,
        _ => HelloReply::Closed,
    }
}

/// Sends `hello` to `addr` and classifies the answer.
pub fn send_hello(addr: SocketAddr, hello: &[u8], timeout: Duration) -> io::Result<HelloReply> {
    exchange(addr, hello, timeout).map(|(reply, _)| reply)
}

/// Sends `hello` to `addr`: the classified answer, and the code of the suite
/// a ServerHello picked.
fn exchange(
    addr: SocketAddr,
    hello: &[u8],
    timeout: Duration,
) -> io::Result<(HelloReply, Option<u16>)> {
    let mut sock = TcpStream::connect_timeout(&addr, timeout)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.set_write_timeout(Some(timeout))?;
    if let Err(e) = sock.write_all(hello) {
        return Ok((io_reply(&e), None));
    }
    let mut header = [0u8; 5];
    if let Err(e) = sock.read_exact(&mut header) {
        return Ok((io_reply(&e), None));
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]])).min(18_432);
    let mut body = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match sock.read(body.get_mut(got..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) => break,
        }
    }
    body.truncate(got);
    let suite = server_hello_codes(&header, &body).and_then(|(_, s)| s);
    Ok((classify_reply(&header, &body), suite))
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

/// SSL 2.0's cipher kinds (3-byte codes) and their names.
pub const SSL2_CIPHERS: [([u8; 3], &str); 7] = [
    ([0x01, 0x00, 0x80], "SSL_CK_RC4_128_WITH_MD5"),
    ([0x02, 0x00, 0x80], "SSL_CK_RC4_128_EXPORT40_WITH_MD5"),
    ([0x03, 0x00, 0x80], "SSL_CK_RC2_128_CBC_WITH_MD5"),
    ([0x04, 0x00, 0x80], "SSL_CK_RC2_128_CBC_EXPORT40_WITH_MD5"),
    ([0x05, 0x00, 0x80], "SSL_CK_IDEA_128_CBC_WITH_MD5"),
    ([0x06, 0x00, 0x40], "SSL_CK_DES_64_CBC_WITH_MD5"),
    ([0x07, 0x00, 0xc0], "SSL_CK_DES_192_EDE3_CBC_WITH_MD5"),
];

/// An SSL 2.0 CLIENT-HELLO offering every SSL 2.0 cipher kind.
pub fn ssl2_client_hello(challenge: [u8; 16]) -> Vec<u8> {
    let mut msg = vec![1, 0x00, 0x02]; // CLIENT-HELLO, version 2
    msg.extend_from_slice(&[0, 21, 0, 0, 0, 16]); // cipher specs, session id, challenge lengths
    for (code, _) in SSL2_CIPHERS {
        msg.extend_from_slice(&code);
    }
    msg.extend_from_slice(&challenge);
    // Two-byte header: high bit set, 15-bit length (always short here).
    let len = u8::try_from(msg.len()).unwrap_or(u8::MAX);
    let mut out = vec![0x80, len];
    out.extend_from_slice(&msg);
    out
}

/// The cipher kinds of an SSL 2.0 SERVER-HELLO (`header` is its two-byte
/// record header), or `None` when `body` is not one.
pub fn ssl2_server_hello_ciphers(header: [u8; 2], body: &[u8]) -> Option<Vec<String>> {
    if header[0] & 0x80 == 0 || body.first() != Some(&4) {
        return None;
    }
    let u16_at = |i: usize| {
        body.get(i..i + 2)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map(u16::from_be_bytes)
            .map(usize::from)
    };
    let cert_len = u16_at(5)?;
    let specs_len = u16_at(7)?;
    let start = 11 + cert_len;
    let specs = body.get(start..start + specs_len)?;
    Some(
        specs
            .chunks(3)
            .map(|c| {
                SSL2_CIPHERS
                    .iter()
                    .find(|(code, _)| code.as_slice() == c)
                    .map_or_else(
                        || format!("SSL2 {}", hex_prefix(c)),
                        |(_, n)| (*n).to_owned(),
                    )
            })
            .collect(),
    )
}

/// Offers SSL 2.0 (a CLIENT-HELLO in SSL 2.0's own record format): one
/// [`HelloProbe`] per cipher kind a SERVER-HELLO lists, or one for the refusal.
pub fn ssl2(addr: SocketAddr, timeout: Duration, out: &mut Vec<HelloProbe>) {
    let offered = format!("SSL 2.0 CLIENT-HELLO ({} cipher kinds)", SSL2_CIPHERS.len());
    let mut challenge = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut challenge);
    let answer = (|| -> io::Result<HelloReply> {
        let mut sock = TcpStream::connect_timeout(&addr, timeout)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.set_write_timeout(Some(timeout))?;
        if let Err(e) = sock.write_all(&ssl2_client_hello(challenge)) {
            return Ok(io_reply(&e));
        }
        let mut header = [0u8; 2];
        if let Err(e) = sock.read_exact(&mut header) {
            return Ok(io_reply(&e));
        }
        if header[0] & 0x80 == 0 {
            // A TLS record (an alert, most likely): read the rest of its header.
            let mut rest = [0u8; 3];
            if let Err(e) = sock.read_exact(&mut rest) {
                return Ok(io_reply(&e));
            }
            let tls_header = [header[0], header[1], rest[0], rest[1], rest[2]];
            let mut body = vec![0u8; usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(64)];
            let _ = sock.read_exact(&mut body);
            return Ok(classify_reply(&tls_header, &body));
        }
        let len = usize::from(u16::from_be_bytes([header[0] & 0x7f, header[1]]));
        let mut body = vec![0u8; len];
        if let Err(e) = sock.read_exact(&mut body) {
            return Ok(io_reply(&e));
        }
        Ok(match ssl2_server_hello_ciphers(header, &body) {
            Some(ciphers) if ciphers.is_empty() => HelloReply::Unexpected {
                detail: "SSL 2.0 SERVER-HELLO without a cipher kind".to_owned(),
            },
            Some(ciphers) => {
                for c in ciphers {
                    out.push(HelloProbe {
                        offered: offered.clone(),
                        reply: HelloReply::ServerHello {
                            version: version_name(0x0002),
                            suite: c,
                        },
                    });
                }
                return Ok(HelloReply::ServerHello {
                    version: version_name(0x0002),
                    suite: String::new(),
                });
            }
            None => HelloReply::Unexpected {
                detail: format!("SSL 2.0 {}", hex_prefix(&body)),
            },
        })
    })();
    match answer {
        Ok(HelloReply::ServerHello { .. }) => {}
        Ok(reply) => out.push(HelloProbe { offered, reply }),
        Err(e) => out.push(HelloProbe {
            offered,
            reply: HelloReply::Unexpected {
                detail: format!("cannot send: {e}"),
            },
        }),
    }
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
mod tests {
    use super::*;

    #[test]
    fn hellos_stay_out_of_256_to_511_bytes() {
        for n in 1..=suites::MAX_PER_HELLO {
            let codes: Vec<u16> = suites::registry().into_iter().take(n).collect();
            for host in [Some("vault.example"), None] {
                let h = client_hello(TLS1_2, &codes, host, [0; 32]).unwrap();
                let hs = h.len() - 5;
                assert!(!(256..512).contains(&hs), "{n} suites: {hs} bytes");
            }
        }
    }

    #[test]
    fn ssl2_hellos() {
        let h = ssl2_client_hello([9; 16]);
        assert_eq!(usize::from(h[1]), h.len() - 2);
        assert_eq!(&h[2..5], &[1, 0, 2]);
        assert_eq!(h.len(), 2 + 9 + 21 + 16);
        // SERVER-HELLO: no session hit, X.509, version 2, a 3-byte "certificate",
        // two cipher kinds, a 16-byte connection id.
        let mut sh = vec![4, 0, 1, 0, 2, 0, 3, 0, 6, 0, 16, 0xaa, 0xbb, 0xcc];
        sh.extend_from_slice(&[0x01, 0x00, 0x80, 0x07, 0x00, 0xc0]);
        sh.extend_from_slice(&[0; 16]);
        assert_eq!(
            ssl2_server_hello_ciphers([0x80, 40], &sh).unwrap(),
            [
                "SSL_CK_RC4_128_WITH_MD5",
                "SSL_CK_DES_192_EDE3_CBC_WITH_MD5"
            ]
        );
        assert_eq!(ssl2_server_hello_ciphers([0x15, 3], &sh), None);
        assert_eq!(ssl2_server_hello_ciphers([0x80, 40], &sh[..12]), None);
    }

    #[test]
    fn hello_layout() {
        let h = client_hello(TLS1_0, &[0x002f], Some("vault.example"), [7; 32]).unwrap();
        assert_eq!(&h[..3], &[0x16, 0x03, 0x01]);
        let rec_len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        assert_eq!(rec_len, h.len() - 5);
        assert_eq!(h[5], 1);
        let hs_len = usize::from(h[6]) << 16 | usize::from(h[7]) << 8 | usize::from(h[8]);
        assert_eq!(hs_len, rec_len - 4);
        assert_eq!(&h[9..11], &[0x03, 0x01]);
        assert!(h.windows(13).any(|w| w == b"vault.example"));
        let ip = client_hello(TLS1_2, &[0xc009, 0x002f], Some("127.0.0.1"), [0; 32]).unwrap();
        assert!(
            !ip.windows(9).any(|w| w == b"127.0.0.1"),
            "no SNI for an IP address"
        );
    }

    #[test]
    fn replies() {
        let mut body = vec![2, 0, 0, 70, 0x03, 0x01];
        body.extend([0u8; 32]);
        body.push(0);
        body.extend([0xc0, 0x13, 0]);
        assert_eq!(
            classify_reply(&[0x16, 3, 1, 0, 0], &body),
            HelloReply::ServerHello {
                version: "TLS 1.0".into(),
                suite: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA".into()
            }
        );
        assert_eq!(
            classify_reply(&[0x15, 3, 3, 0, 2], &[2, 70]),
            HelloReply::Alert {
                description: "protocol_version".into()
            }
        );
        assert!(matches!(
            classify_reply(b"HTTP/", b"1.1 400"),
            HelloReply::Unexpected { .. }
        ));
        assert_eq!(host_of("[::1]:443"), "::1");
        assert_eq!(host_of("vault.example:8443"), "vault.example");
    }
}
