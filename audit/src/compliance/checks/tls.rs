//! TLS checks: the configured server, its certificates, live endpoints, and the
//! inventory of what protects card data in transit.
use time::OffsetDateTime;

use super::{Outcome, need};
use crate::compliance::facts::{
    CertFacts, ClientAuth, EndpointFacts, Facts, HelloReply, KeyAlgorithm,
};
use crate::compliance::policy::Params;
use crate::compliance::result::Status;

/// Orders protocol versions: `1.0`/`TLS 1.0` → 10 … `1.3`/`TLS 1.3` → 13; SSL
/// versions rank below (`SSL 3.0` → 3); unknown names → 0.
pub fn version_rank(v: &str) -> u8 {
    let v = v.trim();
    let ssl = v.starts_with("SSL");
    let num = v
        .trim_start_matches("TLSv")
        .trim_start_matches("TLS")
        .trim_start_matches("SSLv")
        .trim_start_matches("SSL")
        .trim();
    match (ssl, num) {
        (true, "2" | "2.0") => 2,
        (true, "3" | "3.0") => 3,
        (false, "1" | "1.0") => 10,
        (false, "1.1") => 11,
        (false, "1.2") => 12,
        (false, "1.3") => 13,
        _ => 0,
    }
}

/// Whether a cipher suite (IANA name) is an AEAD suite: TLS 1.3's suites (in
/// IANA's `TLS_AES_128_GCM_SHA256` or rustls' `TLS13_…` spelling), and TLS 1.2
/// suites with GCM, CCM or ChaCha20-Poly1305; never NULL, export, RC4, DES, CBC
/// or anonymous suites, nor TLS 1.3's integrity-only `TLS_SHA256_SHA256`.
pub fn suite_is_aead(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    let weak = ["NULL", "EXPORT", "RC4", "DES", "CBC", "ANON", "MD5"];
    if weak.iter().any(|w| n.contains(w)) {
        return false;
    }
    n.starts_with("TLS13_")
        || n.contains("_GCM_")
        || n.ends_with("_GCM")
        || n.contains("CHACHA20_POLY1305")
        || n.contains("_CCM")
}

fn tls_name(v: &str) -> String {
    if v.starts_with("TLS") || v.starts_with("SSL") {
        v.to_owned()
    } else {
        format!("TLS {v}")
    }
}

pub(super) fn configuration(f: &Facts, p: &Params) -> Result<Outcome, Outcome> {
    let t = need(&f.tls, "TLS configuration")?;
    let min = p.str("min_tls");
    let mut o = Outcome::pass();
    o.note(format!("configuration: {}", t.source));
    if let Some(e) = &t.config_error {
        o.fail(format!("the server refuses this configuration: {e}"));
    }
    let too_old: Vec<&String> = t
        .versions
        .iter()
        .filter(|v| version_rank(v) < version_rank(min))
        .collect();
    let names: Vec<String> = t.versions.iter().map(|v| tls_name(v)).collect();
    if t.versions.is_empty() {
        o.fail("no protocol version enabled");
    } else if too_old.is_empty() {
        o.note(format!(
            "protocol versions: {} (minimum {})",
            names.join(", "),
            tls_name(min)
        ));
    } else {
        for v in too_old {
            o.fail(format!(
                "{} is allowed (minimum {})",
                tls_name(v),
                tls_name(min)
            ));
        }
    }
    let weak: Vec<&String> = t
        .cipher_suites
        .iter()
        .filter(|s| !suite_is_aead(s))
        .collect();
    if t.cipher_suites.is_empty() {
        o.fail("no cipher suite enabled");
    } else if weak.is_empty() {
        o.note(format!(
            "cipher suites (all AEAD): {}",
            t.cipher_suites.join(", ")
        ));
    } else if p.bool("aead_only") {
        for s in weak {
            o.fail(format!("cipher suite {s} is not an AEAD suite"));
        }
    } else {
        o.note(format!("cipher suites: {}", t.cipher_suites.join(", ")));
    }
    match t.client_auth {
        ClientAuth::Required => o.note(format!(
            "client certificates required, verified against {}{}",
            t.client_ca.as_deref().unwrap_or("the client CA"),
            if t.crls > 0 {
                format!(" and {} CRLs", t.crls)
            } else {
                String::new()
            }
        )),
        other if p.bool("require_client_auth") => o.fail(format!(
            "client certificates are {}",
            if other == ClientAuth::Optional {
                "optional"
            } else {
                "not requested"
            }
        )),
        _ => o.note("client certificates not required (allowed by the policy)"),
    }
    // panvault's server builds its TLS settings from constants (only the minimum
    // version is configurable, and it refuses anything below 1.2): a configuration
    // it accepts passes by construction. What is served is measured by the live
    // probe (tls.endpoints).
    if o.status == Status::Pass {
        o.note(
            "attested, not measured: versions, suites and client authentication are the \
             server's built-in settings; probe the live endpoint (--endpoint, tls.endpoints) \
             to measure what is served",
        );
        o.status = Status::Attest;
    }
    Ok(o)
}

