//! The open-loop load generator (`seer-testbed-load`). Arrivals are a Poisson process whose rate
//! follows the scenario's profile and load-spike faults; each request leaves at its scheduled
//! time whatever happened to earlier ones, and its latency is measured from that time, so a
//! stalled back end shows in the tail instead of slowing the load (no coordinated omission).
pub mod generator;
pub mod hdr;
pub mod http;
pub mod profile;
pub mod records;
