//! Prometheus metrics: one registry per running store, no globals, rendered in the text format
//! at `GET /metrics`. Counts of rows and clusters are read from the engine at scrape time; the
//! log writer reports fsyncs, batches and snapshots through [`LogObserver`]. Requests are counted
//! through [`RouteMetrics`], handles on the request families that the router keeps per route.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::engine::{GuardStats, Stats};
use crate::storage::LogObserver;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub method: &'static str,
    pub route: Route,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub route: Route,
}

/// A route template, shared between the label sets of every request to it.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct Route(pub Arc<str>);

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    pub reason: &'static str,
}

/// 50 us to ~1.6 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_05, 2.0, 16)
}

fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// The request families: counts by (method, route, status), latencies by route.
#[derive(Clone, Debug)]
struct RequestFamilies {
    counts: Family<RequestLabels, Counter>,
    latencies: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

/// The methods a request is counted under; any other is `other`.
pub(crate) const METHODS: [&str; 8] = [
    "GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "other",
];

/// The statuses the service answers with (docs/API.md), whose counters a route keeps at hand.
const STATUSES: [u16; 16] = [
    200, 201, 204, 400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 500, 503, 507,
];

/// One route's request metrics: its series of the request families, each looked up in its
/// family once, on first use (a series appears once a request has been counted in it, as
/// `get_or_create` would have it), then counted through the handle kept here.
#[derive(Debug)]
pub struct RouteMetrics {
    route: Route,
    families: RequestFamilies,
    latency: OnceLock<Histogram>,
    /// By method (index in `METHODS`) and status (index in `STATUSES`).
    counts: Box<[OnceLock<Counter>]>,
}

impl RouteMetrics {
    /// The route template (or `unmatched`) requests are counted under.
    pub fn route(&self) -> &str {
        &self.route.0
    }

    /// Counts a request: `method` is an index in [`METHODS`].
    pub(crate) fn observe(&self, method: usize, status: u16, took: Duration) {
        let counter = || {
            self.families
                .counts
                .get_or_create(&RequestLabels {
                    method: METHODS[method],
                    route: self.route.clone(),
                    status,
                })
                .clone()
        };
        match STATUSES.iter().position(|&s| s == status) {
            Some(i) => self.counts[method * STATUSES.len() + i]
                .get_or_init(counter)
                .inc(),
            None => counter().inc(),
        };
        self.latency
            .get_or_init(|| {
                let labels = RouteLabels {
                    route: self.route.clone(),
                };
                self.families.latencies.get_or_create(&labels).clone()
            })
            .observe(took.as_secs_f64());
    }
}

/// Log and snapshot state since start, for `/stats`.
#[derive(Clone, Copy, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StorageFigures {
    pub log_bytes_since_start: u64,
    pub fsyncs_since_start: u64,
    pub last_snapshot_unix_seconds: Option<f64>,
    pub last_snapshot_seconds: Option<f64>,
    pub recovery_seconds: f64,
}

pub struct Metrics {
    registry: Registry,
    requests: RequestFamilies,
    contacts: Gauge,
    deleted: Gauge,
    clusters: Gauge,
    pub contacts_created: Counter,
    pub merges: Counter,
    pub deletions: Counter,
    /// Phones `--phone-match e164` matched by their digits (not a valid number to it).
    pub phone_e164_fallbacks: Counter,
    /// Requests refused by a guard, by error code.
    refusals: Family<ReasonLabels, Counter>,
    blocked_values: Family<ReasonLabels, Gauge>,
    largest_cluster: Gauge,
    log_bytes: Counter,
    fsyncs: Counter,
    fsync_seconds: Histogram,
    batch_records: Histogram,
    last_snapshot_timestamp: FloatGauge,
    last_snapshot_seconds: FloatGauge,
    recovery_seconds: FloatGauge,
    /// The change feed's figures.
    pub feed: crate::feed::FeedMetrics,
    /// A cluster member's Raft figures; None on a single node.
    pub cluster: Option<RaftMetrics>,
}