/// Evaluates one certificate into `o`.
fn eval_cert(o: &mut Outcome, c: &CertFacts, label: &str, now: OffsetDateTime, p: &Params) {
    let warn_days = p.int("cert_expiry_warn_days");
    let min_rsa = p.int("min_rsa_bits");
    let curves = p.list("allowed_curves");
    let name = format!("{label} {:?}", c.subject);
    let left = (c.not_after - now).whole_days();
    let expiry = c.not_after.date();
    if c.not_after <= now {
        o.fail(format!("{name} expired on {expiry}"));
    } else if c.not_before > now {
        o.fail(format!(
            "{name} is not valid before {}",
            c.not_before.date()
        ));
    } else if left <= warn_days {
        o.warn(format!(
            "{name} expires on {expiry}, in {left} days (warning window {warn_days} days)"
        ));
    } else {
        o.note(format!("{name} valid until {expiry} ({left} days)"));
    }
    let key_ok = match &c.key {
        KeyAlgorithm::Rsa { bits } => i64::from(*bits) >= min_rsa,
        KeyAlgorithm::Ec { curve } => curves.iter().any(|a| a == curve),
        KeyAlgorithm::Ed25519 => curves.iter().any(|a| a == "Ed25519"),
        KeyAlgorithm::Ed448 => curves.iter().any(|a| a == "Ed448"),
        KeyAlgorithm::Other { .. } => false,
    };
    if key_ok {
        o.note(format!("{name} key {}", c.key));
    } else {
        o.fail(format!(
            "{name} key {} is not allowed (RSA ≥ {min_rsa} bits or {})",
            c.key,
            curves.join(", ")
        ));
    }
    let strong_hash = matches!(
        c.signature_hash.as_str(),
        "SHA-256" | "SHA-384" | "SHA-512" | "Ed25519" | "Ed448"
    );
    if c.self_signed && c.is_ca {
        o.note(format!(
            "{name} is a self-signed root ({}; its own signature is not relied on)",
            c.signature
        ));
    } else if strong_hash {
        o.note(format!("{name} signed with {}", c.signature));
    } else {
        o.fail(format!(
            "{name} signed with {} ({} is weaker than SHA-256)",
            c.signature, c.signature_hash
        ));
    }
}

pub(super) fn certificates(f: &Facts, p: &Params) -> Result<Outcome, Outcome> {
    let sources = need(&f.certificates, "certificates")?;
    let mut o = Outcome::pass();
    if sources.is_empty() {
        o.fail("no certificate configured");
    }
    for s in sources {
        if let Some(e) = &s.error {
            o.fail(format!("{} {}: {e}", s.role.as_str(), s.source));
            continue;
        }
        if s.certs.is_empty() {
            o.fail(format!("{} {}: no certificate", s.role.as_str(), s.source));
        }
        for (i, c) in s.certs.iter().enumerate() {
            let label = if i == 0 {
                format!("{} ({})", s.role.as_str(), s.source)
            } else {
                format!("{} #{} ({})", s.role.as_str(), i + 1, s.source)
            };
            eval_cert(&mut o, c, &label, f.now, p);
        }
    }
    Ok(o)
}

