//! HTTP: the Prometheus /metrics endpoint and the query API (`/api/query/...`).
pub mod answer;
pub mod metrics;
pub mod query;
pub mod server;
