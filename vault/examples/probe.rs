//! Throughput probe: `cargo run --release -p panvault-vault --example probe -- DIR RECORDS CALLERS SECONDS`
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use panvault_vault::core::kdf::KdfParams;
use panvault_vault::{
    AccessContext, SealSpec, SecretText, TokenizeRequest, Unlock, Vault, system_clock,
};

fn card(state: &mut u64) -> String {
    let mut d = Vec::with_capacity(16);
    d.push(b'4');
    for _ in 0..14 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        d.push(b'0' + (*state % 10) as u8);
    }
    d.push(panvault_audit::card::luhn_check_digit(&d).unwrap());
    String::from_utf8(d).unwrap()
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("PANVAULT_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(&args[1]);
    let records: u64 = args[2].parse().unwrap();
    let callers: usize = args[3].parse().unwrap();
    let secs: u64 = args[4].parse().unwrap();
    let unlock = || Unlock::Passphrase(SecretText::new("probe".into()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if !dir.join("vault.db").exists() {
        Vault::init(
            &dir,
            &SealSpec {
                unlock: unlock(),
                kdf: KdfParams::MINIMUM,
                shares: None,
            },
            &system_clock(),
        )
        .unwrap();
        let v = Vault::open(&dir, &unlock()).unwrap();
        let ctx = AccessContext::default();
        let mut s = 88172645463325252u64;
        let t = Instant::now();
        rt.block_on(async {
            let mut done = 0;
            while done < records {
                let items = (0..1000)
                    .map(|_| TokenizeRequest::new(&card(&mut s), 12, 2031, v.today()))
                    .collect();
                v.tokenize_batch("probe", items, &ctx).await.unwrap();
                done += 1000;
            }
        });
        v.shutdown();
        eprintln!("preloaded {records} in {:?}", t.elapsed());
    }
    let v = Vault::open(&dir, &unlock()).unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for c in 0..callers {
            let v = v.clone();
            let count = Arc::clone(&count);
            set.spawn(async move {
                let mut s = ((c as u64 + 1) * 0x9E3779B97F4A7C15)
                    ^ Instant::now().elapsed().as_nanos() as u64
                    ^ std::process::id() as u64;
                let ctx = AccessContext::default();
                let end = Instant::now() + Duration::from_secs(secs);
                while Instant::now() < end {
                    let req = TokenizeRequest::new(&card(&mut s), 12, 2031, v.today()).unwrap();
                    v.tokenize("probe", req, &ctx).await.unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        while set.join_next().await.is_some() {}
    });
    let n = count.load(Ordering::Relaxed);
    println!(
        "tokenize: {n} in {:?} = {:.0}/s",
        t.elapsed(),
        n as f64 / t.elapsed().as_secs_f64()
    );
    v.shutdown();
}
