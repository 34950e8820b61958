//! HTTP: the Prometheus /metrics endpoint, the query API (`/api/query/...`) and the live view
//! in the browser (`/ui`, live or, with `seer-agent ui --db`, recorded).
pub mod answer;
pub mod metrics;
pub mod query;
pub mod server;
pub mod ui;
