//! `seer-agent export` and `seer-agent query`: the trace store for people and scripts.
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use seer_store::{Store, StoreConfig, query};

use crate::{ExportArgs, QueryArgs, QueryWhat};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// "now", "-1h" / "-30m" / "-90s" / "-2d" (relative to now), or ms since the Unix epoch.
pub fn parse_time(s: &str, now: u64) -> anyhow::Result<u64> {
    if s == "now" {
        return Ok(now);
    }
    if let Some(rel) = s.strip_prefix('-') {
        let (num, unit) = rel.split_at(rel.len().saturating_sub(1));
        let n: u64 = num
            .parse()
            .with_context(|| format!("bad relative time {s:?} (e.g. -30m)"))?;
        let ms = match unit {
            "s" => n * 1000,
            "m" => n * 60_000,
            "h" => n * 3_600_000,
            "d" => n * 86_400_000,
            _ => bail!("bad unit in {s:?}: use s, m, h or d (e.g. -30m)"),
        };
        return Ok(now.saturating_sub(ms));
    }
    s.parse()
        .with_context(|| format!("bad time {s:?}: use ms since the Unix epoch, \"now\" or -30m"))
}

fn open(path: &std::path::Path) -> anyhow::Result<Store> {
    if !path.exists() {
        bail!(
            "no trace store at {} (the agent writes one while `seer-agent run` runs; see --db)",
            path.display()
        );
    }
    Ok(Store::open(path, StoreConfig::default())?)
}

pub fn export(a: &ExportArgs) -> anyhow::Result<()> {
    let now = now_ms();
    let (from, to) = (parse_time(&a.from, now)?, parse_time(&a.to, now)?);
    if from >= to {
        bail!("--from must be before --to");
    }
    let store = open(&a.db)?;
    let s = seer_store::export(&store, from, to, &a.out)?;
    println!(
        "exported {} rows ({} ticks x {} services{}) to {} and {}",
        s.rows,
        s.ticks,
        s.services,
        if s.labelled { ", with labels" } else { "" },
        s.data_file.display(),
        s.manifest_file.display()
    );
    Ok(())
}

pub fn query(a: &QueryArgs) -> anyhow::Result<()> {
    let store = open(&a.db)?;
    let out = match &a.what {
        QueryWhat::Services => {
            let rows = query::list_services(&store)?;
            if a.json {
                serde_json::to_string_pretty(&rows)?
            } else {
                query::services_table(&rows)
            }
        }
        QueryWhat::Service { name, n } => {
            let Some(row) = query::find_service(&store, name)? else {
                bail!(
                    "no service {name:?} in {} (see `seer-agent query services`)",
                    a.db.display()
                );
            };
            let r = query::service_recent(&store, seer_common::sample::ServiceId(row.id), *n)?;
            if a.json {
                serde_json::to_string_pretty(&r)?
            } else {
                query::recent_table(&r)
            }
        }
        QueryWhat::Top { channel, n } => {
            let Some(c) = query::channel_by_name(channel) else {
                bail!(
                    "unknown channel {channel:?}; channels: {}",
                    seer_common::sample::CHANNEL_NAMES.join(", ")
                );
            };
            let r = query::top_services(&store, c, *n)?;
            if a.json {
                serde_json::to_string_pretty(&r)?
            } else {
                query::top_table(&r)
            }
        }
        QueryWhat::Violations { from } => {
            let names = names(&store)?;
            let from = parse_time(from, now_ms())?;
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
            render(a.json, &rows, &["start_ms", "seconds", "initiator", "kind"])?
        }
        QueryWhat::Diagnoses { from } => {
            let names = names(&store)?;
            let from = parse_time(from, now_ms())?;
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
                a.json,
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
        QueryWhat::Actions => {
            let names = names(&store)?;
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
                a.json,
                &rows,
                &["id", "ts_ms", "service", "kind", "detail", "undone_ms"],
            )?
        }
        QueryWhat::Alerts => {
            let rows: Vec<serde_json::Value> = store
                .pending_alerts(usize::MAX)?
                .into_iter()
                .map(|x| {
                    serde_json::json!({
                        "id": x.id,
                        "ts_ms": x.ts_ms,
                        "alert": serde_json::from_str::<serde_json::Value>(&x.payload)
                            .unwrap_or(serde_json::Value::String(x.payload)),
                    })
                })
                .collect();
            render(a.json, &rows, &["id", "ts_ms", "alert"])?
        }
    };
    println!("{out}");
    Ok(())
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

/// JSON array, or one line per row with the given columns (tab-separated, header first).
fn render(json: bool, rows: &[serde_json::Value], cols: &[&str]) -> anyhow::Result<String> {
    if json {
        return Ok(serde_json::to_string_pretty(rows)?);
    }
    if rows.is_empty() {
        return Ok("(none)".into());
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
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times() {
        let now = 10_000_000;
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(parse_time("-30m", now).unwrap(), now - 1_800_000);
        assert_eq!(parse_time("-2s", now).unwrap(), now - 2000);
        assert_eq!(parse_time("1234", now).unwrap(), 1234);
        assert!(
            parse_time("-3w", now)
                .unwrap_err()
                .to_string()
                .contains("use s, m, h or d")
        );
        assert!(parse_time("yesterday", now).is_err());
    }
}
