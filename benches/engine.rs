//! Engine benches: one `/identify` as `Store::identify` runs it under the lock (plan, apply,
//! answer, render the JSON), at 10^4 to 10^7 contacts, for four kinds of request: a known pair
//! (no change), a new primary, a new secondary on a known phone, and a merge of two clusters.
//!
//! Each size is built once (seeded, outside the timed part) and shared by its four benches. The
//! requests that add rows or merge clusters run on a copy that is thrown away and copied afresh
//! (untimed) after every 1% of growth, so a size stays that size while it is measured.
//! `BENCH_SIZES=10000,100000 cargo bench --bench engine` picks the sizes (default: all four).
//! `identify/link_cluster_of/N` adds a secondary to a cluster of N members (what link.lua does
//! to its 1000 clusters as they grow): the answer lists the whole cluster.

mod support;

use std::collections::HashSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use identity_engine::engine::{Engine, Limits, Query, Timestamp};
use support::{identify, query, Population, Rng};

const SIZES: [u64; 4] = [10_000, 100_000, 1_000_000, 10_000_000];
/// Cluster sizes for the link bench, and the size of the table around the cluster.
const CLUSTER_SIZES: [u64; 3] = [10, 100, 1000];
const CLUSTER_TABLE: u64 = 10_000;
/// Known pairs asked, spread over the whole table so that large sizes miss the caches.
const READS: usize = 1 << 16;

struct Fixture {
    population: Population,
    base: Engine,
    /// The copy that mutating benches change, and how many requests of the epoch it has seen.
    work: Engine,
    used: usize,
}

impl Fixture {
    fn build(contacts: u64) -> Fixture {
        let population = Population::clustered(contacts);
        let started = Instant::now();
        let base = population.build();
        eprintln!(
            "built {contacts} contacts in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Fixture {
            population,
            base,
            work: Engine::new(),
            used: usize::MAX,
        }
    }

    /// How many rows or merges a copy takes before it is replaced: 1% of the size.
    fn epoch(&self) -> usize {
        (self.population.contacts / 100).clamp(100, 100_000) as usize
    }

    /// Copies the base afresh unless the copy in hand has requests of this epoch left.
    fn refresh(&mut self, epoch_len: usize) {
        if self.used >= epoch_len {
            self.work = self.base.clone();
            // A clone has no spare capacity: its first new row would copy every array (glibc
            // allocates arrays under 32 MiB on the heap, where a realloc copies), a cost a
            // running server pays once per doubling, not once per epoch.
            self.work.reserve(epoch_len);
            self.used = 0;
        }
    }
}

/// A time after every contact of the base, as `Timestamp::now()` would be.
fn now() -> Timestamp {
    Timestamp::now()
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    for contacts in support::sizes(&SIZES) {
        let mut fixture = Fixture::build(contacts);
        known_pair(&mut c, &mut fixture);
        let new_primaries = new_primaries(&fixture);
        mutating(
            &mut c,
            &mut fixture,
            "new_primary",
            contacts,
            &new_primaries,
        );
        let new_secondaries = new_secondaries(&fixture);
        mutating(
            &mut c,
            &mut fixture,
            "new_secondary",
            contacts,
            &new_secondaries,
        );
        let merges = merges(&fixture);
        mutating(&mut c, &mut fixture, "merge", contacts, &merges);
    }
    for members in CLUSTER_SIZES {
        growing_cluster(&mut c, members);
    }
    c.final_summary();
}

