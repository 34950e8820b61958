//! Cluster mode (issue 18): agents on many hosts feed one predictor through NATS JetStream.
//!
//! - [`wire`]: the one message per host per tick on `seer.samples.<host>`, and its decoder.
//! - [`publish`]: the agent's side, a task the tick hands its message to; never blocks a tick,
//!   keeps a bounded backlog while NATS is away, catches up when it is back.
//! - [`assemble`]: the central's cluster-wide tick on a shared grid, remote edges resolved.
//! - [`lease`]: leader election with a JetStream key-value lease.
//! - [`central`]: `seer-agent central`, the stream, the consumer, the model, the predictions.
//! - [`stats`]: the central's own `/metrics`.
//! - [`stream`]: the samples stream, created or checked, and its consumer.
pub mod assemble;
pub mod central;
pub mod lease;
pub mod publish;
pub mod stats;
pub mod stream;
pub mod wire;

use std::{path::Path, time::Duration};

/// Agents publish on `seer.samples.<host>`.
pub const SAMPLES_PREFIX: &str = "seer.samples";
/// The stream that keeps every host's samples for a few minutes.
pub const STREAM: &str = "SEER_SAMPLES";
/// The leader publishes each tick's probabilities here.
pub const PREDICTIONS: &str = "seer.predictions";
/// The leader asks a host's agent to respond on `seer.respond.<host>`.
pub const RESPOND_PREFIX: &str = "seer.respond";
/// Agents answer (diagnosis, decision) on `seer.events.<host>`.
pub const EVENTS_PREFIX: &str = "seer.events";
/// The key-value bucket holding the leader's lease.
pub const LEASE_BUCKET: &str = "seer_central";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "--cluster {0:?}: expected nats://HOST:PORT or tls://HOST:PORT (several: comma-separated)"
    )]
    Url(String),
    #[error("reading the NATS credentials {path}: {source}")]
    Creds {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the NATS credentials {0}: expected a .creds file (JWT and seed), an nkey seed (SU...) or one line USER:PASSWORD"
    )]
    CredsFormat(String),
    #[error("the NATS servers' CA {0}: no such file (--cluster-ca: PEM certificates)")]
    Ca(String),
    #[error("connecting to NATS at {url}: {msg}")]
    Connect { url: String, msg: String },
}

/// This host's name in the cluster when not given: the hostname, every character that cannot
/// be in a subject token as `_`, at most 64.
pub fn default_host() -> String {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let h: String = h
        .trim()
        .chars()
        .take(wire::MAX_HOST)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if h.is_empty() { "localhost".into() } else { h }
}

/// Checks a `--cluster` URL: nats:// or tls://, with a host; or several, comma-separated (the
/// servers of one NATS cluster; the client also learns the others from any of them).
pub fn check_url(url: &str) -> Result<(), ClusterError> {
    for one in url.split(',') {
        let rest = one
            .trim()
            .strip_prefix("nats://")
            .or_else(|| one.trim().strip_prefix("tls://"))
            .ok_or_else(|| ClusterError::Url(url.into()))?;
        let host = rest.rsplit('@').next().unwrap_or("");
        if host.is_empty() || host.contains('/') {
            return Err(ClusterError::Url(url.into()));
        }
    }
    Ok(())
}

/// Connection options from a credentials file: a NATS .creds file (user JWT and nkey seed), an
/// nkey user seed alone, or one line `USER:PASSWORD`. None: anonymous (or the URL's user).
pub fn auth(creds: Option<&Path>) -> Result<async_nats::ConnectOptions, ClusterError> {
    let Some(path) = creds else {
        return Ok(async_nats::ConnectOptions::new());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ClusterError::Creds {
        path: path.display().to_string(),
        source,
    })?;
    let bad = || ClusterError::CredsFormat(path.display().to_string());
    if text.contains("BEGIN NATS USER JWT") {
        return async_nats::ConnectOptions::with_credentials(&text).map_err(|_| bad());
    }
    let line = text.lines().next().unwrap_or("").trim();
    if line.starts_with("SU") && !line.contains(':') {
        return Ok(async_nats::ConnectOptions::with_nkey(line.to_string()));
    }
    match line.split_once(':') {
        Some((u, p)) if !u.is_empty() => Ok(async_nats::ConnectOptions::with_user_and_password(
            u.to_string(),
            p.to_string(),
        )),
        _ => Err(bad()),
    }
}

