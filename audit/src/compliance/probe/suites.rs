//! The cipher suite registry the probe offers: every code point IANA's "TLS Cipher
//! Suites" registry assigns (and the pre-standard ones old servers still
//! negotiate), named as IANA names them, grouped into families so that no
//! ClientHello grows large enough to make a server choke.
//!
//! Names come from rustls' `CipherSuite` (which lists most of the registry);
//! the code points it does not name are listed here.

/// Registry entries rustls does not name (ARIA/Camellia GCM and CBC-SHA256/384,
/// CCM, ECCPWD, the integrity-only TLS 1.3 suites, GOST, the PSK ChaCha20 suites,
/// ECDHE-PSK AEAD, SM4, AEGIS).
const EXTRA: &[(u16, &str)] = &[
    (0x00c6, "TLS_SM4_GCM_SM3"),
    (0x00c7, "TLS_SM4_CCM_SM3"),
    (0x1306, "TLS_AEGIS_256_SHA512"),
    (0x1307, "TLS_AEGIS_128L_SHA256"),
    (0xc06d, "TLS_DHE_PSK_WITH_ARIA_256_GCM_SHA384"),
    (0xc06e, "TLS_RSA_PSK_WITH_ARIA_128_GCM_SHA256"),
    (0xc06f, "TLS_RSA_PSK_WITH_ARIA_256_GCM_SHA384"),
    (0xc070, "TLS_ECDHE_PSK_WITH_ARIA_128_CBC_SHA256"),
    (0xc071, "TLS_ECDHE_PSK_WITH_ARIA_256_CBC_SHA384"),
    (0xc072, "TLS_ECDHE_ECDSA_WITH_CAMELLIA_128_CBC_SHA256"),
    (0xc073, "TLS_ECDHE_ECDSA_WITH_CAMELLIA_256_CBC_SHA384"),
    (0xc074, "TLS_ECDH_ECDSA_WITH_CAMELLIA_128_CBC_SHA256"),
    (0xc075, "TLS_ECDH_ECDSA_WITH_CAMELLIA_256_CBC_SHA384"),
    (0xc076, "TLS_ECDHE_RSA_WITH_CAMELLIA_128_CBC_SHA256"),
    (0xc077, "TLS_ECDHE_RSA_WITH_CAMELLIA_256_CBC_SHA384"),
    (0xc078, "TLS_ECDH_RSA_WITH_CAMELLIA_128_CBC_SHA256"),
    (0xc079, "TLS_ECDH_RSA_WITH_CAMELLIA_256_CBC_SHA384"),
    (0xc07a, "TLS_RSA_WITH_CAMELLIA_128_GCM_SHA256"),
    (0xc07b, "TLS_RSA_WITH_CAMELLIA_256_GCM_SHA384"),
    (0xc07c, "TLS_DHE_RSA_WITH_CAMELLIA_128_GCM_SHA256"),
    (0xc07d, "TLS_DHE_RSA_WITH_CAMELLIA_256_GCM_SHA384"),
    (0xc07e, "TLS_DH_RSA_WITH_CAMELLIA_128_GCM_SHA256"),
    (0xc07f, "TLS_DH_RSA_WITH_CAMELLIA_256_GCM_SHA384"),
    (0xc080, "TLS_DHE_DSS_WITH_CAMELLIA_128_GCM_SHA256"),
    (0xc081, "TLS_DHE_DSS_WITH_CAMELLIA_256_GCM_SHA384"),
    (0xc082, "TLS_DH_DSS_WITH_CAMELLIA_128_GCM_SHA256"),
    (0xc083, "TLS_DH_DSS_WITH_CAMELLIA_256_GCM_SHA384"),
    (0xc084, "TLS_DH_anon_WITH_CAMELLIA_128_GCM_SHA256"),
    (0xc085, "TLS_DH_anon_WITH_CAMELLIA_256_GCM_SHA384"),
    (0xc086, "TLS_ECDHE_ECDSA_WITH_CAMELLIA_128_GCM_SHA256"),
    (0xc087, "TLS_ECDHE_ECDSA_WITH_CAMELLIA_256_GCM_SHA384"),
    (0xc088, "TLS_ECDH_ECDSA_WITH_CAMELLIA_128_GCM_SHA256"),
    (0xc089, "TLS_ECDH_ECDSA_WITH_CAMELLIA_256_GCM_SHA384"),
    (0xc08a, "TLS_ECDHE_RSA_WITH_CAMELLIA_128_GCM_SHA256"),
    (0xc08b, "TLS_ECDHE_RSA_WITH_CAMELLIA_256_GCM_SHA384"),
    (0xc08c, "TLS_ECDH_RSA_WITH_CAMELLIA_128_GCM_SHA256"),
    (0xc08d, "TLS_ECDH_RSA_WITH_CAMELLIA_256_GCM_SHA384"),
    (0xc08e, "TLS_PSK_WITH_CAMELLIA_128_GCM_SHA256"),
    (0xc08f, "TLS_PSK_WITH_CAMELLIA_256_GCM_SHA384"),
    (0xc090, "TLS_DHE_PSK_WITH_CAMELLIA_128_GCM_SHA256"),
    (0xc091, "TLS_DHE_PSK_WITH_CAMELLIA_256_GCM_SHA384"),
    (0xc092, "TLS_RSA_PSK_WITH_CAMELLIA_128_GCM_SHA256"),
    (0xc093, "TLS_RSA_PSK_WITH_CAMELLIA_256_GCM_SHA384"),
    (0xc094, "TLS_PSK_WITH_CAMELLIA_128_CBC_SHA256"),
    (0xc095, "TLS_PSK_WITH_CAMELLIA_256_CBC_SHA384"),
    (0xc096, "TLS_DHE_PSK_WITH_CAMELLIA_128_CBC_SHA256"),
    (0xc097, "TLS_DHE_PSK_WITH_CAMELLIA_256_CBC_SHA384"),
    (0xc098, "TLS_RSA_PSK_WITH_CAMELLIA_128_CBC_SHA256"),
    (0xc099, "TLS_RSA_PSK_WITH_CAMELLIA_256_CBC_SHA384"),
    (0xc09a, "TLS_ECDHE_PSK_WITH_CAMELLIA_128_CBC_SHA256"),
    (0xc09b, "TLS_ECDHE_PSK_WITH_CAMELLIA_256_CBC_SHA384"),
    (0xc09c, "TLS_RSA_WITH_AES_128_CCM"),
    (0xc09d, "TLS_RSA_WITH_AES_256_CCM"),
    (0xc09e, "TLS_DHE_RSA_WITH_AES_128_CCM"),
    (0xc09f, "TLS_DHE_RSA_WITH_AES_256_CCM"),
    (0xc0a0, "TLS_RSA_WITH_AES_128_CCM_8"),
    (0xc0a1, "TLS_RSA_WITH_AES_256_CCM_8"),
    (0xc0a2, "TLS_DHE_RSA_WITH_AES_128_CCM_8"),
    (0xc0a3, "TLS_DHE_RSA_WITH_AES_256_CCM_8"),
    (0xc0a4, "TLS_PSK_WITH_AES_128_CCM"),
    (0xc0a5, "TLS_PSK_WITH_AES_256_CCM"),
    (0xc0a6, "TLS_DHE_PSK_WITH_AES_128_CCM"),
    (0xc0a7, "TLS_DHE_PSK_WITH_AES_256_CCM"),
    (0xc0a8, "TLS_PSK_WITH_AES_128_CCM_8"),
    (0xc0a9, "TLS_PSK_WITH_AES_256_CCM_8"),
    (0xc0aa, "TLS_PSK_DHE_WITH_AES_128_CCM_8"),
    (0xc0ab, "TLS_PSK_DHE_WITH_AES_256_CCM_8"),
    (0xc0ac, "TLS_ECDHE_ECDSA_WITH_AES_128_CCM"),
    (0xc0ad, "TLS_ECDHE_ECDSA_WITH_AES_256_CCM"),
    (0xc0ae, "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8"),
    (0xc0af, "TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8"),
    (0xc0b0, "TLS_ECCPWD_WITH_AES_128_GCM_SHA256"),
    (0xc0b1, "TLS_ECCPWD_WITH_AES_256_GCM_SHA384"),
    (0xc0b2, "TLS_ECCPWD_WITH_AES_128_CCM_SHA256"),
    (0xc0b3, "TLS_ECCPWD_WITH_AES_256_CCM_SHA384"),
    (0xc0b4, "TLS_SHA256_SHA256"),
    (0xc0b5, "TLS_SHA384_SHA384"),
    (0xc100, "TLS_GOSTR341112_256_WITH_KUZNYECHIK_CTR_OMAC"),
    (0xc101, "TLS_GOSTR341112_256_WITH_MAGMA_CTR_OMAC"),
    (0xc102, "TLS_GOSTR341112_256_WITH_28147_CNT_IMIT"),
    (0xc103, "TLS_GOSTR341112_256_WITH_KUZNYECHIK_MGM_L"),
    (0xc104, "TLS_GOSTR341112_256_WITH_MAGMA_MGM_L"),
    (0xc105, "TLS_GOSTR341112_256_WITH_KUZNYECHIK_MGM_S"),
    (0xc106, "TLS_GOSTR341112_256_WITH_MAGMA_MGM_S"),
    (0xccaa, "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
    (0xccab, "TLS_PSK_WITH_CHACHA20_POLY1305_SHA256"),
    (0xccac, "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256"),
    (0xccad, "TLS_DHE_PSK_WITH_CHACHA20_POLY1305_SHA256"),
    (0xccae, "TLS_RSA_PSK_WITH_CHACHA20_POLY1305_SHA256"),
    (0xd001, "TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256"),
    (0xd002, "TLS_ECDHE_PSK_WITH_AES_256_GCM_SHA384"),
    (0xd003, "TLS_ECDHE_PSK_WITH_AES_128_CCM_8_SHA256"),
    (0xd005, "TLS_ECDHE_PSK_WITH_AES_128_CCM_SHA256"),
];

/// Signalling values, not suites: never offered as a suite.
const SIGNALS: &[u16] = &[0x00ff, 0x5600];

/// The IANA name of a suite code (`TLS_AES_128_GCM_SHA256` for TLS 1.3, as
/// sslyze and testssl.sh print it), or `None` for an unassigned code.
pub fn iana_name(code: u16) -> Option<String> {
    if let Some((_, n)) = EXTRA.iter().find(|(c, _)| *c == code) {
        return Some((*n).to_owned());
    }
    let name = rustls::CipherSuite::from(code).as_str()?;
    let name = match name {
        // rustls names the code by both of its historical uses.
        "TLS_KRB5_WITH_DES_CBC_SHA_or_SSL_FORTEZZA_KEA_WITH_RC4_128_SHA" => {
            "TLS_KRB5_WITH_DES_CBC_SHA"
        }
        other => other,
    };
    Some(match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name.to_owned(),
    })
}

