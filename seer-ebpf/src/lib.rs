//! Build-dependency anchor: lets seer-agent list this crate so edits rebuild it (the programs
//! themselves are the `seer` binary target).
#![no_std]
