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
