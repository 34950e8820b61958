//! The database schema: every table of the store, typed, in one place.
//!
//! Invariants (also checked by the compatibility test at the bottom):
//! - `META["schema_version"]` holds [`SCHEMA_VERSION`]; a store with a larger value is refused.
//! - A tick is stored as one or more *chunks* keyed `(tick ts_ms, first service id)`. A chunk
//!   holds consecutive services of that tick in ascending id order, encoded by `codec`, and is
//!   at most [`CHUNK_MAX`] bytes so that it fills at most one 4 KiB redb leaf page. All chunks
//!   of a tick are written in the same transaction, so a tick is either whole or absent.
//! - `AGG_1S` has the same key shape with the start of a second, and per-second min/mean/max.
//! - `EDGES[ts]` is the complete call graph as of `ts`; a row is written only when the graph
//!   changes, so the graph at time t is the row with the largest key <= t.
//! - A service id with no `SERVICES` row may still appear in samples (named on export as "").

use redb::TableDefinition;

/// Version of the layout below. Bump it, and add a migration and its test, on any change of a
/// key, a value or the chunk encoding.
pub const SCHEMA_VERSION: u64 = 1;

/// `META` keys.
pub const META_SCHEMA_VERSION: &str = "schema_version";
pub const META_CREATED_MS: &str = "created_ms";
pub const META_TICK_MS: &str = "tick_ms";
/// The largest service id ever written: retention may delete a service's row, never its id
/// (a new service must not take the id of one the call graph or the actions log still name).
pub const META_SERVICE_ID_MAX: &str = "service_id_max";

/// Service id stored where "no service" is meant (an unknown QoS initiator, a host-wide action).
pub const NO_SERVICE: u32 = u32::MAX;

/// Largest chunk value: a 4 KiB page minus redb's leaf header (4), value length (4) and key (12).
pub const CHUNK_MAX: usize = 4096 - 4 - 4 - 12;

/// name -> value (schema version, creation time, tick).
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// service id -> (name, identity, first_seen_ms, last_seen_ms).
pub const SERVICES: TableDefinition<u32, (&str, &str, u64, u64)> = TableDefinition::new("services");

/// (tick ts_ms, first service id of the chunk) -> chunk of full-resolution samples.
pub const SAMPLES: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("samples");

/// (second start ms, first service id of the chunk) -> chunk of per-second min/mean/max.
pub const AGG_1S: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("agg_1s");

/// ts_ms -> the call graph from then on, as sorted (caller id, callee id) pairs.
pub const EDGES: TableDefinition<u64, Vec<(u32, u32)>> = TableDefinition::new("edges");

/// (start_ms, initiating service id or NO_SERVICE) -> (end_ms, kind).
pub const QOS_EVENTS: TableDefinition<(u64, u32), (u64, &str)> = TableDefinition::new("qos_events");

/// prediction ts_ms (the tick whose window it read) -> (model name, packed (service id u32 LE,
/// probability f32 LE) pairs): what the model said, so a run can be scored afterwards. Written
/// with the tick, dropped with the raw samples when they are downsampled. Added within
/// version 1 (an additive table, like `HOST`).
pub const PREDICTIONS: TableDefinition<u64, (&str, &[u8])> = TableDefinition::new("predictions");

/// alert id -> (ts_ms, payload). Rows are removed once delivered (acknowledged).
pub const ALERTS: TableDefinition<u64, (u64, &str)> = TableDefinition::new("alerts_outbox");

/// alert id -> (ts_ms, payload, why): alerts a receiver refused for good (an HTTP 4xx other
/// than 408/429: a malformed alert, a wrong path); moved out of `ALERTS` so that they do not
/// block the later ones, and kept (with the receiver's answer) for the operator. Added within
/// version 1 like `HOST`.
pub const REJECTED_ALERTS: TableDefinition<u64, (u64, &str, &str)> =
    TableDefinition::new("alerts_rejected");

/// action id -> (ts_ms, service id or NO_SERVICE, kind, detail, undone_ms or 0).
pub const ACTIONS: TableDefinition<u64, (u64, u32, &str, &str, u64)> =
    TableDefinition::new("actions");

/// What the host that wrote this store offers: key -> value. `HOST_MISSING_CHANNELS` holds the
/// channels (comma-separated names from `CHANNEL_NAMES`) the host's kernel could not observe, so
/// their zeros mean "not seen", not "nothing happened". Added within version 1: stores written
/// before it get the (empty) table at their next open.
pub const HOST: TableDefinition<&str, &str> = TableDefinition::new("host");
pub const HOST_MISSING_CHANNELS: &str = "missing_channels";

/// (finished ts_ms, service id) -> the diagnosis record as JSON (resource, confidence, evidence,
/// mode: the agent's `diagnose::record::Record`). Added within version 1 like `HOST`.
pub const DIAGNOSES: TableDefinition<(u64, u32), &str> = TableDefinition::new("diagnoses");

/// (caller service id, "address:port" on another host) -> (first_seen_ms, last_seen_ms): calls
/// to services this host's agent cannot see (another host's agent has them; joining the two
/// gives the cluster's call graph). Added within version 1 like `HOST`.
pub const REMOTE_EDGES: TableDefinition<(u32, &str), (u64, u64)> =
    TableDefinition::new("remote_edges");

#[cfg(test)]
mod tests {
    use super::*;
    use redb::TableHandle;

    /// Renaming a table or changing the chunk bound breaks existing stores: such a change must
    /// bump SCHEMA_VERSION and come with a migration.
    #[test]
    fn layout_of_version_1_is_unchanged() {
        assert_eq!(SCHEMA_VERSION, 1);
        let names = [
            META.name(),
            SERVICES.name(),
            SAMPLES.name(),
            AGG_1S.name(),
            EDGES.name(),
            QOS_EVENTS.name(),
            ALERTS.name(),
            ACTIONS.name(),
            HOST.name(),
            DIAGNOSES.name(),
            REMOTE_EDGES.name(),
            REJECTED_ALERTS.name(),
            PREDICTIONS.name(),
        ];
        assert_eq!(
            names,
            [
                "meta",
                "services",
                "samples",
                "agg_1s",
                "edges",
                "qos_events",
                "alerts_outbox",
                "actions",
                "host",
                "diagnoses",
                "remote_edges",
                "alerts_rejected",
                "predictions"
            ]
        );
        assert_eq!(CHUNK_MAX, 4076);
    }
}
