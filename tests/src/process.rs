//! Child processes (commands run to the end, output collected line by line) and
//! time limits on test bodies.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{keep_output, kept};

/// What a finished command printed and how it ended.
#[derive(Debug)]
pub struct CmdOutput {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// Runs `cmd` (stdin closed, killed if it outlives `limit`, which fails the test).
pub async fn run_command(mut cmd: tokio::process::Command, limit: Duration) -> CmdOutput {
    cmd.stdin(std::process::Stdio::null())
        .env_remove("PANVAULT_PASSPHRASE")
        .env_remove("PANVAULT_DATA_DIR")
        .kill_on_drop(true);
    let shown = format!("{cmd:?}");
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{shown} did not finish within {limit:?}"))
        .unwrap();
    let out = kept(out);
    CmdOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Collects a child's output stream, line by line, in the background.
pub fn collect_lines(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> Arc<Mutex<String>> {
    LineCollector::start(stream).text
}

/// A child's output stream collected line by line in the background, with a signal
/// for each new line and for the end of the stream, so a test waits for what it
/// needs rather than sleeping.
pub struct LineCollector {
    /// Everything read so far, one `\n` after each line.
    pub text: Arc<Mutex<String>>,
    updates: tokio::sync::watch::Receiver<()>,
}

impl LineCollector {
    pub fn start(stream: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> LineCollector {
        use tokio::io::AsyncBufReadExt;
        let text = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&text);
        let (notify, updates) = tokio::sync::watch::channel(());
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                keep_output("child", line.as_bytes());
                {
                    let mut s = sink.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
                notify.send_replace(());
            }
            // Dropping `notify` ends the stream for the waiters.
        });
        LineCollector { text, updates }
    }

    /// Everything read so far.
    pub fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Waits for the next line; `false` once the stream has ended.
    pub async fn changed(&mut self) -> bool {
        self.updates.changed().await.is_ok()
    }

    /// Waits (at most `limit`) until the stream has ended, so that [`Self::text`]
    /// holds everything the child wrote; `false` if it had not ended by then.
    pub async fn finished(&mut self, limit: Duration) -> bool {
        tokio::time::timeout(limit, async { while self.changed().await {} })
            .await
            .is_ok()
    }
}

/// Runs a test body for at most `limit`: a hung server or client fails the test
/// (and drops, so kills, its child processes) instead of hanging CI.
pub async fn within<F: std::future::Future>(limit: Duration, body: F) -> F::Output {
    tokio::time::timeout(limit, body)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within {limit:?}"))
}
