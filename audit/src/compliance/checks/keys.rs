//! Key checks: cryptoperiods, retired versions, the AES-GCM nonce budget, dual
//! control, the key-encrypting key, keyed fingerprints.
use super::{Outcome, need};
use crate::compliance::facts::{DEV_PASSPHRASE_FILE, Fact, Facts, KeyState, SealFacts};
use crate::compliance::policy::Params;
use crate::compliance::result::Status;

/// The status of an age against a limit and a warning margin.
fn age_status(age: i64, max: i64, warn_days: i64) -> Status {
    if age > max {
        Status::Fail
    } else if age > max.saturating_sub(warn_days) {
        Status::Warn
    } else {
        Status::Pass
    }
}

pub(super) fn cryptoperiod(f: &Facts, p: &Params) -> Result<Outcome, Outcome> {
    let k = need(&f.keys, "key inventory")?;
    let (max_key, max_root, warn) = (
        p.int("max_key_age_days"),
        p.int("max_root_age_days"),
        p.int("warn_days"),
    );
    let mut o = Outcome::pass();
    let active: Vec<_> = k
        .data_keys
        .iter()
        .filter(|d| d.state == KeyState::Active)
        .collect();
    match active.as_slice() {
        [] => o.fail("no active data key"),
        [a] => {
            let st = age_status(a.age_days, max_key, warn);
            let line = format!(
                "active data key v{} is {} days old (cryptoperiod {max_key} days)",
                a.version, a.age_days
            );
            match st {
                Status::Fail => o.fail(format!("{line}: past its cryptoperiod")),
                Status::Warn => o.warn(format!(
                    "{line}: reaches its cryptoperiod in {} days",
                    max_key - a.age_days
                )),
                _ => o.note(line),
            }
        }
        many => o.fail(format!("{} data keys are active at once", many.len())),
    }
    let line = format!(
        "root key is {} days old (cryptoperiod {max_root} days)",
        k.root_age_days
    );
    match age_status(k.root_age_days, max_root, warn) {
        Status::Fail => o.fail(format!("{line}: past its cryptoperiod")),
        Status::Warn => o.warn(format!(
            "{line}: reaches its cryptoperiod in {} days",
            max_root - k.root_age_days
        )),
        _ => o.note(line),
    }
    Ok(o)
}

pub(super) fn retired_versions(f: &Facts, p: &Params) -> Result<Outcome, Outcome> {
    let k = need(&f.keys, "key inventory")?;
    let grace = p.int("rewrap_grace_days");
    let mut o = Outcome::pass();
    for d in &k.data_keys {
        let v = d.version;
        match &d.state {
            KeyState::Active => o.note(format!("v{v} active: {} records", d.records)),
            KeyState::DecryptOnly if d.records == 0 => o.note(format!("v{v} decrypt-only: no records (can be retired)")),
            KeyState::DecryptOnly => match d.superseded_days {
                Some(days) if days > grace => o.fail(format!(
                    "v{v} decrypt-only: {} records still under it {days} days after it was superseded (grace {grace} days)",
                    d.records
                )),
                Some(days) => o.note(format!("v{v} decrypt-only: {} records, superseded {days} days ago (re-wrap due within {grace} days)", d.records)),
                None => o.warn(format!("v{v} decrypt-only with {} records, but no newer key", d.records)),
            },
            KeyState::Retired if d.records > 0 => o.fail(format!("v{v} retired but {} records are still under it", d.records)),
            KeyState::Retired => o.note(format!("v{v} retired: no records")),
            KeyState::Destroyed if d.records > 0 => {
                o.fail(format!("v{v} destroyed but {} records are still under it (they cannot be decrypted)", d.records));
            }
            KeyState::Destroyed => o.note(format!("v{v} destroyed: no records")),
        }
    }
    if k.data_keys.is_empty() {
        o.fail("no data keys");
    }
    Ok(o)
}

pub(super) fn nonce_budget(f: &Facts, p: &Params) -> Result<Outcome, Outcome> {
    let k = need(&f.keys, "key inventory")?;
    let max = p.int("max_encryptions");
    let warn = p.int("warn_encryptions").min(max);
    let mut o = Outcome::pass();
    for d in &k.data_keys {
        let pct = percent(d.encryptions, max);
        let line = format!(
            "v{} ({}): {} encryptions, {pct} of the {max} limit",
            d.version,
            d.state.as_str(),
            d.encryptions
        );
        if d.encryptions >= max {
            o.fail(format!("{line}: limit reached"));
        } else if d.encryptions >= warn && d.state == KeyState::Active {
            o.warn(format!("{line}: rotate soon (warning at {warn})"));
        } else {
            o.note(line);
        }
    }
    if k.data_keys.is_empty() {
        o.fail("no data keys");
    }
    Ok(o)
}