fn describe(reply: &HelloReply) -> String {
    match reply {
        HelloReply::ServerHello { version, suite } => format!("ServerHello {version} {suite}"),
        HelloReply::Alert { description } => format!("alert {description}"),
        HelloReply::Closed => "connection closed".to_owned(),
        HelloReply::Timeout => "no answer".to_owned(),
        HelloReply::Unexpected { detail } => format!("unexpected reply {detail}"),
    }
}

fn eval_endpoint(o: &mut Outcome, e: &EndpointFacts, now: OffsetDateTime, p: &Params) {
    let at = match &e.address {
        Some(a) if a != &e.endpoint => format!("{} ({a})", e.endpoint),
        _ => e.endpoint.clone(),
    };
    if let Some(err) = &e.error {
        o.error(format!("{at}: {err}"));
        return;
    }
    let min = p.str("min_tls");
    match &e.negotiated {
        Some(n) => {
            let alpn = n
                .alpn
                .as_deref()
                .map(|a| format!(", ALPN {a}"))
                .unwrap_or_default();
            let line = format!("{at}: negotiated {} {}{alpn}", n.version, n.suite);
            if version_rank(&n.version) < version_rank(min) {
                o.fail(format!("{line}: below {}", tls_name(min)));
            } else if !suite_is_aead(&n.suite) {
                o.fail(format!("{line}: not an AEAD suite"));
            } else {
                o.note(line);
            }
        }
        None => o.fail(format!(
            "{at}: no TLS 1.2/1.3 handshake: {}",
            e.handshake_error
                .as_deref()
                .unwrap_or("the server did not answer")
        )),
    }
    if let (Some(_), Some(err)) = (&e.negotiated, &e.handshake_error) {
        o.note(format!(
            "{at}: handshake without a client certificate ended with: {err}"
        ));
    }
    if p.bool("require_client_auth") {
        if !e.client_cert_requested {
            o.fail(format!(
                "{at}: the server did not ask for a client certificate"
            ));
        } else if !e.anonymous_refused {
            o.fail(format!("{at}: the server asked for a client certificate but did not refuse a client without one"));
        } else {
            o.note(format!(
                "{at}: client certificate required (a client without one was refused)"
            ));
        }
    }
    for h in &e.legacy {
        let line = format!("{at}: {} → {}", h.offered, describe(&h.reply));
        match &h.reply {
            HelloReply::ServerHello { version, suite } => {
                if version_rank(version) < version_rank(min) {
                    o.fail(format!("{line}: accepted, below {}", tls_name(min)));
                } else if !suite_is_aead(suite) {
                    o.fail(format!("{line}: accepted, not an AEAD suite"));
                } else {
                    o.note(format!("{line}: accepted (AEAD)"));
                }
            }
            HelloReply::Alert { .. } | HelloReply::Closed => o.note(format!("{line}: refused")),
            HelloReply::Timeout | HelloReply::Unexpected { .. } => {
                o.warn(format!("{line}: inconclusive"))
            }
        }
    }
    if e.chain.is_empty() && e.negotiated.is_some() {
        o.warn(format!("{at}: no certificate seen"));
    }
    for (i, c) in e.chain.iter().enumerate() {
        let label = if i == 0 {
            format!("{at} certificate")
        } else {
            format!("{at} chain #{}", i + 1)
        };
        eval_cert(o, c, &label, now, p);
    }
}

pub(super) fn endpoints(f: &Facts, p: &Params) -> Result<Outcome, Outcome> {
    if f.endpoints.is_empty() {
        return Err(Outcome::skip(
            "no live endpoint given (--endpoint HOST:PORT)",
        ));
    }
    let mut o = Outcome::pass();
    for e in &f.endpoints {
        eval_endpoint(&mut o, e, f.now, p);
    }
    Ok(o)
}

