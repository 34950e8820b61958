//! The commands, one file each (`seer-agent run` is the tick loop itself, see `tick_loop`).
pub mod act;
pub mod diagnose;
pub mod doctor;
pub mod query;
pub mod selftest;