/// `n / max` as a percentage with two decimals, without floats.
fn percent(n: i64, max: i64) -> String {
    if max <= 0 {
        return "n/a".to_owned();
    }
    let basis = i128::from(n) * 10_000 / i128::from(max);
    format!("{}.{:02}%", basis / 100, basis % 100)
}

pub(super) fn dual_control(f: &Facts, p: &Params) -> Result<Outcome, Outcome> {
    let k = need(&f.keys, "key inventory")?;
    let (min_m, min_n) = (p.int("min_threshold"), p.int("min_shares"));
    let mut o = Outcome::pass();
    match &k.seal {
        SealFacts::Shares { total, threshold } => {
            let line = format!("root key sealed with {threshold}-of-{total} custodian shares");
            if i64::from(*threshold) < min_m {
                o.fail(format!(
                    "{line}: threshold below {min_m}, one custodian can unseal"
                ));
            } else if i64::from(*total) < min_n || total < threshold {
                o.fail(format!("{line}: fewer than {min_n} shares"));
            } else {
                o.note(format!(
                    "{line}: no single custodian can unseal (split knowledge, dual control)"
                ));
            }
        }
        SealFacts::Passphrase { .. } => {
            o.fail(
                "root key sealed with a single passphrase: one person can unseal (no dual control)",
            );
            if let Some(dev) = development_passphrase(f) {
                o.note(format!(
                    "development vault ({dev} is the passphrase file `panvault quickstart` writes): \
                     a single-passphrase seal is by design there, and such a vault must never hold \
                     real card data; production vaults are sealed with custodian shares \
                     (`panvault init --custodians N --threshold M`)"
                ));
            }
        }
        SealFacts::Other { name } => o.fail(format!("unknown seal method {name:?}")),
    }
    Ok(o)
}

/// The development passphrase file in the data directory, if the file facts
/// show one (the mark of a `panvault quickstart` vault).
fn development_passphrase(f: &Facts) -> Option<String> {
    let Fact::Known(files) = &f.files else {
        return None;
    };
    files
        .iter()
        .find(|file| {
            file.mode.is_some()
                && std::path::Path::new(&file.path)
                    .file_name()
                    .is_some_and(|n| n == DEV_PASSPHRASE_FILE)
        })
        .map(|file| file.path.clone())
}

pub(super) fn kek_strength(f: &Facts, p: &Params) -> Result<Outcome, Outcome> {
    let k = need(&f.keys, "key inventory")?;
    let mut o = Outcome::pass();
    match &k.seal {
        SealFacts::Passphrase { memory_kib, passes, lanes } => {
            let line = format!("KEK derived with Argon2id m={memory_kib} KiB, t={passes}, p={lanes}");
            let (min_m, min_t) = (p.int("min_memory_kib"), p.int("min_passes"));
            if i64::from(*memory_kib) < min_m || i64::from(*passes) < min_t {
                o.fail(format!("{line}: below m={min_m} KiB, t={min_t}"));
            } else {
                o.note(format!("{line}; AES-256-GCM wraps the root key"));
            }
        }
        SealFacts::Shares { .. } => o.note("KEK is a random 256-bit key split into custodian shares; AES-256-GCM wraps the root key"),
        SealFacts::Other { name } => o.fail(format!("unknown seal method {name:?}")),
    }
    Ok(o)
}

pub(super) fn fingerprint_keyed(f: &Facts, _p: &Params) -> Result<Outcome, Outcome> {
    let k = need(&f.keys, "key inventory")?;
    let fp = &k.fingerprint;
    let mut o = Outcome::pass();
    o.note(format!(
        "attested, not measured: fingerprints are computed as {} (panvault's design; \
         a keyed hash cannot be told from an unkeyed one by looking at stored values)",
        fp.algorithm
    ));
    if fp.keyed {
        o.note("fingerprints are keyed hashes (HMAC): not computable without the secret key");
    } else {
        o.fail("fingerprints are unkeyed hashes: a card number can be found by hashing candidates");
    }
    if fp.key_wrapped {
        o.note("the fingerprint key is stored wrapped under the root key");
    } else if fp.keyed {
        o.fail("the fingerprint key is not stored wrapped under the root key");
    }
    if let Some(len) = fp.stored_len {
        o.note(format!("stored fingerprints are {len} bytes"));
    }
    // What was measured (a wrapped fingerprint key exists) holds; the keyed
    // construction itself is for an assessor to confirm in the design and code.
    if o.status == Status::Pass {
        o.status = Status::Attest;
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages() {
        assert_eq!(percent(1 << 30, 1 << 32), "25.00%");
        assert_eq!(percent(0, 1 << 32), "0.00%");
        assert_eq!(percent(5, 0), "n/a");
        assert_eq!(age_status(365, 365, 30), Status::Warn);
        assert_eq!(age_status(366, 365, 30), Status::Fail);
        assert_eq!(age_status(335, 365, 30), Status::Pass);
    }
}