fn cert_line(c: &CertFacts) -> String {
    let sans = if c.sans.is_empty() {
        String::new()
    } else {
        format!(", SANs {}", c.sans.join(" "))
    };
    format!(
        "subject {:?}, issuer {:?}, serial {}, valid {} to {}, {}, {}{sans}, SHA-256 {}",
        c.subject,
        c.issuer,
        c.serial,
        c.not_before.date(),
        c.not_after.date(),
        c.key,
        c.signature,
        c.sha256
    )
}

pub(super) fn inventory(f: &Facts, _p: &Params) -> Result<Outcome, Outcome> {
    let mut o = Outcome::pass();
    let mut known = false;
    match need(&f.tls, "TLS configuration") {
        Ok(t) => {
            known = true;
            let names: Vec<String> = t.versions.iter().map(|v| tls_name(v)).collect();
            o.note(format!("protocols: {}", names.join(", ")));
            o.note(format!("cipher suites: {}", t.cipher_suites.join(", ")));
            o.note(format!(
                "client authentication: {:?} (CA {}, {} CRLs)",
                t.client_auth,
                t.client_ca.as_deref().unwrap_or("none"),
                t.crls
            ));
        }
        Err(early) => o.absorb(early),
    }
    match need(&f.certificates, "certificates") {
        Ok(sources) => {
            known = true;
            for s in sources {
                match &s.error {
                    Some(e) => o.fail(format!(
                        "certificate {} ({}): {e}",
                        s.source,
                        s.role.as_str()
                    )),
                    None => {
                        for c in &s.certs {
                            o.note(format!(
                                "certificate [{}] {}: {}",
                                s.role.as_str(),
                                s.source,
                                cert_line(c)
                            ));
                        }
                    }
                }
            }
        }
        Err(early) => o.absorb(early),
    }
    match need(&f.key_files, "key files") {
        Ok(keys) => {
            for k in keys {
                match (&k.error, &k.label) {
                    (Some(e), _) => o.fail(format!("key [{}] {}: {e}", k.role, k.path)),
                    (None, Some(label)) => {
                        o.note(format!("key [{}] {}: PEM {label}", k.role, k.path))
                    }
                    (None, None) => o.fail(format!(
                        "key [{}] {}: no PEM private key found",
                        k.role, k.path
                    )),
                }
            }
        }
        Err(early) => o.absorb(early),
    }
    for e in &f.endpoints {
        known = true;
        match &e.negotiated {
            Some(n) => o.note(format!(
                "endpoint {}: {} {}",
                e.endpoint, n.version, n.suite
            )),
            None => o.note(format!("endpoint {}: no modern handshake", e.endpoint)),
        }
        let accepted = crate::compliance::probe::accepted_suites(e);
        if !accepted.is_empty() {
            let list: Vec<String> = accepted.iter().map(|(v, s)| format!("{v} {s}")).collect();
            o.note(format!(
                "endpoint {}: suites accepted: {}",
                e.endpoint,
                list.join(", ")
            ));
        }
        for c in &e.chain {
            o.note(format!(
                "certificate [endpoint] {}: {}",
                e.endpoint,
                cert_line(c)
            ));
        }
    }
    if !known && o.status != Status::Error {
        return Err(Outcome::skip(o.evidence.join("; ")));
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_suites() {
        assert!(version_rank("1.0") < version_rank("TLS 1.2"));
        assert_eq!(version_rank("TLSv1.3"), 13);
        assert_eq!(version_rank("SSL 3.0"), 3);
        assert_eq!(version_rank("banana"), 0);
        assert!(suite_is_aead("TLS13_AES_128_GCM_SHA256"));
        assert!(suite_is_aead("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"));
        assert!(suite_is_aead("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"));
        assert!(!suite_is_aead("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"));
        assert!(!suite_is_aead("TLS_RSA_WITH_3DES_EDE_CBC_SHA"));
        assert!(!suite_is_aead("TLS_RSA_WITH_RC4_128_SHA"));
        assert!(!suite_is_aead("TLS_ECDH_anon_WITH_AES_128_GCM_SHA256"));
    }
}
