//! Shared helpers for seer's integration tests.
