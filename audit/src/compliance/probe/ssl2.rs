//! SSL 2.0, which has a record format of its own: a CLIENT-HELLO offering its
//! seven cipher kinds, and the SERVER-HELLO's list of those the server has.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::*;

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
