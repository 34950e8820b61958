//! seer's testbed: a real multi-tier microservices application (Debian nginx in front, a logic
//! tier of `seer-testbed-svc` RPC services, memcached and redis back ends) spread over network
//! namespaces, each service in its own cgroup; an open-loop load generator; a fault injector;
//! and the ground truth (QoS violations and their initiating service). See README.md.
pub mod callgraph;
pub mod cgroup;
pub mod cmd;
pub mod corpus;
pub mod dataset;
pub mod error;
pub mod faults;
pub mod hog;
pub mod load;
pub mod netns;
pub mod plan;
pub mod run;
pub mod scenario;
pub mod servers;
pub mod shape;
pub mod signals;
pub mod spawn;
pub mod svc;
pub mod swap;
pub mod testbed;
pub mod truth;

pub use error::{Error, Result};

#[cfg(test)]
#[path = "truth_tests.rs"]
mod truth_tests;