/// A cluster member's Raft figures, set from openraft's metrics as they change.
#[derive(Default)]
pub struct RaftMetrics {
    /// 1 for this member's role now (leader, follower, candidate, learner), 0 for the others.
    pub role: Family<RoleLabels, Gauge>,
    pub term: Gauge,
    pub is_leader: Gauge,
    pub leader_changes: Counter,
    pub applied_index: Gauge,
    pub committed_index: Gauge,
    /// Entries each follower's log is behind the leader's (on the leader only).
    pub replication_lag: Family<FollowerLabels, Gauge>,
    pub snapshots_installed: Counter,
    pub snapshots_built: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    pub role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FollowerLabels {
    pub follower: u64,
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
            requests: RequestFamilies {
                counts: Family::default(),
                latencies: Family::new_with_constructor(latency_histogram),
            },
            contacts: Gauge::default(),
            deleted: Gauge::default(),
            clusters: Gauge::default(),
            contacts_created: Counter::default(),
            merges: Counter::default(),
            deletions: Counter::default(),
            phone_e164_fallbacks: Counter::default(),
            refusals: Family::default(),
            blocked_values: Family::default(),
            largest_cluster: Gauge::default(),
            log_bytes: Counter::default(),
            fsyncs: Counter::default(),
            fsync_seconds: latency_histogram(),
            batch_records: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            last_snapshot_timestamp: FloatGauge::default(),
            last_snapshot_seconds: FloatGauge::default(),
            recovery_seconds: FloatGauge::default(),
            feed: crate::feed::FeedMetrics::default(),
            cluster: None,
        };
        let r = &mut m.registry;
        r.register(
            "http_requests",
            "HTTP requests by method, route and status",
            m.requests.counts.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            m.requests.latencies.clone(),
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
            "phone_e164_fallbacks",
            "Phones that --phone-match e164 could not read as a valid number and matched by their digits, since start",
            m.phone_e164_fallbacks.clone(),
        );
        r.register(
            "refusals",
            "Requests refused by an over-merge guard since start, by error code",
            m.refusals.clone(),
        );
        r.register(
            "blocked_values",
            "Values blocked as evidence, by reason (admin or generic)",
            m.blocked_values.clone(),
        );
        r.register(
            "largest_cluster",
            "Live contacts in the largest cluster",
            m.largest_cluster.clone(),
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
        m.register_feed();
        m
    }

    /// Registers the change feed's figures.
    fn register_feed(&mut self) {
        let (r, m) = (&mut self.registry, &self.feed);
        r.register(
            "changes_events_written",
            "Change feed events written to its files since start",
            m.events_written.clone(),
        );
        r.register(
            "changes_consumers",
            "Change feed readers connected now (waiting or streaming)",
            m.consumers.clone(),
        );
        r.register(
            "changes_oldest_seq",
            "The oldest change feed sequence number still kept (0: none)",
            m.oldest.clone(),
        );
        r.register(
            "changes_last_seq",
            "The newest change feed sequence number",
            m.last.clone(),
        );
    }

    /// A cluster member's metrics: a single node's, and the Raft figures.
    pub(crate) fn for_raft() -> Metrics {
        let mut m = Metrics::new();
        let c = RaftMetrics::default();
        let r = &mut m.registry;
        r.register(
            "cluster_role",
            "1 for this member's role now, by role",
            c.role.clone(),
        );
        r.register(
            "cluster_term",
            "The Raft term this member is in",
            c.term.clone(),
        );
        r.register(
            "cluster_is_leader",
            "1 while this member is the leader",
            c.is_leader.clone(),
        );
        r.register(
            "cluster_leader_changes",
            "Times the leader this member knows changed, since start",
            c.leader_changes.clone(),
        );
        r.register(
            "cluster_applied_index",
            "The index of the last log entry applied to this member's state",
            c.applied_index.clone(),
        );
        r.register(
            "cluster_committed_index",
            "The index of the last log entry this member knows is committed",
            c.committed_index.clone(),
        );
        r.register(
            "cluster_replication_lag",
            "Log entries each follower is behind the leader (reported by the leader)",
            c.replication_lag.clone(),
        );
        r.register(
            "cluster_snapshots_installed",
            "Snapshots this member installed from the leader, since start",
            c.snapshots_installed.clone(),
        );
        r.register(
            "cluster_snapshots_built",
            "Snapshots this member built of its own state, since start",
            c.snapshots_built.clone(),
        );
        m.cluster = Some(c);
        m
    }

