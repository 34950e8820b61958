//! QoS events (the labels of the training data), the alerts outbox and the actions log.

use crate::schema::{
    ACTIONS, ALERTS, DIAGNOSES, NO_SERVICE, QOS_EVENTS, REJECTED_ALERTS, REMOTE_EDGES,
};
use crate::{Store, StoreError};
use redb::ReadableTable;
use seer_common::sample::ServiceId;

/// An end-to-end QoS violation, `start_ms <= t < end_ms`, and the service that initiated it
/// (None when the labeller could not tell).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QosEvent {
    pub start_ms: u64,
    pub end_ms: u64,
    pub initiator: Option<ServiceId>,
    /// What was violated, e.g. "p99>50ms", or "injected:cpu" for the testbed's ground truth.
    pub kind: String,
}

/// An alert waiting for delivery to the cluster manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub id: u64,
    pub ts_ms: u64,
    /// What to send, usually JSON.
    pub payload: String,
}

/// An alert a receiver refused for good, with its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedAlert {
    pub alert: Alert,
    /// What the receiver said (status and the start of its answer).
    pub why: String,
}

/// A stored diagnosis: which resource a service was short of (the JSON is the agent's record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiagnosisRow {
    pub ts_ms: u64,
    pub service: Option<ServiceId>,
    pub json: String,
}

/// Something the agent changed on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionRecord {
    pub id: u64,
    pub ts_ms: u64,
    pub service: Option<ServiceId>,
    /// e.g. "resctrl.mba", "tc.htb", "cgroup.cpu.max".
    pub kind: String,
    /// What was changed and how to undo it.
    pub detail: String,
    /// When it was undone; None while it is still in force.
    pub undone_ms: Option<u64>,
}

fn service_key(s: Option<ServiceId>) -> u32 {
    s.map_or(NO_SERVICE, |s| s.0)
}

fn service_of(k: u32) -> Option<ServiceId> {
    (k != NO_SERVICE).then_some(ServiceId(k))
}