/// The name of a suite code: its IANA name, or its hex code.
pub fn suite_name(code: u16) -> String {
    iana_name(code).unwrap_or_else(|| format!("0x{code:04x}"))
}

/// Every named suite code for TLS 1.2 and below (TLS 1.3's `0x13xx` suites and
/// the signalling values left out), ascending.
pub fn registry() -> Vec<u16> {
    (0..=u16::MAX)
        .filter(|c| c >> 8 != 0x13 && !SIGNALS.contains(c) && iana_name(*c).is_some())
        .collect()
}

/// The family a suite belongs to, by key exchange: ECDHE-ECDSA, ECDHE-RSA,
/// static ECDH, DHE, static DH, RSA, anonymous, PSK, SRP, Kerberos, and the rest.
pub fn family(name: &str) -> &'static str {
    let kx = name
        .strip_prefix("TLS_")
        .or_else(|| name.strip_prefix("SSL_"))
        .unwrap_or(name);
    let kx = kx.split_once("_WITH_").map_or(kx, |(k, _)| k);
    if kx.contains("anon") {
        "anonymous"
    } else if kx.contains("PSK") {
        "PSK"
    } else if kx.starts_with("ECDHE_ECDSA") {
        "ECDHE-ECDSA"
    } else if kx.starts_with("ECDHE_RSA") {
        "ECDHE-RSA"
    } else if kx.starts_with("ECDH") || kx.starts_with("ECMQV") {
        "ECDH"
    } else if kx.starts_with("DHE") {
        "DHE"
    } else if kx.starts_with("DH_") {
        "DH"
    } else if kx.starts_with("RSA") {
        "RSA"
    } else if kx.starts_with("SRP") {
        "SRP"
    } else if kx.starts_with("KRB5") {
        "Kerberos"
    } else {
        "other"
    }
}

