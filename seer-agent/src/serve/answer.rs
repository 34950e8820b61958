//! The query API's answers from the trace store, as JSON and as a text table: what
//! `/api/query/...` returns and what `seer-agent query` prints.
use anyhow::bail;
use seer_store::{Store, query};

use super::query::{QueryWhat, parse_time};

/// One query's answer, as JSON and as the text table (so that a running agent can answer for
/// its locked store and the CLI prints either). Relative times in `what` are already absolute.
pub fn answer(store: &Store, what: &QueryWhat) -> anyhow::Result<(serde_json::Value, String)> {
    let out = match what {
        QueryWhat::Services => {
            let rows = query::list_services(store)?;
            (serde_json::to_value(&rows)?, query::services_table(&rows))
        }
        QueryWhat::Service { name, n } => {
            let Some(row) = query::find_service(store, name)? else {
                bail!(
                    "no service {name:?} in {} (see `seer-agent query services`)",
                    store.path().display()
                );
            };
            let r = query::service_recent(store, seer_common::sample::ServiceId(row.id), *n)?;
            (serde_json::to_value(&r)?, query::recent_table(&r))
        }
        QueryWhat::Top { channel, n } => {
            let Some(c) = query::channel_by_name(channel) else {
                bail!(
                    "unknown channel {channel:?}; channels: {}",
                    seer_common::sample::CHANNEL_NAMES.join(", ")
                );
            };
            let r = query::top_services(store, c, *n)?;
            (serde_json::to_value(&r)?, query::top_table(&r))
        }
        QueryWhat::Violations { from } => {
            let names = names(store)?;
            let from = parse_time(from, crate::util::now_ms())?;
            let rows: Vec<serde_json::Value> = store
                .qos_events(from, u64::MAX)?
                .into_iter()
                .map(|e| {
                    serde_json::json!({
                        "start_ms": e.start_ms,
                        "end_ms": e.end_ms,
                        "seconds": e.end_ms.saturating_sub(e.start_ms) as f64 / 1000.0,
                        "initiator": e.initiator.map(|i| name_of(&names, i.0)),
                        "kind": e.kind,
                    })
                })
                .collect();
            render(&rows, &["start_ms", "seconds", "initiator", "kind"])?
        }
        QueryWhat::Diagnoses { from } => {
            let names = names(store)?;
            let from = parse_time(from, crate::util::now_ms())?;
            let rows: Vec<serde_json::Value> = store
                .diagnoses(from, u64::MAX)?
                .into_iter()
                .map(|d| {
                    let rec: serde_json::Value =
                        serde_json::from_str(&d.json).unwrap_or(serde_json::Value::Null);
                    serde_json::json!({
                        "ts_ms": d.ts_ms,
                        "service": d.service.map(|i| name_of(&names, i.0)),
                        "resource": rec["resource"],
                        "confidence": rec["confidence"],
                        "mode": rec["mode"],
                        "reason": rec["reason"],
                        "record": rec,
                    })
                })
                .collect();
            render(
                &rows,
                &[
                    "ts_ms",
                    "service",
                    "resource",
                    "confidence",
                    "mode",
                    "reason",
                ],
            )?
        }
        QueryWhat::Predictions { from, n } => {
            let names = names(store)?;
            let from = parse_time(from, crate::util::now_ms())?;
            let all = store.predictions(from, u64::MAX)?;
            let skip = all
                .len()
                .saturating_sub((*n).min(crate::serve::query::MAX_ROWS));
            let rows: Vec<serde_json::Value> = all[skip..]
                .iter()
                .map(|p| {
                    let top = p.p.iter().max_by(|a, b| a.1.total_cmp(&b.1));
                    let each: serde_json::Map<String, serde_json::Value> =
                        p.p.iter()
                            .map(|(id, v)| (name_of(&names, id.0), serde_json::json!(v)))
                            .collect();
                    serde_json::json!({
                        "ts_ms": p.ts_ms,
                        "model": p.model,
                        "top": top.map(|(id, _)| name_of(&names, id.0)),
                        "p_top": top.map(|(_, v)| format!("{v:.3}")),
                        "p": each,
                    })
                })
                .collect();
            render(&rows, &["ts_ms", "model", "top", "p_top"])?
        }
        QueryWhat::Actions => {
            let names = names(store)?;
            let rows: Vec<serde_json::Value> = store
                .actions(false)?
                .into_iter()
                .map(|x| {
                    serde_json::json!({
                        "id": x.id,
                        "ts_ms": x.ts_ms,
                        "service": x.service.map(|i| name_of(&names, i.0)),
                        "kind": x.kind,
                        "detail": x.detail,
                        "undone_ms": x.undone_ms,
                    })
                })
                .collect();
            render(
                &rows,
                &["id", "ts_ms", "service", "kind", "detail", "undone_ms"],
            )?
        }
        QueryWhat::Alerts => {
            // Waiting in the outbox, then the last 100 a receiver refused for good (and why).
            let row = |x: seer_store::Alert, state: &str, why: &str| {
                serde_json::json!({
                    "id": x.id,
                    "ts_ms": x.ts_ms,
                    "state": state,
                    "why": why,
                    "alert": serde_json::from_str::<serde_json::Value>(&x.payload)
                        .unwrap_or(serde_json::Value::String(x.payload)),
                })
            };
            let mut rows: Vec<serde_json::Value> = store
                .pending_alerts(usize::MAX)?
                .into_iter()
                .map(|x| row(x, "pending", ""))
                .collect();
            rows.extend(
                store
                    .rejected_alerts(100)?
                    .into_iter()
                    .map(|r| row(r.alert, "rejected", &r.why)),
            );
            render(&rows, &["id", "ts_ms", "state", "why", "alert"])?
        }
    };
    Ok(out)
}

fn names(store: &Store) -> anyhow::Result<Vec<(u32, String)>> {
    Ok(store
        .services()?
        .into_iter()
        .map(|s| (s.id.0, s.name))
        .collect())
}

fn name_of(names: &[(u32, String)], id: u32) -> String {
    names
        .iter()
        .find(|(i, _)| *i == id)
        .map_or_else(|| format!("#{id}"), |(_, n)| n.clone())
}

/// The rows as JSON, and as text: one line per row with the given columns (tab-separated,
/// header first).
fn render(
    rows: &[serde_json::Value],
    cols: &[&str],
) -> anyhow::Result<(serde_json::Value, String)> {
    let json = serde_json::Value::Array(rows.to_vec());
    if rows.is_empty() {
        return Ok((json, "(none)".into()));
    }
    let mut out = cols.join("\t");
    for r in rows {
        out.push('\n');
        let cells: Vec<String> = cols
            .iter()
            .map(|c| match &r[*c] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "-".into(),
                v => v.to_string(),
            })
            .collect();
        out.push_str(&cells.join("\t"));
    }
    Ok((json, out))
}
