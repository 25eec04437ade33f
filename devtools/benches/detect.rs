//! The card-number detector on pathological and ordinary input: the vault's
//! request filter (`card::contains_card_number`) and the scanner (`scan_bytes`)
//! over 2 MiB of `"0"` runs (every window passes Luhn, none has an IIN) and of
//! mixed generated text (logs, CSV, mail with cards and decoys).
//!
//! `cargo bench -p panvault-dev --bench detect`
// Bench code: a panic is a failure.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use panvault_audit::card::contains_card_number;
use panvault_audit::scan::scan_bytes;
use panvault_dev::corpus;

const SIZE: usize = 2 << 20;

/// Log lines full of numbers, none of them a card (the filter reads it all).
fn log_lines() -> String {
    let mut out = String::with_capacity(SIZE + 256);
    let mut k = 0u64;
    while out.len() < SIZE {
        out.push_str(&format!(
            "2026-11-23 12:{:02}:{:02}.{:03} GET /v1/orders/{} 200 amount {}.{:02} user_{} ip 10.0.{}.{} ok\n",
            k % 60,
            (k / 60) % 60,
            k % 1000,
            100_000 + k * 7,
            k % 5000,
            k % 100,
            k * 13,
            k % 256,
            (k * 7) % 256
        ));
        k += 1;
    }
    out
}

fn inputs() -> Vec<(&'static str, String)> {
    // Generated mail, logs and CSV with planted cards: the filter stops at the
    // first card, the scanner reads it all.
    let corpus_text = String::from_utf8_lossy(&corpus::sample_text(7, SIZE)).into_owned();
    vec![
        ("zeros", "0".repeat(SIZE)),
        ("quoted_zeros", "\"0\",".repeat(SIZE / 4)),
        ("log_lines", log_lines()),
        ("corpus_text", corpus_text),
    ]
}

fn bench_detect(c: &mut Criterion) {
    let inputs = inputs();
    let mut group = c.benchmark_group("filter_2MiB");
    group.sample_size(10);
    for (name, text) in &inputs {
        group.throughput(Throughput::Bytes(u64::try_from(text.len()).unwrap()));
        group.bench_function(*name, |b| b.iter(|| contains_card_number(black_box(text))));
    }
    group.finish();
    let mut group = c.benchmark_group("scan_bytes_2MiB");
    group.sample_size(10);
    for (name, text) in &inputs {
        group.throughput(Throughput::Bytes(u64::try_from(text.len()).unwrap()));
        group.bench_function(*name, |b| {
            b.iter(|| scan_bytes(black_box(text.as_bytes()), false).len())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_detect);
criterion_main!(benches);
