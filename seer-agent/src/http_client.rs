//! The HTTP client (ureq; rustls for `https://`): alerts to Alertmanager or a webhook, and
//! `seer-agent query` asking a running agent. Each request has a total deadline (a receiver
//! that drips one byte a second cannot hold the alert sender or a shutdown), follows no
//! redirect, ignores proxy variables (the receivers are named in the config), and reads at most
//! `MAX_ANSWER` bytes of an answer.
use std::time::Duration;

use crate::http::HttpUrl;

/// Largest answer read (a query of a big store stays far below).
const MAX_ANSWER: u64 = 64 << 20;

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .user_agent("seer-agent")
        .build()
        .into()
}

/// Sends `body` as a JSON POST; `Ok(status)` for any HTTP answer, `Err` when there was none
/// within `timeout`.
pub fn post_json(url: &HttpUrl, body: &str, timeout: Duration) -> Result<u16, String> {
    agent(timeout)
        .post(url.to_string())
        .header("Content-Type", "application/json")
        .send(body)
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// GET; `Ok((status, body))` for any HTTP answer within `timeout`.
pub fn get(url: &HttpUrl, timeout: Duration) -> Result<(u16, String), String> {
    let mut r = agent(timeout)
        .get(url.to_string())
        .call()
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let body = r
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((status, body))
}
