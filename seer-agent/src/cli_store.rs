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
            render(&rows, &["start_ms", "seconds", "initiator", "kind"])?
        }
        QueryWhat::Diagnoses { from } => {
            let names = names(store)?;
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

/// Prints the answer from the store, or, when a running agent holds the store (redb allows
/// one process), from that agent over its HTTP endpoint.
pub fn query(a: &QueryArgs) -> anyhow::Result<()> {
    let what = absolute(&a.what, now_ms())?;
    let (json, text) = match open(&a.db) {
        Ok(store) => answer(&store, &what)?,
        Err(e)
            if e.downcast_ref::<seer_store::StoreError>()
                .is_some_and(|e| matches!(e, seer_store::StoreError::Locked { .. })) =>
        {
            ask_agent(&a.agent, &what).with_context(|| {
                format!(
                    "{e}; asking the running agent at http://{} instead (its --metrics-addr; --agent)",
                    a.agent
                )
            })?
        }
        Err(e) => return Err(e),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!("{text}");
    }
    Ok(())
}

/// `what` with relative times ("-1h") turned into ms since the epoch.
fn absolute(what: &QueryWhat, now: u64) -> anyhow::Result<QueryWhat> {
    Ok(match what {
        QueryWhat::Violations { from } => QueryWhat::Violations {
            from: parse_time(from, now)?.to_string(),
        },
        QueryWhat::Diagnoses { from } => QueryWhat::Diagnoses {
            from: parse_time(from, now)?.to_string(),
        },
        w => w.clone(),
    })
}

/// The agent's HTTP path for a query (`/api/query/...`); [`parse_api`] reads it back.
pub fn api_path(what: &QueryWhat) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    match what {
        QueryWhat::Services => "/api/query/services".into(),
        QueryWhat::Service { name, n } => format!("/api/query/service?name={}&n={n}", enc(name)),
        QueryWhat::Top { channel, n } => {
            format!("/api/query/top?channel={}&n={n}", enc(channel))
        }
        QueryWhat::Violations { from } => format!("/api/query/violations?from={}", enc(from)),
        QueryWhat::Diagnoses { from } => format!("/api/query/diagnoses?from={}", enc(from)),
        QueryWhat::Actions => "/api/query/actions".into(),
        QueryWhat::Alerts => "/api/query/alerts".into(),
    }
}

/// The query an `/api/query/...` path asks for.
pub fn parse_api(path: &str) -> Result<QueryWhat, String> {
    let dec = |s: &str| -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%'
                && i + 2 < b.len()
                && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    let rest = path
        .strip_prefix("/api/query/")
        .ok_or_else(|| format!("{path}: not under /api/query/"))?;
    let (kind, q) = rest.split_once('?').unwrap_or((rest, ""));
    let param = |k: &str| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(key, _)| *key == k)
            .map(|(_, v)| dec(v))
    };
    let n = |default: usize| -> Result<usize, String> {
        param("n").map_or(Ok(default), |v| v.parse().map_err(|_| format!("bad n={v}")))
    };
    Ok(match kind {
        "services" => QueryWhat::Services,
        "service" => QueryWhat::Service {
            name: param("name").ok_or("service needs name=")?,
            n: n(20)?,
        },
        "top" => QueryWhat::Top {
            channel: param("channel").unwrap_or_else(|| "outstanding".into()),
            n: n(10)?,
        },
        "violations" => QueryWhat::Violations {
            from: param("from").unwrap_or_else(|| "0".into()),
        },
        "diagnoses" => QueryWhat::Diagnoses {
            from: param("from").unwrap_or_else(|| "0".into()),
        },
        "actions" => QueryWhat::Actions,
        "alerts" => QueryWhat::Alerts,
        other => return Err(format!("unknown query {other:?}")),
    })
}

/// Asks the agent at `addr` (host:port) for `what`; its answer is `{"json":..,"text":..}` or
/// `{"error":..}`.
fn ask_agent(addr: &str, what: &QueryWhat) -> anyhow::Result<(serde_json::Value, String)> {
    let url = crate::http::HttpUrl::parse(&format!("http://{addr}{}", api_path(what)))
        .map_err(|e| anyhow::anyhow!(e))?;
    let (status, body) = crate::http::get(&url, std::time::Duration::from_secs(10))
        .map_err(|e| anyhow::anyhow!("no agent answered at {addr}: {e}"))?;
    let v: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("the agent at {addr} answered HTTP {status}, not JSON"))?;
    if let Some(e) = v["error"].as_str() {
        bail!("the agent at {addr}: {e}");
    }
    Ok((
        v["json"].clone(),
        v["text"].as_str().unwrap_or_default().to_string(),
    ))
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

#[cfg(test)]
mod tests {
    use super::{api_path, parse_api, parse_time};
    use crate::QueryWhat;

    #[test]
    fn api_paths_round_trip() {
        for w in [
            QueryWhat::Services,
            QueryWhat::Service {
                name: "post store/#1 & co".into(),
                n: 7,
            },
            QueryWhat::Top {
                channel: "rx_queue_bytes".into(),
                n: 3,
            },
            QueryWhat::Violations {
                from: "1795716765777".into(),
            },
            QueryWhat::Diagnoses { from: "0".into() },
            QueryWhat::Actions,
            QueryWhat::Alerts,
        ] {
            let p = api_path(&w);
            assert_eq!(
                format!("{:?}", parse_api(&p).unwrap()),
                format!("{w:?}"),
                "{p}"
            );
        }
        assert!(parse_api("/api/query/nope").unwrap_err().contains("nope"));
        assert!(parse_api("/metrics").is_err());
    }

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
