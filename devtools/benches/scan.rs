//! PAN scanner benchmark: the in-memory detector over 64 MiB of generated text
//! (logs, NDJSON, CSV, XML, mail with planted cards and decoys), with and without
//! `join_lines`, and the bare digit-run skip.
//!
//! `cargo bench -p panvault-dev --bench scan`
//!
//! The end-to-end figure (files, threads, archives) is measured with the CLI; see
//! docs/scanner.md.
// Bench code: a panic is a failure.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use panvault_audit::scan::scan_bytes;
use panvault_dev::corpus;

const SIZE: usize = 64 << 20;

fn bench_scan(c: &mut Criterion) {
    let data = corpus::sample_text(1, SIZE);
    let mut group = c.benchmark_group("scan_bytes_64MiB");
    group.throughput(Throughput::Bytes(u64::try_from(data.len()).unwrap()));
    group.sample_size(10);
    group.bench_function("default", |b| {
        b.iter(|| scan_bytes(black_box(&data), false).len())
    });
    group.bench_function("join_lines", |b| {
        b.iter(|| scan_bytes(black_box(&data), true).len())
    });
    group.finish();

    // The floor: text without a single digit.
    let letters = vec![b'x'; SIZE];
    let mut group = c.benchmark_group("scan_bytes_64MiB_no_digits");
    group.throughput(Throughput::Bytes(u64::try_from(letters.len()).unwrap()));
    group.sample_size(10);
    group.bench_function("default", |b| {
        b.iter(|| scan_bytes(black_box(&letters), false).len())
    });
    group.finish();
}

criterion_group!(benches, bench_scan);
criterion_main!(benches);
