//! Audit-log checks: integrity, retention, event classes, event fields.
use super::{Outcome, need};
use crate::compliance::facts::{AuditLogFacts, Facts};
use crate::compliance::policy::Params;
use crate::compliance::result::Status;
use crate::log::Action;

/// The event classes of PCI DSS 10.2.1.1–10.2.1.7.
pub(crate) const CLASS_IDS: &[&str] = &[
    "10.2.1.1", "10.2.1.2", "10.2.1.3", "10.2.1.4", "10.2.1.5", "10.2.1.6", "10.2.1.7",
];

/// What each class is, and which events count for it besides the actions
/// [`classes_of`] puts in it.
struct Class {
    id: &'static str,
    what: &'static str,
    /// Any event by an `admin:` actor counts.
    admin: bool,
    /// Any denied event counts.
    denied: bool,
}

const CLASSES: &[Class] = &[
    Class {
        id: "10.2.1.1",
        what: "individual access to cardholder data",
        admin: false,
        denied: false,
    },
    Class {
        id: "10.2.1.2",
        what: "actions by administrators",
        admin: true,
        denied: false,
    },
    Class {
        id: "10.2.1.3",
        what: "access to the audit logs",
        admin: false,
        denied: false,
    },
    Class {
        id: "10.2.1.4",
        what: "invalid logical access attempts",
        admin: false,
        denied: true,
    },
    Class {
        id: "10.2.1.5",
        what: "changes to identification and authentication credentials and keys",
        admin: false,
        denied: false,
    },
    Class {
        id: "10.2.1.6",
        what: "initialising, starting and stopping the audit log",
        admin: false,
        denied: false,
    },
    Class {
        id: "10.2.1.7",
        what: "creation and deletion of system-level objects",
        admin: false,
        denied: false,
    },
];

/// The PCI DSS 10.2.1 classes an action's events count for. An exhaustive
/// match: an action added to the log's vocabulary does not compile until it is
/// classified here (an empty list says "none", on purpose).
fn classes_of(a: Action) -> &'static [&'static str] {
    match a {
        // A relay reveals the card to a third party on the caller's behalf.
        Action::Detokenize | Action::Relay => &["10.2.1.1"],
        Action::AuditVerify
        | Action::AuditExport
        | Action::AuditCheckpoint
        | Action::ComplianceRun => &["10.2.1.3"],
        Action::Denied => &["10.2.1.4"],
        Action::KeyRetire | Action::MasterChangePassphrase | Action::MasterReshare => &["10.2.1.5"],
        Action::KeyRotate | Action::KeyDestroy | Action::MasterRotate => &["10.2.1.5", "10.2.1.7"],
        Action::ServeStart | Action::ServeStop | Action::NodeRegister => &["10.2.1.6"],
        Action::Init => &["10.2.1.6", "10.2.1.7"],
        Action::RetentionPurge => &["10.2.1.7"],
        // Card operations other than a reveal, and the override of a refused
        // start (itself an admin action, counted under 10.2.1.2 by its actor).
        Action::Tokenize
        | Action::Read
        | Action::Delete
        | Action::Erase
        | Action::RelayResult
        | Action::KeyRewrap
        | Action::ServeNoncompliant => &[],
    }
}

fn log_facts(f: &Facts) -> Result<&AuditLogFacts, Outcome> {
    let a = need(&f.audit_log, "audit log")?;
    if !a.present {
        let mut o = Outcome::pass();
        o.fail(format!(
            "{}: no audit log tables (the vault records no audit events)",
            a.database
        ));
        return Err(o);
    }
    Ok(a)
}

pub(super) fn integrity(f: &Facts, p: &Params) -> Result<Outcome, Outcome> {
    let a = log_facts(f)?;
    let mut o = Outcome::pass();
    match &a.verify {
        Err(e) => o.fail(format!("cannot verify {}: {e}", a.database)),
        Ok(v) => {
            let range = if v.events == 0 {
                "no events".to_owned()
            } else {
                format!("{} events, seq {}..={}", v.events, v.first_seq, v.last_seq)
            };
            o.note(format!(
                "{}: {range}; {} checkpoints and {} prune records with valid signatures",
                a.database, v.checkpoints, v.prunes
            ));
            match &v.problem {
                Some((kind, detail)) => o.fail(format!("chain broken ({kind}): {detail}")),
                None => o.note("hash chain intact from the first kept event to the last"),
            }
            let max_tail = u64::try_from(p.int("max_unsigned_events")).unwrap_or(u64::MAX);
            if v.unsigned_tail > max_tail {
                o.warn(format!(
                    "{} events after the latest signed checkpoint (more than {max_tail})",
                    v.unsigned_tail
                ));
            } else if v.unsigned_tail > 0 {
                o.note(format!(
                    "{} events after the latest signed checkpoint",
                    v.unsigned_tail
                ));
            }
        }
    }
    Ok(o)
}

