//! Resident memory per contact, and recovery time, at N contacts (default 10,000,000), each with
//! its own 25-byte email and 10-digit phone (every identifier distinct: the most memory).
//!
//! `cargo run --release --example memory -- [N] [--recovery] [--replay]`
//!
//! Memory is the process's resident set (VmRSS) after the build minus the same before it. With
//! `--recovery` it then writes a snapshot of the state, opens the directory as the server does
//! (snapshot load), appends a tail of 1% more contacts to the log, and times recovery again
//! (snapshot + log tail). With `--replay` it times the engine's part of recovery alone: applying
//! every fact of the state to an empty engine, without and with `Engine::reserve`. Times are wall
//! clock and, in brackets, this thread's CPU time, which other processes do not inflate.

#[path = "../benches/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use identity_engine::engine::{Change, Engine, Timestamp};
use identity_engine::storage::recovery::{self, Mode};
use identity_engine::storage::{snapshot, FsyncPolicy, Storage, StorageOptions};
use support::{resident_bytes, thread_cpu_time, Population};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let contacts = args
        .iter()
        .find_map(|a| a.replace('_', "").parse().ok())
        .unwrap_or(10_000_000u64);
    let population = Population::distinct(contacts);

    let baseline = resident_bytes();
    let timer = Timer::start();
    let engine = population.build();
    report("built", &engine, baseline, timer);

    if args.iter().any(|a| a == "--replay") {
        replay(&engine, baseline);
    }
    if args.iter().any(|a| a == "--recovery") {
        recover(population, engine, baseline);
    }
}

/// Applies the facts of `engine` to an empty engine, as recovery does after decoding them.
fn replay(engine: &Engine, baseline: u64) {
    let facts: Vec<Change> = engine.facts().collect();
    for reserve in [false, true] {
        let timer = Timer::start();
        let mut copy = Engine::new();
        if reserve {
            copy.reserve(facts.len());
        }
        for fact in &facts {
            copy.apply(fact).expect("a fact applies");
        }
        let what = if reserve {
            "replayed, reserved"
        } else {
            "replayed"
        };
        report(what, &copy, baseline, timer);
    }
}

#[derive(Clone, Copy)]
struct Timer {
    wall: Instant,
    cpu: Duration,
}

impl Timer {
    fn start() -> Timer {
        Timer {
            wall: Instant::now(),
            cpu: thread_cpu_time(),
        }
    }

    /// Wall and CPU seconds since the start.
    fn seconds(&self) -> (f64, f64) {
        let cpu = thread_cpu_time().saturating_sub(self.cpu);
        (self.wall.elapsed().as_secs_f64(), cpu.as_secs_f64())
    }
}

fn report(what: &str, engine: &Engine, baseline: u64, timer: Timer) {
    let (wall, cpu) = timer.seconds();
    let contacts = engine.stats().contacts as u64;
    let resident = resident_bytes().saturating_sub(baseline);
    println!(
        "{what}: {contacts} contacts in {wall:.2} s [cpu {cpu:.2} s, {:.0} ns each]; \
         resident {:.1} MiB, {:.1} bytes per contact",
        cpu * 1e9 / contacts as f64,
        resident as f64 / (1 << 20) as f64,
        resident as f64 / contacts as f64
    );
}

/// Snapshot, open (snapshot load), log a 1% tail, then recover snapshot + tail from the files.
fn recover(population: Population, engine: Engine, baseline: u64) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let timer = Timer::start();
    let seq = population.contacts;
    let (_, bytes) = snapshot::write(dir.path(), &engine, seq).expect("snapshot written");
    let (wall, cpu) = timer.seconds();
    println!(
        "snapshot: {:.1} MiB written in {wall:.2} s [cpu {cpu:.2} s]",
        bytes as f64 / (1 << 20) as f64
    );
    drop(engine);

    let mut options = StorageOptions::new(dir.path());
    options.fsync = FsyncPolicy::Never;
    options.snapshot_every_bytes = u64::MAX;
    let timer = Timer::start();
    let (storage, mut engine, _) = Storage::open(options).expect("the directory opens");
    report("recovered (snapshot only)", &engine, baseline, timer);

    let tail = (population.contacts / 100).max(1);
    for k in population.contacts..population.contacts + tail {
        let now = Timestamp(support::START + k as i64);
        let plan = engine
            .plan_identify(&population.query(k), now)
            .expect("the guards let it through");
        storage.append(&plan.changes).expect("appended");
        for change in &plan.changes {
            engine.apply(change).expect("applies");
        }
    }
    drop(storage);
    drop(engine);

    let timer = Timer::start();
    let (engine, replayed) = recovery::recover(dir.path(), Mode::ReadOnly).expect("recovers");
    let what = format!(
        "recovered (snapshot + {} log records)",
        replayed.records_replayed
    );
    report(&what, &engine, baseline, timer);
}
