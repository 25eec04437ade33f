//! Load and soak: the real `panvault bench --op mixed` (64 keep-alive mTLS
//! connections: half a storefront tokenizing a pool of returning customers, reading
//! and deleting its tokens; half a payment service detokenizing and reading) against
//! the real `panvault serve`. Every request must succeed, the server's resident
//! memory must stay flat, and the audit chain must verify afterwards.
//!
//! The default form runs 15 s. The long form is issue 9's soak, 10 minutes:
//!
//! ```sh
//! PANVAULT_SOAK_SECS=600 cargo test --release -p panvault-cli --test e2e soak -- --nocapture
//! ```
//!
//! The RSS samples are printed (`--nocapture`). "Flat" is judged on the second half
//! of the run, after SQLite's page caches have filled: the resident size at the
//! end may exceed the one at half time by at most 10 % + 16 MiB. A leak of even
//! 100 bytes a request grows far faster than that at this load.

use std::time::{Duration, Instant};

use crate::util::{self, BinVault, ServeProcess};

/// The server's resident set in KiB (`VmRSS` of `/proc/PID/status`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_at_64_connections_has_no_errors_and_flat_memory() {
    let secs = util::env_number("PANVAULT_SOAK_SECS", 15).max(4);
    util::within(Duration::from_secs(secs + 300), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create(tmp.path());
        let server = ServeProcess::start(&v).await.unwrap();
        let pid = server.pid();
        let addr = server.addr.to_string();
        let tokens = tmp.path().join("tokens.txt");
        let bench = |extra: &[&str]| {
            let mut cmd = tokio::process::Command::new(util::panvault_bin());
            cmd.arg("bench")
                .arg("--config")
                .arg(&v.config)
                .args(["--addr", &addr, "--tokens-file"])
                .arg(&tokens)
                .args(extra);
            cmd
        };

        // Cards for the payment side to detokenize (not measured).
        let pre = util::run_command(
            bench(&[
                "--client",
                "storefront",
                "--op",
                "tokenize",
                "--preload",
                "10000",
                "--duration",
                "0s",
            ]),
            Duration::from_secs(120),
        )
        .await;
        assert!(
            pre.success(),
            "preload failed: {}{}",
            pre.stdout,
            pre.stderr
        );

        let duration = format!("{secs}s");
        let run = tokio::spawn(util::run_command(
            bench(&[
                "--client",
                "payments",
                "--preload-client",
                "storefront",
                "--op",
                "mixed",
                "--connections",
                "64",
                "--warmup",
                "2s",
                "--duration",
                &duration,
            ]),
            Duration::from_secs(secs + 120),
        ));
        // RSS every 1/20 of the run (at least every second).
        let every = Duration::from_secs((secs / 20).max(1));
        let start = Instant::now();
        let mut samples = vec![(0u64, rss_kib(pid))];
        while !run.is_finished() {
            tokio::time::sleep(every).await;
            samples.push((start.elapsed().as_secs(), rss_kib(pid)));
        }
        let out = run.await.unwrap();
        println!("{}", out.stdout);
        assert!(out.success(), "bench failed: {}{}", out.stdout, out.stderr);
        // Drop the samples taken after the bench stopped sending.
        samples.retain(|(t, _)| *t <= secs + 2);
        let (_, first) = samples[0];
        let (_, last) = *samples.last().unwrap();
        let half = samples
            .iter()
            .find(|(t, _)| *t >= (secs + 2) / 2)
            .map_or(first, |(_, r)| *r);
        let max = samples.iter().map(|(_, r)| *r).max().unwrap();
        let shown: Vec<String> = samples
            .iter()
            .map(|(t, r)| format!("{t}s {:.0}", mib(*r)))
            .collect();
        println!("server RSS (MiB): {}", shown.join(", "));
        println!(
            "server RSS: start {:.1} MiB, half time {:.1} MiB, end {:.1} MiB, max {:.1} MiB",
            mib(first),
            mib(half),
            mib(last),
            mib(max)
        );

        // Zero errors, every operation of the mix ran.
        assert!(
            out.stdout.lines().any(|l| l.trim_end() == "errors      0"),
            "the mixed load had errors:\n{}",
            out.stdout
        );
        for op in ["tokenize", "detokenize", "read", "delete"] {
            assert!(
                out.stdout.lines().any(|l| l.starts_with(op)),
                "no successful {op} in the mix:\n{}",
                out.stdout
            );
        }
        // Flat: the second half grows by at most 10 % + 16 MiB.
        assert!(
            last <= half + half / 10 + 16 * 1024,
            "server memory grew from {:.1} MiB at half time to {:.1} MiB at the end",
            mib(half),
            mib(last)
        );

        // The server is still well, and everything it did is in an intact log.
        server.wait_healthy(&v, Duration::from_secs(5)).await;
        let stderr = server.stderr();
        assert!(!stderr.contains("panicked"), "server panicked: {stderr}");
        let status = server.terminate().await;
        assert!(status.success(), "serve exited with {status}");
        let verify = v
            .run(&["audit", "verify"], false, Duration::from_secs(120))
            .await;
        assert!(
            verify.success(),
            "audit verify: {}{}",
            verify.stdout,
            verify.stderr
        );
    })
    .await;
}
