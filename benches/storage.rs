//! Storage benches: appending through the group-commit log writer (one record per request, the
//! caller waiting until it is durable) with 1 and 64 concurrent clients under `--fsync always`
//! and `never`; recovery (replay) of N logged contacts; and writing and loading a snapshot.
//!
//! `BENCH_SIZES=10000,100000 cargo bench --bench storage` picks the replay and snapshot sizes
//! (default 10^4, 10^5, 10^6).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use identity_engine::engine::{Change, Engine, NewContact, Timestamp};
use identity_engine::storage::recovery::{self, Mode};
use identity_engine::storage::{snapshot, FsyncPolicy, Storage, StorageOptions};
use support::Population;

const SIZES: [u64; 3] = [10_000, 100_000, 1_000_000];

fn main() {
    let mut c = Criterion::default().configure_from_args();
    append(&mut c);
    for contacts in support::sizes(&SIZES) {
        let population = Population::clustered(contacts);
        replay(&mut c, population);
        snapshots(&mut c, population);
    }
    c.final_summary();
}

fn options(dir: &Path, fsync: FsyncPolicy) -> StorageOptions {
    let mut options = StorageOptions::new(dir);
    options.fsync = fsync;
    // No segment roll, so no background snapshot competes with what is measured.
    options.snapshot_every_bytes = u64::MAX;
    options
}

/// A new contact as a request logs it: one record with a 25-byte email and a 10-digit phone.
fn created(id: u32) -> Vec<Change> {
    let p = Population::distinct(0);
    vec![Change::Created(NewContact {
        id,
        email: Some(p.email(u64::from(id))),
        phone: Some(p.phone(u64::from(id))),
        linked_id: None,
        created_at: Timestamp(support::START),
        updated_at: Timestamp(support::START),
        deleted_at: None,
    })]
}

/// Requests per second through append + wait for durability, as handlers do it.
fn append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group("storage/append");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, fsync) in [
        ("always", FsyncPolicy::Always),
        ("never", FsyncPolicy::Never),
    ] {
        for clients in [1u64, 64] {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let (storage, _, _) = Storage::open(options(dir.path(), fsync)).expect("opens");
            let storage = std::sync::Arc::new(storage);
            let changes = std::sync::Arc::new(created(1));
            let id = BenchmarkId::new(name, format!("{clients}_clients"));
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    runtime.block_on(run_clients(&storage, &changes, clients, iters))
                })
            });
        }
    }
    group.finish();
}

/// `clients` tasks share `iters` requests; each appends and waits, one request at a time.
async fn run_clients(
    storage: &std::sync::Arc<Storage>,
    changes: &std::sync::Arc<Vec<Change>>,
    clients: u64,
    iters: u64,
) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (storage, changes) = (storage.clone(), changes.clone());
            let share = iters / clients + u64::from(i < iters % clients);
            tokio::spawn(async move {
                for _ in 0..share {
                    let seq = storage.append(&changes).expect("appended");
                    storage.wait_durable(seq).await.expect("durable");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a client finishes");
    }
    started.elapsed()
}

fn configure<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group
}

/// Recovery of a log that holds the requests creating `population` (no snapshot).
fn replay(c: &mut Criterion, population: Population) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    {
        let (storage, mut engine, _) =
            Storage::open(options(dir.path(), FsyncPolicy::Never)).expect("opens");
        for k in 0..population.contacts {
            let now = Timestamp(support::START + k as i64);
            let plan = engine
                .plan_identify(&population.query(k), now)
                .expect("the guards let it through");
            storage.append(&plan.changes).expect("appended");
            for change in &plan.changes {
                engine.apply(change).expect("applies");
            }
        }
        // Dropped without `close`, which would snapshot: the log alone must be replayed.
    }
    let mut group = configure(c, "storage/replay");
    group.throughput(Throughput::Elements(population.contacts));
    group.bench_function(BenchmarkId::from_parameter(population.contacts), |b| {
        b.iter(|| recovery::recover(dir.path(), Mode::ReadOnly).expect("recovers"))
    });
    group.finish();
}

/// Writing a snapshot of `population`, and loading it back.
fn snapshots(c: &mut Criterion, population: Population) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let engine: Engine = population.build();
    // Written once up front too, so that the load can be measured on its own.
    let (path, _) = snapshot::write(dir.path(), &engine, population.contacts).expect("written");
    let id = BenchmarkId::from_parameter(population.contacts);
    let mut group = configure(c, "storage/snapshot_write");
    group.throughput(Throughput::Elements(population.contacts));
    group.bench_function(id.clone(), |b| {
        b.iter(|| snapshot::write(dir.path(), &engine, population.contacts).expect("written"))
    });
    group.finish();
    drop(engine);
    let mut group = configure(c, "storage/snapshot_load");
    group.throughput(Throughput::Elements(population.contacts));
    group.bench_function(id, |b| b.iter(|| snapshot::load(&path).expect("loads")));
    group.finish();
}
