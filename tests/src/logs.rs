//! Log capture: the test binary's own tracing events, kept so tests can check them
//! for card numbers.

use std::sync::{Arc, Mutex, OnceLock};

use crate::keep_output;

#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        keep_output("logs", buf);
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static LOGS: OnceLock<LogBuf> = OnceLock::new();

/// Installs (once per test binary) a global subscriber that records every event
/// of panvault at TRACE and of everything else at INFO, so tests can check the
/// logs for card numbers.
pub fn init_logs() {
    LOGS.get_or_init(|| {
        let buf = LogBuf::default();
        let writer = buf.clone();
        let filter = tracing_subscriber::EnvFilter::new(
            "info,panvault=trace,panvault_vault=trace,panvault_audit=trace",
        );
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buf
    });
}

/// Everything logged so far in this test binary.
pub fn captured_logs() -> String {
    LOGS.get()
        .map(|b| String::from_utf8_lossy(&b.0.lock().unwrap()).into_owned())
        .unwrap_or_default()
}