/// The most suites one hand-built ClientHello offers: small hellos, as old
/// servers that choke on long suite lists expect (128 bytes of suites at most).
pub const MAX_PER_HELLO: usize = 64;

/// `codes` split into families (in the order above), each cut into hellos of
/// at most [`MAX_PER_HELLO`] suites.
pub fn by_family(codes: &[u16]) -> Vec<(&'static str, Vec<u16>)> {
    let order = [
        "ECDHE-ECDSA",
        "ECDHE-RSA",
        "RSA",
        "DHE",
        "ECDH",
        "DH",
        "anonymous",
        "PSK",
        "SRP",
        "Kerberos",
        "other",
    ];
    let mut out = Vec::new();
    for fam in order {
        let members: Vec<u16> = codes
            .iter()
            .copied()
            .filter(|c| family(&suite_name(*c)) == fam)
            .collect();
        for chunk in members.chunks(MAX_PER_HELLO) {
            out.push((fam, chunk.to_vec()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_families() {
        assert_eq!(suite_name(0x1302), "TLS_AES_256_GCM_SHA384");
        assert_eq!(
            suite_name(0xc02c),
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
        );
        assert_eq!(suite_name(0xc006), "TLS_ECDHE_ECDSA_WITH_NULL_SHA");
        assert_eq!(
            suite_name(0xc077),
            "TLS_ECDHE_RSA_WITH_CAMELLIA_256_CBC_SHA384"
        );
        assert_eq!(suite_name(0x0041), "TLS_RSA_WITH_CAMELLIA_128_CBC_SHA");
        assert_eq!(suite_name(0x0096), "TLS_RSA_WITH_SEED_CBC_SHA");
        assert_eq!(suite_name(0xabcd), "0xabcd");
        assert_eq!(family("TLS_ECDHE_ECDSA_WITH_NULL_SHA"), "ECDHE-ECDSA");
        assert_eq!(family("TLS_DH_anon_WITH_AES_128_CBC_SHA"), "anonymous");
        assert_eq!(family("TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA"), "PSK");
        assert_eq!(family("TLS_RSA_EXPORT_WITH_RC4_40_MD5"), "RSA");
    }

    #[test]
    fn the_registry_is_whole_and_split() {
        let all = registry();
        // IANA assigns about 340 suites below TLS 1.3; rustls adds old drafts.
        assert!(all.len() > 330, "{}", all.len());
        for code in [
            0x0001, 0x000a, 0x0041, 0x0084, 0x0096, 0xc006, 0xc072, 0xc09c, 0xc0ad, 0xccaa, 0xd001,
        ] {
            assert!(all.contains(&code), "0x{code:04x}");
        }
        assert!(!all.contains(&0x00ff) && !all.contains(&0x1301));
        let split = by_family(&all);
        let total: usize = split.iter().map(|(_, c)| c.len()).sum();
        assert_eq!(total, all.len(), "every suite in exactly one hello");
        assert!(
            split
                .iter()
                .all(|(_, c)| !c.is_empty() && c.len() <= MAX_PER_HELLO)
        );
    }
}
