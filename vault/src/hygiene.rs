//! Process hygiene for a process that holds keys and card numbers: no core dumps,
//! not dumpable (no ptrace by other users, no /proc/PID/mem), and optionally all
//! memory locked so secrets never reach swap. Safe wrappers only (rustix).

/// What [`harden_process`] achieved; warnings say what the platform refused.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Hygiene {
    /// RLIMIT_CORE set to 0.
    pub core_dumps_disabled: bool,
    /// PR_SET_DUMPABLE 0.
    pub non_dumpable: bool,
    /// mlockall succeeded.
    pub memory_locked: bool,
    /// What could not be done, and why.
    pub warnings: Vec<String>,
}

/// Disables core dumps, marks the process non-dumpable, and (if `lock_memory`)
/// locks current and future pages as they are touched.
pub fn harden_process(lock_memory: bool) -> Hygiene {
    let mut h = no_dumps();
    #[cfg(target_os = "linux")]
    {
        if lock_memory {
            use rustix::mm::{MlockAllFlags, mlockall};
            match mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT) {
                Ok(()) => h.memory_locked = true,
                Err(e) => h.warnings.push(format!(
                    "could not lock memory ({e}); secrets may reach swap: raise RLIMIT_MEMLOCK or disable swap"
                )),
            }
        } else {
            h.warnings.push("memory not locked (lock_memory = false): secrets may reach swap unless swap is off or encrypted".into());
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = lock_memory;
    }
    h
}

/// The hygiene of an admin command that unseals the root key or reads a secret
/// (passphrase, shares): no core dumps and non-dumpable, as the server. Being
/// non-dumpable also makes `/proc/PID/environ` (where `PANVAULT_PASSPHRASE` may
/// be) and `/proc/PID/mem` unreadable to other processes of the same user.
/// Memory is not locked: the command is short-lived.
pub fn harden_admin_process() -> Hygiene {
    no_dumps()
}

fn no_dumps() -> Hygiene {
    let mut h = Hygiene::default();
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Resource, Rlimit, setrlimit};
        match setrlimit(
            Resource::Core,
            Rlimit {
                current: Some(0),
                maximum: Some(0),
            },
        ) {
            Ok(()) => h.core_dumps_disabled = true,
            Err(e) => h
                .warnings
                .push(format!("could not disable core dumps: {e}")),
        }
        match rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        {
            Ok(()) => h.non_dumpable = true,
            Err(e) => h
                .warnings
                .push(format!("could not mark the process non-dumpable: {e}")),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        h.warnings
            .push("process hardening is implemented for Linux only".into());
    }
    h
}

/// Who runs this process, as the kernel says: the real uid and the name
/// `/etc/passwd` gives it (`None` when it has no entry). Unlike `$USER`, the
/// caller cannot choose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsUser {
    /// The real user id.
    pub uid: u32,
    /// Its login name, if `/etc/passwd` lists it.
    pub name: Option<String>,
}

/// The real user of this process (see [`OsUser`]); `None` off Unix.
pub fn current_user() -> Option<OsUser> {
    #[cfg(unix)]
    {
        let uid = rustix::process::getuid().as_raw();
        let name = std::fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|text| passwd_name(&text, uid));
        Some(OsUser { uid, name })
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The audit actor of an administrator acting through this process:
/// `admin:<login name>` for the real uid when `/etc/passwd` names it,
/// `admin:uid:<n>` when it does not (a container's uid without an entry), and
/// `admin:unknown` off Unix. Never `$USER` or `$LOGNAME`, which whoever runs
/// the command can set to anything.
pub fn admin_actor_name() -> String {
    admin_name_of(current_user())
}

fn admin_name_of(user: Option<OsUser>) -> String {
    match user {
        Some(OsUser { name: Some(n), .. }) => format!("admin:{n}"),
        Some(OsUser { uid, name: None }) => format!("admin:uid:{uid}"),
        None => "admin:unknown".to_owned(),
    }
}

/// The first login name `passwd` (the text of `/etc/passwd`) gives `uid`.
pub fn passwd_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let id: u32 = fields.next()?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn admin_names() {
        use super::{OsUser, admin_name_of};
        let alice = OsUser {
            uid: 1000,
            name: Some("alice".into()),
        };
        assert_eq!(admin_name_of(Some(alice)), "admin:alice");
        let nobody = OsUser {
            uid: 4242,
            name: None,
        };
        assert_eq!(admin_name_of(Some(nobody)), "admin:uid:4242");
        assert_eq!(admin_name_of(None), "admin:unknown");
    }

    #[test]
    fn passwd_lines_map_uids_to_names() {
        let text = "# comment:x:7:7\nroot:x:0:0:root:/root:/bin/bash\n\
                    broken line\n:x:5:5::/:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n\
                    alias:x:1000:1000::/:/bin/sh\n";
        assert_eq!(super::passwd_name(text, 0).as_deref(), Some("root"));
        assert_eq!(super::passwd_name(text, 1000).as_deref(), Some("alice"));
        assert_eq!(super::passwd_name(text, 5), None);
        assert_eq!(super::passwd_name(text, 7), None);
        assert_eq!(super::passwd_name(text, 42), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn hardening_takes_effect() {
        // Runs in a child-free way: these settings only affect this test process.
        let h = super::harden_process(false);
        assert!(h.core_dumps_disabled, "{:?}", h.warnings);
        assert!(h.non_dumpable, "{:?}", h.warnings);
        let status = std::fs::read_to_string("/proc/self/limits").unwrap();
        let core = status
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap();
        assert!(core.split_whitespace().nth(4) == Some("0"), "{core}");
    }
}
