//! Hand-built TLS records: ClientHellos rustls cannot send (SSL 3.0 to TLS 1.2,
//! any suite list), and the classification of the first record a server answers.
use super::*;

pub(super) fn push_u16(out: &mut Vec<u8>, v: usize) -> io::Result<()> {
    let v = u16::try_from(v)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ClientHello field too long"))?;
    out.extend_from_slice(&v.to_be_bytes());
    Ok(())
}

pub(super) fn push_ext(out: &mut Vec<u8>, kind: u16, body: &[u8]) -> io::Result<()> {
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
pub(super) fn record(version: u16, body: &[u8]) -> io::Result<Vec<u8>> {
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

pub(super) fn hex_prefix(b: &[u8]) -> String {
    b.iter()
        .take(16)
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join("")
}

/// The version and suite codes of a ServerHello record.
pub(super) fn server_hello_codes(header: &[u8], body: &[u8]) -> Option<(u16, Option<u16>)> {
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

pub(super) fn io_reply(e: &io::Error) -> HelloReply {
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
pub(super) fn exchange(
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
