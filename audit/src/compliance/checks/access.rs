//! Access checks: who holds the privileged permissions, catch-all identities,
//! file modes.
use super::{Outcome, need};
use crate::compliance::facts::{ClientFacts, Facts, FileRole};
use crate::compliance::policy::Params;
use crate::compliance::result::Status;

/// Why a client's identity matches more than one service, if it does.
fn catch_all(c: &ClientFacts, all: &[String]) -> Option<String> {
    let generic = [
        "*",
        "client",
        "clients",
        "admin",
        "root",
        "test",
        "default",
        "any",
        "all",
        "localhost",
        "user",
    ];
    if let Some(cn) = &c.common_name {
        if cn.contains('*') || cn.contains('?') {
            return Some(format!(
                "common name pattern {cn:?} matches many certificates"
            ));
        }
        if generic.contains(&cn.to_ascii_lowercase().as_str()) {
            return Some(format!(
                "generic common name {cn:?} is not tied to one service"
            ));
        }
    }
    if let Some(uri) = &c.uri_san
        && (uri.contains('*') || uri.ends_with('/') || uri.ends_with(':'))
    {
        return Some(format!("URI SAN {uri:?} is a prefix or pattern"));
    }
    if c.common_name.is_none() && c.uri_san.is_none() {
        return Some("no identity constraint (any certificate of the CA)".to_owned());
    }
    if !all.is_empty() && all.iter().all(|p| c.permissions.contains(p)) {
        return Some("holds every permission".to_owned());
    }
    None
}

fn identity(c: &ClientFacts) -> String {
    match (&c.common_name, &c.uri_san) {
        (Some(cn), Some(uri)) => format!("CN={cn}, URI={uri}"),
        (Some(cn), None) => format!("CN={cn}"),
        (None, Some(uri)) => format!("URI={uri}"),
        (None, None) => "any certificate".to_owned(),
    }
}

pub(super) fn permissions(f: &Facts, p: &Params) -> Result<Outcome, Outcome> {
    let a = need(&f.access, "client configuration")?;
    let catch_status = if p.str("catch_all_status") == "warn" {
        Status::Warn
    } else {
        Status::Fail
    };
    let max_holders = usize::try_from(p.int("max_holders")).unwrap_or(0);
    let mut o = Outcome::pass();
    o.note(format!("{} clients in {}", a.clients.len(), a.source));
    for perm in p.list("sensitive") {
        let holders: Vec<String> = a
            .clients
            .iter()
            .filter(|c| c.permissions.contains(perm))
            .map(|c| format!("{} ({}, tenant {})", c.name, identity(c), c.tenant))
            .collect();
        let line = if holders.is_empty() {
            format!("`{perm}`: nobody")
        } else {
            format!("`{perm}`: {}", holders.join("; "))
        };
        if max_holders > 0 && holders.len() > max_holders {
            o.fail(format!("{line} — more than {max_holders} holders"));
        } else {
            o.note(line);
        }
    }
    for c in &a.clients {
        if let Some(why) = catch_all(c, &a.all_permissions) {
            o.finding(
                catch_status,
                format!(
                    "client {} ({}) is a catch-all identity: {why}",
                    c.name,
                    identity(c)
                ),
            );
        }
    }
    Ok(o)
}

pub(super) fn file_modes(f: &Facts, p: &Params) -> Result<Outcome, Outcome> {
    let files = need(&f.files, "file modes")?;
    let max_dir = u32::try_from(p.int("max_dir_mode")).unwrap_or(0o700);
    let max_file = u32::try_from(p.int("max_file_mode")).unwrap_or(0o600);
    let max_public = u32::try_from(p.int("max_public_mode")).unwrap_or(0o644);
    let mut o = Outcome::pass();
    if files.is_empty() {
        o.fail("no file to check");
    }
    for file in files {
        let allowed = match file.role {
            FileRole::DataDir | FileRole::Subdir => max_dir,
            FileRole::Public => max_public,
            _ => max_file,
        };
        match (file.mode, &file.error) {
            (Some(mode), _) => {
                let extra = mode & !allowed & 0o7777;
                let line = format!("{} {}: {mode:04o}", file.role.as_str(), file.path);
                if extra != 0 {
                    let who = if extra & 0o007 != 0 {
                        "anyone on the host"
                    } else {
                        "the group"
                    };
                    o.fail(format!(
                        "{line} (allowed {allowed:04o}): {who} can access it"
                    ));
                } else {
                    o.note(line);
                }
            }
            (None, Some(e)) => o.error(format!("{} {}: {e}", file.role.as_str(), file.path)),
            (None, None) => o.note(format!("{} {}: not present", file.role.as_str(), file.path)),
        }
    }
    Ok(o)
}
