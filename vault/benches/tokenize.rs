//! Durable tokenize and detokenize through the library, 32 concurrent callers, into
//! a store already holding 1,000,000 records (built once, kept under
//! `target/bench-data/vault-1000000`; set `PANVAULT_BENCH_RECORDS` to change the size).
//!
//! `cargo bench -p panvault-vault --bench tokenize`
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::let_and_return
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use panvault_audit::card::testing::Cards;
use panvault_vault::core::kdf::KdfParams;
use panvault_vault::{
    AccessContext, SealSpec, SecretText, TokenizeRequest, Unlock, Vault, system_clock,
};

const CALLERS: usize = 32;
const PASS: &str = "bench-passphrase-not-secret";

fn unlock() -> Unlock {
    Unlock::Passphrase(SecretText::new(PASS.into()))
}

fn build(dir: &Path, records: u64, rt: &tokio::runtime::Runtime) {
    if dir.join("vault.db").exists() {
        return;
    }
    let spec = SealSpec {
        unlock: unlock(),
        kdf: KdfParams::MINIMUM,
        shares: None,
    };
    Vault::init(dir, &spec, &system_clock()).unwrap();
    let vault = Vault::open(dir, &unlock()).unwrap();
    let ctx = AccessContext {
        actor: "bench".into(),
        ..Default::default()
    };
    let today = vault.today();
    let mut state = Cards::new(0x9E37_79B9_7F4A_7C15);
    let start = Instant::now();
    let mut done = 0;
    rt.block_on(async {
        while done < records {
            let n = 1000.min(records - done);
            let items = (0..n)
                .map(|_| TokenizeRequest::new(&state.next().unwrap(), 12, 2031, today))
                .collect();
            let res = vault
                .tokenize_batch("bench-shop", items, &ctx)
                .await
                .unwrap();
            assert!(res.iter().all(Result::is_ok));
            done += n;
        }
    });
    vault.shutdown();
    eprintln!("built {records} records in {:?}", start.elapsed());
}

fn bench(c: &mut Criterion) {
    let records: u64 = std::env::var("PANVAULT_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../target/bench-data/vault-{records}"));
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    build(&dir, records, &rt);
    let vault = Vault::open(&dir, &unlock()).unwrap();
    let ctx = Arc::new(AccessContext {
        actor: "bench".into(),
        ..Default::default()
    });
    let seed = Arc::new(AtomicU64::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
    ));

    // Tokens to detokenize: a sample of existing ones.
    let tokens: Arc<Vec<String>> = Arc::new({
        let conn = rusqlite_free_sample(&vault);
        conn
    });

    let mut g = c.benchmark_group("vault");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    let per_caller = 200u64;
    g.throughput(Throughput::Elements(per_caller * CALLERS as u64));
    g.bench_function("tokenize_durable_32_callers", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                rt.block_on(async {
                    let mut set = tokio::task::JoinSet::new();
                    for _ in 0..CALLERS {
                        let v = vault.clone();
                        let ctx = Arc::clone(&ctx);
                        let seed = Arc::clone(&seed);
                        set.spawn(async move {
                            let mut s = Cards::new(seed.fetch_add(0x9E37_79B9, Ordering::Relaxed));
                            let today = v.today();
                            for _ in 0..per_caller {
                                let req = TokenizeRequest::new(&s.next().unwrap(), 12, 2031, today)
                                    .unwrap();
                                v.tokenize("bench-shop", req, &ctx).await.unwrap();
                            }
                        });
                    }
                    while set.join_next().await.is_some() {}
                });
            }
            start.elapsed()
        })
    });
    let per_caller_d = 2000u64;
    g.throughput(Throughput::Elements(per_caller_d * CALLERS as u64));
    g.bench_function("detokenize_32_callers", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                rt.block_on(async {
                    let mut set = tokio::task::JoinSet::new();
                    for c in 0..CALLERS {
                        let v = vault.clone();
                        let ctx = Arc::clone(&ctx);
                        let tokens = Arc::clone(&tokens);
                        set.spawn(async move {
                            for i in 0..per_caller_d as usize {
                                let t = &tokens[(c * 7919 + i * 104_729) % tokens.len()];
                                let card =
                                    v.detokenize("bench-shop", t, "bench", &ctx).await.unwrap();
                                std::hint::black_box(card);
                            }
                        });
                    }
                    while set.join_next().await.is_some() {}
                });
            }
            start.elapsed()
        })
    });
    g.finish();
    vault.shutdown();
}

/// Up to 100k existing tokens, read through the public API's database path.
fn rusqlite_free_sample(vault: &Vault) -> Vec<String> {
    panvault_vault::store::sample_tokens(vault.db_path(), 100_000).unwrap()
}

criterion_group!(benches, bench);
criterion_main!(benches);
