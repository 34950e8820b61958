//! `seer-agent central`: the cluster's predictor (see `cluster::central`).
use std::{path::PathBuf, time::Duration};

use crate::cluster::central::CentralOptions;

#[derive(clap::Args, Clone, Debug)]
#[command(after_help = "Example, two hosts and a leader with a standby:\n  \
    host-a# seer-agent run --cluster nats://10.0.0.5:4222 --cluster-creds /etc/seer/nats.creds\n  \
    host-b# seer-agent run --cluster nats://10.0.0.5:4222 --cluster-creds /etc/seer/nats.creds\n  \
    ctl-1$  seer-agent central --cluster nats://10.0.0.5:4222 --cluster-creds /etc/seer/nats.creds --name ctl-1\n  \
    ctl-2$  seer-agent central --cluster nats://10.0.0.5:4222 --cluster-creds /etc/seer/nats.creds --name ctl-2\n\n\
    NATS must run with JetStream (nats-server -js). Every central needs the same --tick-ms,\n\
    --retention-s, --lease-ms and --replicas: the first creates the stream SEER_SAMPLES and the\n\
    lease bucket seer_central, the others check them and stop with what differs.\n\
    The leader publishes each tick's probabilities on seer.predictions (JSON).")]
pub struct CentralArgs {
    /// The NATS server with JetStream (nats://HOST:PORT, or tls://HOST:PORT).
    #[arg(long, value_name = "URL")]
    pub cluster: String,
    /// NATS credentials: a .creds file, an nkey user seed (SU...), or a file whose first line
    /// is USER:PASSWORD.
    #[arg(long, value_name = "FILE")]
    pub cluster_creds: Option<PathBuf>,
    /// The CA that signs the NATS servers' certificates (PEM), for tls:// servers whose
    /// certificate no public CA signs (TLS is then required).
    #[arg(long, value_name = "FILE")]
    pub cluster_ca: Option<PathBuf>,
    /// This central's name in the lease and in its predictions (default: hostname-pid).
    #[arg(long)]
    pub name: Option<String>,
    /// The model (default: the shipped one, as for `run`).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// The ONNX Runtime library (default: as for `run`).
    #[arg(long, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    /// The cluster's tick, the agents' --tick-ms (their messages with another are refused).
    #[arg(long, default_value_t = 100)]
    pub tick_ms: u64,
    /// The leader's lease: a standby takes over at most this long after the leader stops.
    #[arg(long, default_value_t = 1500)]
    pub lease_ms: u64,
    /// How long the stream keeps samples (a restarted central rebuilds its window from them).
    #[arg(long, default_value_t = 300)]
    pub retention_s: u64,
    /// Stream and lease replicas (default: 3 when the NATS cluster has 3 servers or more, else 1).
    #[arg(long)]
    pub replicas: Option<usize>,
    /// How long after a tick ends it is assembled: a host later than this repeats its
    /// previous sample for that tick (flagged stale).
    #[arg(long, default_value_t = 200)]
    pub lag_ms: u64,
    /// A host silent this long is left out of the cluster until it publishes again.
    #[arg(long, default_value_t = 5000)]
    pub forget_ms: u64,
    /// One JSON object per assembled tick on stdout (services with their hosts, edges,
    /// probabilities, role).
    #[arg(long)]
    pub json: bool,
    /// Stop after N assembled ticks (default: until SIGINT/SIGTERM).
    #[arg(long)]
    pub ticks: Option<u64>,
    /// Serve the central's Prometheus metrics at http://ADDR/metrics (role, hosts heard and
    /// late, assembly and inference time, refused messages, each service's probability;
    /// "off" to disable).
    #[arg(long, default_value = "127.0.0.1:9465")]
    pub metrics_addr: String,
    /// The leader alerts this Alertmanager (http://host:port; API v2) when a host answers its
    /// request with a diagnosis and a decision. Kept in --db until delivered.
    #[arg(long, value_name = "URL")]
    pub alertmanager: Option<String>,
    /// The same alerts as a JSON POST to this URL.
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
    /// The store holding the leader's alerts until delivered (only with --alertmanager or
    /// --webhook).
    #[arg(long, default_value = "/var/lib/seer/central.redb")]
    pub db: PathBuf,
}

pub fn options(a: &CentralArgs) -> anyhow::Result<CentralOptions> {
    use crate::config::{TICK_MAX_MS, TICK_MIN_MS};
    if !(TICK_MIN_MS..=TICK_MAX_MS).contains(&a.tick_ms) {
        anyhow::bail!("--tick-ms {}: {TICK_MIN_MS} ..= {TICK_MAX_MS}", a.tick_ms);
    }
    if a.lease_ms < 3 * a.tick_ms || a.lease_ms > 60_000 {
        anyhow::bail!(
            "--lease-ms {}: between 3 ticks ({} ms) and 60000",
            a.lease_ms,
            3 * a.tick_ms
        );
    }
    if !(10..=86_400).contains(&a.retention_s) {
        anyhow::bail!("--retention-s {}: between 10 and 86400", a.retention_s);
    }
    if a.replicas.is_some_and(|r| !(1..=5).contains(&r)) {
        anyhow::bail!("--replicas: 1 to 5");
    }
    for u in [&a.alertmanager, &a.webhook].into_iter().flatten() {
        crate::http::HttpUrl::parse(u).map_err(|e| anyhow::anyhow!("{u}: {e}"))?;
    }
    let alerts = crate::config::AlertsConfig {
        alertmanager: a.alertmanager.clone(),
        webhook: a.webhook.clone(),
        ..Default::default()
    };
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", crate::cluster::default_host(), std::process::id()));
    Ok(CentralOptions {
        url: a.cluster.clone(),
        creds: a.cluster_creds.clone(),
        ca: a.cluster_ca.clone(),
        name,
        model: a.model.clone(),
        ort_lib: a.ort_lib.clone(),
        tick_ms: a.tick_ms,
        lease: Duration::from_millis(a.lease_ms),
        retention: Duration::from_secs(a.retention_s),
        replicas: a.replicas,
        lag_ms: a.lag_ms,
        forget_ms: a.forget_ms.max(a.tick_ms),
        json: a.json,
        ticks: a.ticks,
        metrics_addr: a.metrics_addr.clone(),
        alerts,
        db: a.db.clone(),
    })
}

pub fn run(a: &CentralArgs) -> anyhow::Result<()> {
    let o = options(a)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the runtime: {e}"))?;
    rt.block_on(crate::cluster::central::run(o))
}
