//! Throughput probe:
//! `cargo run --release -p panvault-vault --example probe -- DIR RECORDS CALLERS SECONDS [tokenize|detokenize]`
//!
//! Creates the vault in DIR (passphrase "probe") with RECORDS cards if it does not
//! exist, then runs CALLERS concurrent callers for SECONDS: durable tokenizations of
//! new cards (the default), or detokenizations of 200,000 stored tokens taken from
//! across the table.
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

use panvault_audit::card::testing::Cards;
use panvault_vault::core::kdf::KdfParams;
use panvault_vault::{
    AccessContext, SealSpec, SecretText, TokenizeRequest, Unlock, Vault, system_clock,
};

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
    let detokenize = match args.get(5).map(String::as_str) {
        None | Some("tokenize") => false,
        Some("detokenize") => true,
        Some(other) => panic!("unknown operation {other:?}: tokenize or detokenize"),
    };
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
        let mut s = Cards::new(88172645463325252);
        let t = Instant::now();
        rt.block_on(async {
            let mut done = 0;
            while done < records {
                let items = (0..1000)
                    .map(|_| TokenizeRequest::new(&s.next().unwrap(), 12, 2031, v.today()))
                    .collect();
                v.tokenize_batch("probe", items, &ctx).await.unwrap();
                done += 1000;
            }
        });
        v.shutdown();
        eprintln!("preloaded {records} in {:?}", t.elapsed());
    }
    let tokens: Arc<Vec<String>> = Arc::new(if detokenize {
        let db = rusqlite::Connection::open_with_flags(
            dir.join("vault.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let mut stmt = db
            .prepare("SELECT token FROM cards WHERE tenant = 'probe' AND id % 7 = 0 LIMIT 200000")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    } else {
        Vec::new()
    });
    assert!(!detokenize || !tokens.is_empty(), "no tokens to detokenize");
    let v = Vault::open(&dir, &unlock()).unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let end = t + Duration::from_secs(secs);
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for c in 0..callers {
            let v = v.clone();
            let count = Arc::clone(&count);
            let tokens = Arc::clone(&tokens);
            set.spawn(async move {
                let mut s = Cards::new(
                    ((c as u64 + 1) * 0x9E3779B97F4A7C15)
                        ^ Instant::now().elapsed().as_nanos() as u64
                        ^ std::process::id() as u64,
                );
                let ctx = AccessContext::default();
                let mut i = c * 6151;
                while Instant::now() < end {
                    if detokenize {
                        i = (i + 1) % tokens.len();
                        v.detokenize("probe", &tokens[i], "probe", &ctx)
                            .await
                            .unwrap();
                    } else {
                        let req =
                            TokenizeRequest::new(&s.next().unwrap(), 12, 2031, v.today()).unwrap();
                        v.tokenize("probe", req, &ctx).await.unwrap();
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                    // An unaudited detokenize never waits: let the other callers run.
                    tokio::task::yield_now().await;
                }
            });
        }
        while set.join_next().await.is_some() {}
    });
    let n = count.load(Ordering::Relaxed);
    println!(
        "{}: {n} in {:?} = {:.0}/s",
        if detokenize { "detokenize" } else { "tokenize" },
        t.elapsed(),
        n as f64 / t.elapsed().as_secs_f64()
    );
    v.shutdown();
}