/// A new secondary on a cluster of `members` (link.lua's request): the answer lists the whole
/// cluster, so its cost grows with it. The table holds `CLUSTER_TABLE` other contacts.
fn growing_cluster(c: &mut Criterion, members: u64) {
    let mut fixture = Fixture::build(CLUSTER_TABLE);
    // One phone shared by the whole cluster: past the default generic threshold it would be
    // blocked, and the bench would measure something else. The guards off, the cluster grows
    // to the size the bench names (the guards' own cost is in every other bench).
    fixture.base.set_limits(Limits::OFF);
    let p = fixture.population;
    let phone = p.phone(p.contacts + 10_000_000);
    let mut k = p.contacts;
    for _ in 0..members {
        let at = Timestamp(support::START + k as i64);
        identify(&mut fixture.base, &query(&p.email(k), &phone), at);
        k += 1;
    }
    let epoch = (members / 10).max(10);
    let requests: Vec<Query> = (k..k + epoch).map(|k| query(&p.email(k), &phone)).collect();
    mutating(c, &mut fixture, "link_cluster_of", members, &requests);
}

fn configure<'a>(
    c: &'a mut Criterion,
    name: &str,
    contacts: u64,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(format!("identify/{name}"));
    let large = contacts >= 1_000_000;
    group
        .sample_size(if large { 10 } else { 20 })
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(if large { 3 } else { 2 }));
    group
}

/// A known email and phone that one contact holds together: the read path, no change.
fn known_pair(c: &mut Criterion, fixture: &mut Fixture) {
    let population = fixture.population;
    let mut rng = Rng::new(1);
    let reads: Vec<Query> = (0..READS)
        .map(|_| population.query(rng.below(population.contacts)))
        .collect();
    let mut group = configure(c, "known_pair", population.contacts);
    group.bench_function(BenchmarkId::from_parameter(population.contacts), |b| {
        let engine = &mut fixture.base;
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % reads.len();
            black_box(identify(engine, &reads[i], now()))
        })
    });
    group.finish();
}

/// Runs `requests` (one epoch's worth) in order on fresh copies, timing only the requests.
fn mutating(
    c: &mut Criterion,
    fixture: &mut Fixture,
    name: &str,
    parameter: u64,
    requests: &[Query],
) {
    let mut group = configure(c, name, fixture.population.contacts);
    fixture.used = usize::MAX;
    group.bench_function(BenchmarkId::from_parameter(parameter), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                fixture.refresh(requests.len());
                let end = requests.len().min(fixture.used + left);
                let batch = &requests[fixture.used..end];
                let engine = &mut fixture.work;
                let started = Instant::now();
                for query in batch {
                    black_box(identify(engine, query, now()));
                }
                total += started.elapsed();
                left -= batch.len();
                fixture.used = end;
            }
            total
        })
    });
    group.finish();
}

/// Never-seen emails and phones: each request creates a primary.
fn new_primaries(fixture: &Fixture) -> Vec<Query> {
    let p = fixture.population;
    let fresh = p.contacts..p.contacts + fixture.epoch() as u64;
    fresh.map(|k| query(&p.email(k), &p.phone(k))).collect()
}

/// A new email with the phone of a random existing contact: a secondary of its cluster.
fn new_secondaries(fixture: &Fixture) -> Vec<Query> {
    let p = fixture.population;
    let mut rng = Rng::new(2);
    let fresh = p.contacts..p.contacts + fixture.epoch() as u64;
    fresh
        .map(|k| {
            let known = p.phone_key(rng.below(p.contacts));
            query(&p.email(k), &p.phone(known))
        })
        .collect()
}

/// The email of one contact with the phone of another cluster: the younger cluster is relinked
/// to the older primary. No cluster appears twice in an epoch, so every request is a merge.
fn merges(fixture: &Fixture) -> Vec<Query> {
    let p = fixture.population;
    let mut rng = Rng::new(3);
    let mut used = HashSet::new();
    let mut out = Vec::with_capacity(fixture.epoch());
    while out.len() < fixture.epoch() {
        let (a, b) = (rng.below(p.contacts), rng.below(p.contacts));
        let (ka, kb) = (p.phone_key(a), p.phone_key(b));
        if ka != kb && !used.contains(&ka) && !used.contains(&kb) {
            used.extend([ka, kb]);
            out.push(query(&p.email(a), &p.phone(kb)));
        }
    }
    out
}
