//! `seer-agent export` and `seer-agent query`: the trace store for people and scripts.

use anyhow::{Context as _, bail};
use seer_store::{Store, StoreConfig};

use crate::{
    cli::{ExportArgs, QueryArgs},
    serve::{
        answer::answer,
        query::{QueryWhat, api_path, parse_time},
    },
};

pub fn open(path: &std::path::Path) -> anyhow::Result<Store> {
    if !path.exists() {
        bail!(
            "no trace store at {} (the agent writes one while `seer-agent run` runs; see --db)",
            path.display()
        );
    }
    Ok(Store::open(path, StoreConfig::default())?)
}

pub fn export(a: &ExportArgs) -> anyhow::Result<()> {
    let now = crate::util::now_ms();
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

/// Prints the answer from the store, or, when a running agent holds the store (redb allows
/// one process), from that agent over its HTTP endpoint.
pub fn query(a: &QueryArgs) -> anyhow::Result<()> {
    let what = absolute(&QueryWhat::from(&a.what), crate::util::now_ms())?;
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
        QueryWhat::Predictions { from, n } => QueryWhat::Predictions {
            from: parse_time(from, now)?.to_string(),
            n: *n,
        },
        w => w.clone(),
    })
}

/// Asks the agent at `addr` (host:port) for `what`; its answer is `{"json":..,"text":..}` or
/// `{"error":..}`.
fn ask_agent(addr: &str, what: &QueryWhat) -> anyhow::Result<(serde_json::Value, String)> {
    let url = crate::http::HttpUrl::parse(&format!("http://{addr}{}", api_path(what)))
        .map_err(|e| anyhow::anyhow!(e))?;
    let (status, body) = crate::http_client::get(&url, std::time::Duration::from_secs(10))
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
