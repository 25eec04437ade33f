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
        h.warnings
            .push("process hardening is implemented for Linux only".into());
    }
    h
}

#[cfg(test)]
mod tests {
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
