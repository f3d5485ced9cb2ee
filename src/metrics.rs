//! Prometheus metrics: one registry per running store, no globals, rendered in the text format
//! at `GET /metrics`. Counts of rows and clusters are read from the engine at scrape time; the
//! log writer reports fsyncs, batches and snapshots through [`LogObserver`].

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::engine::Stats;
use crate::storage::LogObserver;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    pub route: Route,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: Route,
}

/// A route template, shared between the label sets of every request to it.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Route(pub Arc<str>);

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    // 50 us to ~1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    contacts: Gauge,
    deleted: Gauge,
    clusters: Gauge,
    pub contacts_created: Counter,
    pub merges: Counter,
    pub deletions: Counter,
    log_bytes: Counter,
    fsyncs: Counter,
    fsync_seconds: Histogram,
    batch_records: Histogram,
    last_snapshot_timestamp: FloatGauge,
    last_snapshot_seconds: FloatGauge,
    recovery_seconds: FloatGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("identity_engine"),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            contacts: Gauge::default(),
            deleted: Gauge::default(),
            clusters: Gauge::default(),
            contacts_created: Counter::default(),
            merges: Counter::default(),
            deletions: Counter::default(),
            log_bytes: Counter::default(),
            fsyncs: Counter::default(),
            fsync_seconds: latency_histogram(),
            batch_records: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            last_snapshot_timestamp: FloatGauge::default(),
            last_snapshot_seconds: FloatGauge::default(),
            recovery_seconds: FloatGauge::default(),
        };
        let r = &mut m.registry;
        r.register(
            "http_requests",
            "HTTP requests by method, route and status",
            m.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            m.request_seconds.clone(),
        );
        r.register(
            "contacts_live",
            "Contacts that are not deleted",
            m.contacts.clone(),
        );
        r.register(
            "contacts_deleted",
            "Contacts that are soft-deleted",
            m.deleted.clone(),
        );
        r.register(
            "clusters",
            "Clusters (identities) of live contacts",
            m.clusters.clone(),
        );
        r.register(
            "contacts_created",
            "Contacts created since start",
            m.contacts_created.clone(),
        );
        r.register(
            "merges",
            "Merges of two clusters since start",
            m.merges.clone(),
        );
        r.register(
            "deletions",
            "Contacts deleted since start",
            m.deletions.clone(),
        );
        r.register(
            "log_bytes",
            "Bytes written to the write-ahead log since start",
            m.log_bytes.clone(),
        );
        r.register(
            "log_fsyncs",
            "fsyncs of the write-ahead log since start",
            m.fsyncs.clone(),
        );
        r.register(
            "log_fsync_duration_seconds",
            "Duration of each log fsync",
            m.fsync_seconds.clone(),
        );
        r.register(
            "log_batch_records",
            "Records per group-commit batch",
            m.batch_records.clone(),
        );
        r.register(
            "snapshot_last_timestamp_seconds",
            "Unix time the last snapshot finished",
            m.last_snapshot_timestamp.clone(),
        );
        r.register(
            "snapshot_last_duration_seconds",
            "How long the last snapshot took",
            m.last_snapshot_seconds.clone(),
        );
        r.register(
            "recovery_duration_seconds",
            "How long start-up recovery took",
            m.recovery_seconds.clone(),
        );
        m
    }

    /// Counts a request; the labels are shared, so this allocates nothing once a label set has
    /// been seen.
    pub fn observe_request(
        &self,
        method: &'static str,
        route: &Arc<str>,
        status: u16,
        took: Duration,
    ) {
        let labels = RequestLabels {
            method,
            route: Route(route.clone()),
            status,
        };
        self.requests.get_or_create(&labels).inc();
        let route = RouteLabels {
            route: labels.route,
        };
        self.request_seconds
            .get_or_create(&route)
            .observe(took.as_secs_f64());
    }

    pub fn observe_recovery(&self, took: Duration) {
        self.recovery_seconds.set(took.as_secs_f64());
    }

    /// The text exposition, with the engine's counts as of now.
    pub fn render(&self, stats: Stats) -> String {
        self.contacts.set((stats.contacts - stats.deleted) as i64);
        self.deleted.set(stats.deleted as i64);
        self.clusters.set(stats.clusters as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl LogObserver for Metrics {
    fn batch_written(&self, records: u64, bytes: u64) {
        self.log_bytes.inc_by(bytes);
        self.batch_records.observe(records as f64);
    }

    fn synced(&self, took: Duration) {
        self.fsyncs.inc();
        self.fsync_seconds.observe(took.as_secs_f64());
    }

    fn snapshot_written(&self, took: Duration, _bytes: u64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_snapshot_timestamp.set(now.as_secs_f64());
        self.last_snapshot_seconds.set(took.as_secs_f64());
    }
}
