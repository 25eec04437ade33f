//! Keeping every byte of output for the leak scan.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Where the suite keeps what it saw, if `PANVAULT_TEST_OUTPUT_DIR` is set: `.ci/run`
/// sets it, runs the suite with `PANVAULT_TEST_LOG=trace`, and then runs
/// `panvault scan` over the directory (and the suite's own output). A finding fails
/// CI. Kept: this binary's logs, every child server's stderr, the stdout and stderr
/// of every command run, and every HTTP response body except a successful
/// detokenize (the one response that is meant to carry a card).
fn output_dir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(std::env::var_os("PANVAULT_TEST_OUTPUT_DIR")?);
        std::fs::create_dir_all(&dir).ok()?;
        Some(dir)
    })
    .as_deref()
}

/// Appends `bytes` to `DIR/<kind>-<pid>.log` (nothing without the variable).
pub fn keep_output(kind: &str, bytes: &[u8]) {
    use std::io::Write;
    static LOCK: Mutex<()> = Mutex::new(());
    let Some(dir) = output_dir() else { return };
    let _guard = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let path = dir.join(format!("{kind}-{}.log", std::process::id()));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(bytes);
        let _ = f.write_all(b"\n");
    }
}

/// Keeps a finished command's stdout and stderr (see [`keep_output`]); for
/// `Command::output().await.map(util::kept)`.
pub fn kept(out: std::process::Output) -> std::process::Output {
    keep_output("cmd", &out.stdout);
    keep_output("cmd", &out.stderr);
    out
}

/// The log level of child servers: `PANVAULT_TEST_LOG` (CI: `trace`), else `warn`.
pub fn child_log_level() -> String {
    std::env::var("PANVAULT_TEST_LOG").unwrap_or_else(|_| "warn".into())
}