impl Store {
    /// Records (or, for the same start and initiator, updates the end of) a QoS event.
    pub fn record_qos_event(&self, event: &QosEvent) -> Result<(), StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.err("begin write", e))?;
            {
                let mut t = txn
                    .open_table(QOS_EVENTS)
                    .map_err(|e| self.err("open qos events", e))?;
                t.insert(
                    (event.start_ms, service_key(event.initiator)),
                    (event.end_ms, event.kind.as_str()),
                )
                .map_err(|e| self.err("write qos event", e))?;
            }
            txn.commit().map_err(|e| self.err("commit qos event", e))
        })
    }

    /// QoS events overlapping `from_ms <= t < to_ms`, by start.
    pub fn qos_events(&self, from_ms: u64, to_ms: u64) -> Result<Vec<QosEvent>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
            let t = txn
                .open_table(QOS_EVENTS)
                .map_err(|e| self.err("open qos events", e))?;
            let mut out = Vec::new();
            for row in t
                .range(..(to_ms, 0))
                .map_err(|e| self.err("read qos events", e))?
            {
                let (k, v) = row.map_err(|e| self.err("read qos events", e))?;
                let (start_ms, initiator) = k.value();
                let (end_ms, kind) = v.value();
                if end_ms > from_ms {
                    out.push(QosEvent {
                        start_ms,
                        end_ms,
                        initiator: service_of(initiator),
                        kind: kind.to_owned(),
                    });
                }
            }
            Ok(out)
        })
    }

    /// Queues an alert; returns its id.
    pub fn enqueue_alert(&self, ts_ms: u64, payload: &str) -> Result<u64, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.err("begin write", e))?;
            let id = {
                let mut t = txn
                    .open_table(ALERTS)
                    .map_err(|e| self.err("open alerts", e))?;
                // Ids are never reused, rejected alerts included (they keep theirs).
                let rejected = txn
                    .open_table(REJECTED_ALERTS)
                    .map_err(|e| self.err("open rejected alerts", e))?
                    .last()
                    .map_err(|e| self.err("read rejected alerts", e))?
                    .map_or(0, |(k, _)| k.value());
                let id = t
                    .last()
                    .map_err(|e| self.err("read alerts", e))?
                    .map_or(0, |(k, _)| k.value())
                    .max(rejected)
                    + 1;
                t.insert(id, (ts_ms, payload))
                    .map_err(|e| self.err("write alert", e))?;
                id
            };
            txn.commit().map_err(|e| self.err("commit alert", e))?;
            Ok(id)
        })
    }

    /// The oldest `limit` alerts not yet acknowledged.
    pub fn pending_alerts(&self, limit: usize) -> Result<Vec<Alert>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
            let t = txn
                .open_table(ALERTS)
                .map_err(|e| self.err("open alerts", e))?;
            let mut out = Vec::new();
            for row in t
                .iter()
                .map_err(|e| self.err("read alerts", e))?
                .take(limit)
            {
                let (k, v) = row.map_err(|e| self.err("read alerts", e))?;
                let (ts_ms, payload) = v.value();
                out.push(Alert {
                    id: k.value(),
                    ts_ms,
                    payload: payload.to_owned(),
                });
            }
            Ok(out)
        })
    }

    /// Removes a delivered alert; false if it was not queued.
    pub fn ack_alert(&self, id: u64) -> Result<bool, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.err("begin write", e))?;
            let found = {
                let mut t = txn
                    .open_table(ALERTS)
                    .map_err(|e| self.err("open alerts", e))?;
                t.remove(id)
                    .map_err(|e| self.err("remove alert", e))?
                    .is_some()
            };
            txn.commit().map_err(|e| self.err("commit alert ack", e))?;
            Ok(found)
        })
    }

    /// Moves a queued alert to the rejected ones (a receiver refused it for good), in one
    /// transaction; false if it was not queued.
    pub fn reject_alert(&self, id: u64, why: &str) -> Result<bool, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.err("begin write", e))?;
            let found = {
                let mut t = txn
                    .open_table(ALERTS)
                    .map_err(|e| self.err("open alerts", e))?;
                let row = t
                    .remove(id)
                    .map_err(|e| self.err("remove alert", e))?
                    .map(|v| {
                        let (ts, p) = v.value();
                        (ts, p.to_owned())
                    });
                if let Some((ts, payload)) = &row {
                    let mut r = txn
                        .open_table(REJECTED_ALERTS)
                        .map_err(|e| self.err("open rejected alerts", e))?;
                    r.insert(id, (*ts, payload.as_str(), why))
                        .map_err(|e| self.err("write rejected alert", e))?;
                }
                row.is_some()
            };
            txn.commit()
                .map_err(|e| self.err("commit alert rejection", e))?;
            Ok(found)
        })
    }

    /// The newest `limit` rejected alerts, newest first.
    pub fn rejected_alerts(&self, limit: usize) -> Result<Vec<RejectedAlert>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
            let t = txn
                .open_table(REJECTED_ALERTS)
                .map_err(|e| self.err("open rejected alerts", e))?;
            let mut out = Vec::new();
            for row in t
                .iter()
                .map_err(|e| self.err("read rejected alerts", e))?
                .rev()
                .take(limit)
            {
                let (k, v) = row.map_err(|e| self.err("read rejected alerts", e))?;
                let (ts_ms, payload, why) = v.value();
                out.push(RejectedAlert {
                    alert: Alert {
                        id: k.value(),
                        ts_ms,
                        payload: payload.to_owned(),
                    },
                    why: why.to_owned(),
                });
            }
            Ok(out)
        })
    }

    /// Logs a change the agent made to the host; returns its id.
    pub fn record_action(
        &self,
        ts_ms: u64,
        service: Option<ServiceId>,
        kind: &str,
        detail: &str,
    ) -> Result<u64, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.err("begin write", e))?;
            let id = {
                let mut t = txn
                    .open_table(ACTIONS)
                    .map_err(|e| self.err("open actions", e))?;
                let id = t
                    .last()
                    .map_err(|e| self.err("read actions", e))?
                    .map_or(1, |(k, _)| k.value() + 1);
                t.insert(id, (ts_ms, service_key(service), kind, detail, 0u64))
                    .map_err(|e| self.err("write action", e))?;
                id
            };
            txn.commit().map_err(|e| self.err("commit action", e))?;
            Ok(id)
        })
    }

    /// Marks an action undone; false if there is no such action.
    pub fn mark_action_undone(&self, id: u64, ts_ms: u64) -> Result<bool, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.err("begin write", e))?;
            let found = {
                let mut t = txn
                    .open_table(ACTIONS)
                    .map_err(|e| self.err("open actions", e))?;
                let row = t.get(id).map_err(|e| self.err("read action", e))?.map(|g| {
                    let (ts, svc, kind, detail, _) = g.value();
                    (ts, svc, kind.to_owned(), detail.to_owned())
                });
                match row {
                    Some((ts, svc, kind, detail)) => {
                        t.insert(id, (ts, svc, kind.as_str(), detail.as_str(), ts_ms.max(1)))
                            .map_err(|e| self.err("write action", e))?;
                        true
                    }
                    None => false,
                }
            };
            txn.commit().map_err(|e| self.err("commit action", e))?;
            Ok(found)
        })
    }

    /// Actions, oldest first; with `only_in_force`, those not yet undone (to undo at start-up).
    pub fn actions(&self, only_in_force: bool) -> Result<Vec<ActionRecord>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
            let t = txn
                .open_table(ACTIONS)
                .map_err(|e| self.err("open actions", e))?;
            let mut out = Vec::new();
            for row in t.iter().map_err(|e| self.err("read actions", e))? {
                let (k, v) = row.map_err(|e| self.err("read actions", e))?;
                let (ts_ms, svc, kind, detail, undone) = v.value();
                if only_in_force && undone != 0 {
                    continue;
                }
                out.push(ActionRecord {
                    id: k.value(),
                    ts_ms,
                    service: service_of(svc),
                    kind: kind.to_owned(),
                    detail: detail.to_owned(),
                    undone_ms: (undone != 0).then_some(undone),
                });
            }
            Ok(out)
        })
    }

    /// Stores a diagnosis record (JSON) of `service`, finished at `ts_ms`.
    pub fn record_diagnosis(
        &self,
        ts_ms: u64,
        service: Option<ServiceId>,
        json: &str,
    ) -> Result<(), StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.err("begin write", e))?;
            {
                let mut t = txn
                    .open_table(DIAGNOSES)
                    .map_err(|e| self.err("open diagnoses", e))?;
                t.insert((ts_ms, service_key(service)), json)
                    .map_err(|e| self.err("write diagnosis", e))?;
            }
            txn.commit().map_err(|e| self.err("commit diagnosis", e))
        })
    }

    /// The model's results for ticks in `from_ms <= t < to_ms`, oldest first.
    pub fn predictions(
        &self,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<crate::write::Prediction>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
            let t = match txn.open_table(crate::schema::PREDICTIONS) {
                Ok(t) => t,
                // A store written before the table existed, or by an agent without a model.
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(self.err("open predictions", e)),
            };
            let mut out = Vec::new();
            for row in t
                .range(from_ms..to_ms)
                .map_err(|e| self.err("read predictions", e))?
            {
                let (k, v) = row.map_err(|e| self.err("read predictions", e))?;
                let (model, bytes) = v.value();
                out.push(crate::write::Prediction::decode(k.value(), model, bytes));
            }
            Ok(out)
        })
    }

    /// Diagnoses finished in `from_ms <= t < to_ms`, oldest first.
    pub fn diagnoses(&self, from_ms: u64, to_ms: u64) -> Result<Vec<DiagnosisRow>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
            let t = txn
                .open_table(DIAGNOSES)
                .map_err(|e| self.err("open diagnoses", e))?;
            let mut out = Vec::new();
            for row in t
                .range((from_ms, 0)..(to_ms, 0))
                .map_err(|e| self.err("read diagnoses", e))?
            {
                let (k, v) = row.map_err(|e| self.err("read diagnoses", e))?;
                let (ts_ms, svc) = k.value();
                out.push(DiagnosisRow {
                    ts_ms,
                    service: service_of(svc),
                    json: v.value().to_owned(),
                });
            }
            Ok(out)
        })
    }

    /// Records a call to another host (or refreshes when it was last seen).
    pub fn record_remote_edge(
        &self,
        caller: ServiceId,
        addr: &str,
        ts_ms: u64,
    ) -> Result<(), StoreError> {
        self.record_remote_edges(&[(caller, addr)], ts_ms)
    }

    /// Records calls to other hosts, or refreshes when they were last seen, in one
    /// transaction (one fsync however many there are).
    pub fn record_remote_edges(
        &self,
        edges: &[(ServiceId, &str)],
        ts_ms: u64,
    ) -> Result<(), StoreError> {
        if edges.is_empty() {
            return Ok(());
        }
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.err("begin write", e))?;
            {
                let mut t = txn
                    .open_table(REMOTE_EDGES)
                    .map_err(|e| self.err("open remote edges", e))?;
                for (caller, addr) in edges {
                    let first = t
                        .get((caller.0, *addr))
                        .map_err(|e| self.err("read remote edge", e))?
                        .map_or(ts_ms, |g| g.value().0);
                    t.insert((caller.0, *addr), (first, ts_ms))
                        .map_err(|e| self.err("write remote edge", e))?;
                }
            }
            txn.commit().map_err(|e| self.err("commit remote edges", e))
        })
    }

    /// Every remote edge: (caller, "address:port", first_seen_ms, last_seen_ms).
    pub fn remote_edges(&self) -> Result<Vec<(ServiceId, String, u64, u64)>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
            let t = txn
                .open_table(REMOTE_EDGES)
                .map_err(|e| self.err("open remote edges", e))?;
            let mut out = Vec::new();
            for row in t.iter().map_err(|e| self.err("read remote edges", e))? {
                let (k, v) = row.map_err(|e| self.err("read remote edges", e))?;
                let (caller, addr) = k.value();
                let (first, last) = v.value();
                out.push((ServiceId(caller), addr.to_owned(), first, last));
            }
            Ok(out)
        })
    }
}
