//! Telemetry: the process's log lines and its Prometheus metrics.

pub mod logging;
pub(crate) mod metrics;
