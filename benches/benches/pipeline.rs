//! Throughput of each pipeline stage and of the whole backup and restore,
//! in bytes per second. Compare stages with each other and with
//! `make bench-peers`, which runs the physical limits on the same machine.

use std::sync::Arc;
use std::time::Duration;

use cairn_benches::{random, text};
use cairn_engine::restore_entry;
use cairn_engine::stages::StreamChunker;
use cairn_engine::stages::{Keys, MasterKey};
use cairn_engine::store::Store;
use cairn_engine::ChunkerParams;
use cairn_engine::LocalIndex;
use cairn_engine::Secret;
use cairn_engine::{Backup, BackupOptions};
use cairn_engine::{InitOptions, Repository};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const MIB: usize = 1 << 20;

fn stages(c: &mut Criterion) {
    let keys = Keys::derive(&MasterKey::generate());
    let inputs = [("text", text(32 * MIB)), ("random", random(32 * MIB))];

    let mut g = c.benchmark_group("chunking");
    for (name, data) in &inputs {
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), data, |b, d| {
            b.iter(|| {
                let mut ch = StreamChunker::new(std::io::Cursor::new(d.as_slice()), ChunkerParams::default(), 7);
                let mut n = 0;
                loop {
                    let batch = ch.next_batch(16 * MIB).unwrap();
                    if batch.is_empty() {
                        break n;
                    }
                    n += batch.len();
                }
            })
        });
    }
    g.finish();

    let chunk = &inputs[0].1[..MIB];
    let rchunk = &inputs[1].1[..MIB];
    let mut g = c.benchmark_group("per-chunk");
    g.throughput(Throughput::Bytes(MIB as u64));
    g.bench_function("keyed-blake3", |b| b.iter(|| keys.blob_id(chunk)));
    g.bench_function("zstd-3/text", |b| b.iter(|| cairn_engine::stages::compress(3, chunk)));
    g.bench_function("zstd-3/random(skipped)", |b| b.iter(|| cairn_engine::stages::compress(3, rchunk)));
    g.bench_function("xchacha20poly1305-seal", |b| b.iter(|| keys.seal(b"id", chunk)));
    let sealed = keys.seal(b"id", chunk);
    g.bench_function("xchacha20poly1305-open", |b| b.iter(|| keys.open(b"id", &sealed).unwrap()));
    g.finish();
}

fn whole_pipeline(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut data = text(48 * MIB);
    data.extend(random(16 * MIB));
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("backup-new-data", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let store = Store::memory();
                let secret = Secret::KeyFile([9u8; 32].into());
                let (repo, index) = rt.block_on(async {
                    let repo = Arc::new(Repository::init(store, &secret, InitOptions::default()).await.unwrap());
                    let idx =
                        Arc::new(LocalIndex::for_writing(&repo, dir.path(), Duration::from_secs(5)).await.unwrap());
                    (repo, idx)
                });
                (dir, repo, index)
            },
            |(_dir, repo, index)| {
                rt.block_on(Backup::new(repo, index, BackupOptions::stream("b")).bytes(data.clone())).unwrap()
            },
            criterion::BatchSize::PerIteration,
        )
    });
    // Restore of the same data from an in-memory store.
    let dir = tempfile::tempdir().unwrap();
    let secret = Secret::KeyFile([9u8; 32].into());
    let (repo, entry) = rt.block_on(async {
        let repo = Arc::new(Repository::init(Store::memory(), &secret, InitOptions::default()).await.unwrap());
        let idx = Arc::new(LocalIndex::for_writing(&repo, dir.path(), Duration::from_secs(5)).await.unwrap());
        let (_, snap) = Backup::new(repo.clone(), idx, BackupOptions::stream("b")).bytes(data.clone()).await.unwrap();
        (repo, snap.entries[0].clone())
    });
    let index = rt.block_on(LocalIndex::for_reading(&repo, dir.path(), Duration::from_secs(5))).unwrap();
    g.bench_function("restore", |b| {
        b.iter(|| rt.block_on(restore_entry(&repo, &index, &entry, std::io::sink(), 8, Arc::default())).unwrap())
    });
    g.finish();
}

// criterion_group! generates an undocumented function.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, stages, whole_pipeline);
}
use group::benches;
criterion_main!(benches);
