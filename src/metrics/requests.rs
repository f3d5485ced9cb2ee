//! Request counts and latencies, kept per thread and summed when `/metrics` is scraped.
//!
//! prometheus-client's `Family` takes a shared lock and hashes the labels on every request, and
//! its histogram takes a write lock: with two worker threads every request moved those lines
//! between cores, and counting a request cost 12-13% of the read path's throughput. Here each
//! thread counts into a shard of its own (an uncontended lock on a line no other core writes),
//! and a scrape adds the shards up and writes them with prometheus-client's encoder, in the same
//! families, names, labels and buckets as before.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hashbrown::{Equivalent, HashMap};
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;

use super::{RequestLabels, Route, RouteLabels};

/// Enough that threads rarely share one (tokio's workers plus blocking threads).
const SHARDS: usize = 16;

/// The request metrics' shared state: one shard per thread (modulo `SHARDS`).
#[derive(Debug)]
pub struct Requests {
    shards: Box<[Padded]>,
    /// Upper bounds of the latency buckets, +Inf aside.
    bounds: Vec<f64>,
}

/// A shard on cache lines of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(Mutex<Shard>);

#[derive(Debug, Default)]
struct Shard {
    counts: HashMap<Key, u64>,
    latencies: HashMap<Arc<str>, Latency>,
}

#[derive(Debug, Clone)]
struct Latency {
    /// Per bucket (not cumulative), the last one +Inf.
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A request's labels; hashed as `KeyRef` is, so a lookup needs no clone of the route.
#[derive(Debug, PartialEq, Eq)]
struct Key {
    method: &'static str,
    route: Arc<str>,
    status: u16,
}

struct KeyRef<'a> {
    method: &'static str,
    route: &'a str,
    status: u16,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        KeyRef {
            method: self.method,
            route: &self.route,
            status: self.status,
        }
        .hash(state)
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.method, self.route, self.status).hash(state)
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.method == key.method && self.status == key.status && self.route == &*key.route
    }
}

/// This thread's shard number, given out in turn on first use.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

impl Requests {
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Requests {
        Requests {
            shards: (0..SHARDS).map(|_| Padded::default()).collect(),
            bounds: bounds.into_iter().collect(),
        }
    }

    pub fn observe(&self, method: &'static str, route: &Arc<str>, status: u16, took: Duration) {
        let mut shard = self.shards[shard_index()].0.lock();
        let key = KeyRef {
            method,
            route,
            status,
        };
        match shard.counts.get_mut(&key) {
            Some(n) => *n += 1,
            None => {
                let key = Key {
                    method,
                    route: route.clone(),
                    status,
                };
                shard.counts.insert(key, 1);
            }
        }
        let seconds = took.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|&bound| bound >= seconds)
            .unwrap_or(self.bounds.len());
        let latency = match shard.latencies.get_mut(&**route) {
            Some(latency) => latency,
            None => shard
                .latencies
                .entry(route.clone())
                .or_insert_with(|| Latency {
                    buckets: vec![0; self.bounds.len() + 1],
                    sum: 0.0,
                    count: 0,
                }),
        };
        latency.buckets[bucket] += 1;
        latency.sum += seconds;
        latency.count += 1;
    }

    /// Every shard added up, in label order.
    fn totals(&self) -> (Counts, Latencies) {
        let (mut counts, mut latencies) = (Counts::new(), Latencies::new());
        for shard in &self.shards {
            let shard = shard.0.lock();
            for (key, n) in &shard.counts {
                *counts
                    .entry((key.route.clone(), key.method, key.status))
                    .or_insert(0) += n;
            }
            for (route, l) in &shard.latencies {
                match latencies.get_mut(route) {
                    None => {
                        latencies.insert(route.clone(), l.clone());
                    }
                    Some(total) => {
                        total
                            .buckets
                            .iter_mut()
                            .zip(&l.buckets)
                            .for_each(|(t, n)| *t += n);
                        total.sum += l.sum;
                        total.count += l.count;
                    }
                }
            }
        }
        (counts, latencies)
    }
}

/// Requests by (route, method, status), and latencies by route.
type Counts = BTreeMap<(Arc<str>, &'static str, u16), u64>;
type Latencies = BTreeMap<Arc<str>, Latency>;

/// Writes the request families at scrape time.
#[derive(Debug)]
pub struct RequestCollector(pub Arc<Requests>);

impl Collector for RequestCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let (counts, latencies) = self.0.totals();
        {
            let mut family = encoder.encode_descriptor(
                "http_requests",
                "HTTP requests by method, route and status.",
                None,
                MetricType::Counter,
            )?;
            for ((route, method, status), n) in counts {
                let labels = RequestLabels {
                    method,
                    route: Route(route),
                    status,
                };
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "http_request_duration_seconds",
            "HTTP request latency by route.",
            None,
            MetricType::Histogram,
        )?;
        let bounds = self.0.bounds.iter().copied().chain([f64::MAX]);
        for (route, l) in latencies {
            let buckets: Vec<(f64, u64)> = bounds.clone().zip(l.buckets).collect();
            let labels = RouteLabels {
                route: Route(route),
            };
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(l.sum, l.count, &buckets, None)?;
        }
        Ok(())
    }
}