    /// The request metrics of `route`, for the router to keep (one per route template).
    pub fn route(&self, route: Arc<str>) -> RouteMetrics {
        RouteMetrics {
            route: Route(route),
            families: self.requests.clone(),
            latency: OnceLock::new(),
            counts: (0..METHODS.len() * STATUSES.len())
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    pub(crate) fn observe_recovery(&self, took: Duration) {
        self.recovery_seconds.set(took.as_secs_f64());
    }

    /// Counts a request refused by a guard (`cluster_limit`, `blocked_identifier`).
    pub fn refused(&self, code: &'static str) {
        self.refusals
            .get_or_create(&ReasonLabels { reason: code })
            .inc();
    }

    /// The snapshot recovery started from was finished at `at` (its file's modification time),
    /// so the last snapshot's time is known before this process writes one.
    pub(crate) fn observe_loaded_snapshot(&self, at: std::time::SystemTime) {
        let at = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.last_snapshot_timestamp.set(at.as_secs_f64());
    }

    /// The log and snapshot figures the console's overview shows.
    pub(crate) fn storage_figures(&self) -> StorageFigures {
        let last = self.last_snapshot_timestamp.get();
        StorageFigures {
            log_bytes_since_start: self.log_bytes.get(),
            fsyncs_since_start: self.fsyncs.get(),
            last_snapshot_unix_seconds: (last > 0.0).then_some(last),
            last_snapshot_seconds: (last > 0.0).then(|| self.last_snapshot_seconds.get()),
            recovery_seconds: self.recovery_seconds.get(),
        }
    }

    /// The text exposition, with the engine's counts as of now.
    pub fn render(&self, stats: Stats, guards: GuardStats) -> String {
        for (reason, n) in [
            ("admin", guards.blocked_admin),
            ("generic", guards.blocked_generic),
        ] {
            self.blocked_values
                .get_or_create(&ReasonLabels { reason })
                .set(n as i64);
        }
        self.largest_cluster.set(guards.largest_cluster as i64);
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

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::family::Family;

    /// The lines of `text` about HTTP requests, sorted (a `Family` writes its label sets in
    /// any order), sums rounded to the nanosecond (threads add them up in another order).
    fn request_lines(text: &str) -> Vec<String> {
        let mut lines: Vec<String> = (text.lines())
            .filter(|l| l.contains("http_request"))
            .map(|l| match l.split_once("_sum{") {
                Some(_) => {
                    let (labels, sum) = l.rsplit_once(' ').unwrap();
                    format!("{labels} {:.9}", sum.parse::<f64>().unwrap())
                }
                None => l.to_owned(),
            })
            .collect();
        lines.sort_unstable();
        lines
    }

    #[test]
    fn request_metrics_read_exactly_as_prometheus_client_families_would() {
        let routes: Vec<Arc<str>> = ["/identify", "/contacts/{id}", "unmatched"]
            .into_iter()
            .map(Arc::from)
            .collect();
        let requests: Vec<(&'static str, usize, u16, Duration)> = (0..300u64)
            .map(|i| {
                let method = ["POST", "GET", "DELETE"][i as usize % 3];
                // 418: a status no route keeps a counter for at hand.
                let status = [200, 200, 400, 404, 503, 418][i as usize % 6];
                // From 1 us to 3.2 s: every bucket, +Inf included.
                let took = Duration::from_micros(1 + i * i * 37);
                (method, i as usize % routes.len(), status, took)
            })
            .collect();

        let metrics = Metrics::new();
        let handles: Vec<RouteMetrics> = routes.iter().map(|r| metrics.route(r.clone())).collect();
        std::thread::scope(|s| {
            for part in requests.chunks(40) {
                let handles = &handles;
                s.spawn(move || {
                    for &(method, route, status, took) in part {
                        let method = METHODS.iter().position(|&m| m == method).unwrap();
                        handles[route].observe(method, status, took);
                    }
                });
            }
        });

        let mut reference = Registry::with_prefix("identity_engine");
        let counts = Family::<RequestLabels, Counter>::default();
        let latencies = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        reference.register(
            "http_requests",
            "HTTP requests by method, route and status",
            counts.clone(),
        );
        reference.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latencies.clone(),
        );
        for &(method, route, status, took) in &requests {
            let route = Route(routes[route].clone());
            counts
                .get_or_create(&RequestLabels {
                    method,
                    route: route.clone(),
                    status,
                })
                .inc();
            latencies
                .get_or_create(&RouteLabels { route })
                .observe(took.as_secs_f64());
        }
        let mut expected = String::new();
        prometheus_client::encoding::text::encode(&mut expected, &reference).unwrap();

        let rendered = metrics.render(Stats::default(), Default::default());
        assert_eq!(request_lines(&rendered), request_lines(&expected));
        assert!(request_lines(&rendered).len() > 60);
    }
}