/// Options every seer connection uses: the credentials, the CA that signs the servers'
/// certificates (TLS required then), a name, fast reconnects (at most 2 s apart), forever.
pub fn options(
    creds: Option<&Path>,
    ca: Option<&Path>,
    name: &str,
) -> Result<async_nats::ConnectOptions, ClusterError> {
    let mut o = auth(creds)?;
    if let Some(ca) = ca {
        if !ca.is_file() {
            return Err(ClusterError::Ca(ca.display().to_string()));
        }
        o = o.add_root_certificates(ca.to_path_buf()).require_tls(true);
    }
    Ok(o.name(name)
        .connection_timeout(Duration::from_secs(2))
        .request_timeout(Some(Duration::from_secs(2)))
        .reconnect_delay_callback(|n| Duration::from_millis((100 * n as u64).min(2000)))
        .max_reconnects(None))
}

/// What `doctor --cluster` says: whether NATS answers with these credentials, whether it runs
/// JetStream, and whether the samples stream exists (a central made it) and how much it holds.
pub fn probe(url: &str, creds: Option<&Path>, ca: Option<&Path>) -> serde_json::Value {
    use serde_json::json;
    let fail = |e: String| json!({"url": url, "ok": false, "error": e});
    if let Err(e) = check_url(url) {
        return fail(e.to_string());
    }
    let opts = match options(creds, ca, "seer-agent doctor") {
        Ok(o) => o,
        Err(e) => return fail(e.to_string()),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    rt.block_on(async {
        let client = match tokio::time::timeout(Duration::from_secs(3), opts.connect(url)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return fail(format!("cannot connect: {e}")),
            Err(_) => return fail("no answer within 3 s".into()),
        };
        let info = client.server_info();
        let js = async_nats::jetstream::new(client);
        let stream = match js.get_stream(STREAM).await {
            Ok(s) => {
                let i = s.cached_info();
                json!({"present": true, "messages": i.state.messages,
                       "subjects": i.config.subjects, "max_age_s": i.config.max_age.as_secs(),
                       "replicas": i.config.num_replicas})
            }
            Err(e) => json!({"present": false, "error": e.to_string()}),
        };
        json!({"url": url, "ok": info.jetstream, "server": info.version, "jetstream": info.jetstream,
               "stream": stream,
               "error": (!info.jetstream).then_some("the server runs without JetStream (nats-server -js)")})
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(check_url("nats://127.0.0.1:4222").is_ok());
        assert!(check_url("tls://u:p@nats.example:4222").is_ok());
        assert!(check_url("nats://10.0.0.1:4222,nats://10.0.0.2:4222").is_ok());
        assert!(check_url("nats://10.0.0.1:4222,10.0.0.2:4222").is_err());
        for bad in ["127.0.0.1:4222", "http://x", "nats://", "nats://a/b"] {
            let e = check_url(bad).unwrap_err().to_string();
            assert!(e.contains("nats://HOST:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn credentials_files_are_read_by_their_form() {
        let d = crate::util::TempDir::new("cluster-creds");
        let f = d.path().join("c");
        std::fs::write(&f, "seer:s3cret\n").unwrap();
        assert!(auth(Some(&f)).is_ok());
        std::fs::write(&f, "no password here\n").unwrap();
        let e = auth(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("USER:PASSWORD"), "{e}");
        let e = auth(Some(&d.path().join("missing")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn doctor_names_an_unreachable_server() {
        // Port 1 (tcpmux): nothing listens there (no port is bound here, so no other test's
        // free port can be taken).
        let v = probe("nats://127.0.0.1:1", None, None);
        assert_eq!(v["ok"], false, "{v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
}