pub(super) fn retention(f: &Facts, p: &Params) -> Result<Outcome, Outcome> {
    let a = log_facts(f)?;
    let min = p.int("audit_retention_days");
    let mut o = Outcome::pass();
    match a.retention_days {
        Some(d) if d < min => o.fail(format!(
            "retention is {d} days ({}), below {min}",
            a.retention_source
        )),
        Some(d) => o.note(format!("retention is {d} days ({})", a.retention_source)),
        None => o.fail(format!("no retention configured ({})", a.retention_source)),
    }
    for (i, d) in a.prune_retention_days.iter().enumerate() {
        if *d < min {
            o.fail(format!("prune record #{} deleted events younger than {min} days (retention applied: {d} days)", i + 1));
        }
    }
    if !a.prune_retention_days.is_empty() && a.prune_retention_days.iter().all(|d| *d >= min) {
        o.note(format!(
            "{} signed prune records, each kept at least {min} days",
            a.prune_retention_days.len()
        ));
    }
    match &a.verify {
        Ok(v) => {
            if let Some((kind, detail)) = &v.problem
                && (kind == "missing" || kind == "truncated")
            {
                o.fail(format!(
                    "events are missing from the log ({kind}): {detail}"
                ));
            }
            if v.first_seq > 1 && a.prune_retention_days.is_empty() {
                o.fail(format!(
                    "the log starts at seq {} without a signed prune record",
                    v.first_seq
                ));
            } else if v.problem.is_none() {
                o.note(format!(
                    "no gap: every event from seq {} on is present",
                    v.first_seq
                ));
            }
        }
        Err(e) => o.fail(format!("cannot tell whether events are missing: {e}")),
    }
    if let Some(t) = a.oldest_event {
        o.note(format!("oldest kept event: {}", t.date()));
    }
    Ok(o)
}

pub(super) fn event_classes(f: &Facts, p: &Params) -> Result<Outcome, Outcome> {
    let a = log_facts(f)?;
    let required = p.list("required");
    let missing_status = if p.str("missing_status") == "fail" {
        Status::Fail
    } else {
        Status::Warn
    };
    let mut o = Outcome::pass();
    for c in CLASSES {
        let mut n: u64 = a
            .actions
            .iter()
            .filter(|(name, _)| {
                Action::from_name(name).is_some_and(|x| classes_of(x).contains(&c.id))
            })
            .map(|(_, count)| *count)
            .fold(0, u64::saturating_add);
        if c.admin {
            n = n.saturating_add(a.admin_events);
        }
        if c.denied {
            n = n.saturating_add(a.denied_events);
        }
        let line = format!(
            "{} {}: {n} event{}",
            c.id,
            c.what,
            if n == 1 { "" } else { "s" }
        );
        if n > 0 {
            o.note(line);
        } else if required.iter().any(|r| r == c.id) {
            o.finding(missing_status, format!("{line} (none recorded yet)"));
        } else {
            o.note(format!("{line} (not required by the policy)"));
        }
    }
    Ok(o)
}

pub(super) fn event_fields(f: &Facts, p: &Params) -> Result<Outcome, Outcome> {
    let a = log_facts(f)?;
    let s = &a.fields;
    let mut o = Outcome::pass();
    o.note(format!("{} events examined", s.examined));
    o.note("every event stores time (UTC, ns), actor, action and outcome (enforced by the schema)");
    let checks = [
        (
            s.missing_actor,
            "without a user identification (actor)",
            Status::Fail,
        ),
        (
            s.missing_origin,
            "from the API without an origin (peer address)",
            Status::Fail,
        ),
        (
            s.missing_resource,
            "on card data without the affected tenant or token",
            Status::Fail,
        ),
        (
            s.missing_code,
            "denied or failed without an outcome code",
            Status::Fail,
        ),
        (
            s.missing_purpose,
            "detokenize without a declared purpose",
            if p.bool("require_purpose") {
                Status::Fail
            } else {
                Status::Warn
            },
        ),
    ];
    for (n, what, status) in checks {
        if n > 0 {
            o.finding(status, format!("{n} events {what}"));
        }
    }
    if o.status == Status::Pass {
        o.note("every event carries user, type, date and time, outcome, origin and affected resource (10.2.2)");
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_the_vault_emits_is_classified() {
        let mut unclassified = Vec::new();
        for a in Action::ALL {
            let classes = classes_of(a);
            for id in classes {
                assert!(CLASS_IDS.contains(id), "{a}: unknown class {id}");
                assert!(CLASSES.iter().any(|c| c.id == *id), "{a}: {id}");
            }
            if classes.is_empty() {
                unclassified.push(a.as_str());
            }
        }
        assert_eq!(
            unclassified,
            [
                "tokenize",
                "token.read",
                "token.delete",
                "erase",
                "key.rewrap",
                "serve.noncompliant",
                "relay.result"
            ]
        );
        // Every class an action can feed is fed by something the vault emits.
        for c in CLASSES {
            assert!(
                c.admin || c.denied || Action::ALL.iter().any(|a| classes_of(*a).contains(&c.id)),
                "{}",
                c.id
            );
        }
    }
}
