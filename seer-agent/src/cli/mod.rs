//! The command line: its clap types, and the commands, one file each (`seer-agent run` is the
//! tick loop itself, see `tick_loop`).
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::serve::query::QueryWhat;
use crate::store;

pub mod act;
pub mod bench_cluster;
pub mod bench_infer;
pub mod central;
pub mod diagnose;
pub mod doctor;
pub mod predict;
pub mod query;
pub mod run;
pub mod score;
pub mod selftest;
pub mod ui;

#[derive(Parser)]
#[command(
    name = "seer-agent",
    version,
    about = "Predicts which service is about to break your tail latency, from the kernel, with no app changes",
    long_about = "seer-agent attaches eBPF programs (TCP socket iterators read once per tick, \
                  socket tracepoints; tc ingress and epoll tracepoints on request), discovers the services on this host (processes that own \
                  listening TCP sockets) and their call graph, and samples each service's queues \
                  every tick: NIC arrivals, socket receive queue, accept backlog, epoll activity, \
                  outstanding requests and request latency.\n\n\
                  Examples:\n  \
                  seer-agent run                      live table of every service\n  \
                  seer-agent run --ticks 50 --json    50 ticks as JSON lines, then exit\n  \
                  seer-agent run --tc-ingress --iface lo --tick-ms 250 --config /etc/seer/seer.toml\n  \
                  seer-agent run --qos nginx:50 --mode recommend --alertmanager http://127.0.0.1:9093\n  \
                  seer-agent run --cluster nats://10.0.0.5:4222 --cluster-creds /etc/seer/nats.creds\n  \
                  seer-agent central --cluster nats://10.0.0.5:4222 --cluster-creds /etc/seer/nats.creds\n  \
                  seer-agent query violations         QoS violations and their initiators\n  \
                  seer-agent query top outstanding    deepest queues in the trace store\n  \
                  seer-agent export --from -1h --out /tmp/ds   a training dataset"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Attach, discover services and sample them every tick (live table, or JSON lines).
    Run(RunArgs),
    /// What this kernel offers: BTF, capabilities, each hook and each channel, and what is
    /// missing and why (attaches everything once, then detaches).
    Doctor {
        /// JSON for scripts instead of the table.
        #[arg(long)]
        json: bool,
        /// Interfaces to try the tc ingress counter on (default: every interface that is up).
        #[arg(long = "iface")]
        interfaces: Vec<String>,
        /// The model to check (default: the shipped one `run` would use).
        #[arg(long, value_name = "PATH")]
        model: Option<PathBuf>,
        /// The ONNX Runtime library to check (default: what `run` would find).
        #[arg(long, value_name = "PATH")]
        ort_lib: Option<PathBuf>,
        /// Also check cluster mode's NATS (as `run --cluster URL` would reach it): whether it
        /// answers with these credentials, runs JetStream, and holds the samples stream.
        #[arg(long, value_name = "URL")]
        cluster: Option<String>,
        /// NATS credentials for --cluster (as for `run`).
        #[arg(long, value_name = "FILE", requires = "cluster")]
        cluster_creds: Option<PathBuf>,
        /// The NATS servers' CA for --cluster (as for `run`).
        #[arg(long, value_name = "FILE", requires = "cluster")]
        cluster_ca: Option<PathBuf>,
    },
    /// Check every channel against the kernel's own view, on sockets the test makes itself
    /// (used by `cargo xtask kernels` inside other kernels under QEMU).
    Selftest {
        #[arg(long)]
        json: bool,
    },
    /// Write a training dataset from the trace store (Arrow IPC + manifest.json).
    Export(ExportArgs),
    /// Read the trace store: services, recent channels, top queues, QoS violations, diagnoses, actions, pending alerts.
    Query(QueryArgs),
    /// Actions by hand (journaled, undoable): tc HTB, cgroup CPU, resctrl CAT/MBA, undo, and
    /// the policy's response to an alert (enforce, recommend or dry-run).
    Act(act::ActArgs),
    /// Which shared resource a service is short of (hardware counters, or without them
    /// ~10 ms microbenchmark bursts next to it, 100 ms in all by default).
    Diagnose(diagnose::DiagnoseArgs),
    /// The LLC reading of `diagnose --llc-reading` without a service (a CPU walked with its
    /// LLC siblings running, then held), and how long this host's caches keep a working set:
    /// for calibrating that reading on a host before turning it on.
    LlcReadings(diagnose::LlcReadingsArgs),
    /// What the model costs: inference p50/p99 for 36 .. 1000 services (one thread) and a
    /// whole tick for 100 services (`cargo xtask bench infer` runs it on a release build).
    BenchInfer(bench_infer::BenchInferArgs),
    /// The live view's page over a recorded trace store, for review after the fact: the call
    /// graph, channels and predicted probabilities of the last minutes, the episodes kept.
    Ui(ui::UiArgs),
    /// What cluster mode costs: simulated hosts (10, 100, 500 x 10 services) publishing to a
    /// NATS server of its own, one central with the shipped model; tick-to-alarm, assembly,
    /// inference, CPU (`cargo xtask bench cluster` runs it on a release build).
    BenchCluster(bench_cluster::BenchClusterArgs),
    /// Replay the model over a recorded trace store: each tick's probabilities, with the same
    /// window and inference code as `run` (and how far they are from the agent's own stored
    /// predictions of the same model).
    Predict(predict::PredictArgs),
    /// Cluster mode's predictor: every host's agent (`run --cluster`) publishes its ticks to
    /// NATS JetStream; `central` assembles them into one cluster-wide tick and runs the model
    /// over every service of the cluster. Start several: one leads (a JetStream key-value
    /// lease), the others stand by with a warm window and take over when it stops.
    Central(central::CentralArgs),
}

#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// Stop after N ticks (default: run until SIGINT/SIGTERM).
    #[arg(long)]
    pub ticks: Option<u64>,
    /// Print one JSON object per tick on stdout instead of the live table.
    #[arg(long)]
    pub json: bool,
    /// Tick in milliseconds (10 ..= 10000; default 100, or the config's tick_ms).
    #[arg(long)]
    pub tick_ms: Option<u64>,
    /// Count NIC arrivals per packet with a tc ingress program (TCX) instead of the per-tick
    /// socket counters: it also sees SYNs and the last packets of connections that close within
    /// a tick, but runs on every packet in the receiving service's context (~70 ns each).
    #[arg(long)]
    pub tc_ingress: bool,
    /// Interface for --tc-ingress (repeatable; implies it; default: every interface that is up).
    #[arg(long = "iface")]
    pub interfaces: Vec<String>,
    /// TOML config: tick, interfaces, rules to name, merge or ignore services.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Do not attach the request-turn hooks (sock_recv_length/sock_send_length): cheaper, but
    /// outstanding requests come from the per-tick snapshot and latency is not measured.
    #[arg(long)]
    pub no_turns: bool,
    /// Attach the epoll tracepoints (epoll_calls, epoll_events, epoll_wait_ms). Off by default:
    /// enabling any syscall tracepoint puts every syscall of every process on the kernel's
    /// tracing slow path (measured: ~9% of nginx -> memcached throughput on this VM).
    #[arg(long)]
    pub epoll: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics ("off" to disable).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: String,
    /// Trace store (redb) that every tick is written to.
    #[arg(long, default_value = store::DEFAULT_DB)]
    pub db: PathBuf,
    /// Do not record ticks in the trace store.
    #[arg(long)]
    pub no_store: bool,
    /// Protect this QoS: SERVICE:P99_MS, e.g. "nginx:50" (the config's [qos] in full). When the
    /// service's p99 over the window exceeds it, seer names the initiating service, diagnoses
    /// its saturated resource and responds as --mode says.
    #[arg(long, value_name = "SERVICE:P99_MS")]
    pub qos: Option<String>,
    /// What to do about a violation: enforce (apply local actions, journaled and undone on
    /// exit), recommend (put them in the alert for the cluster manager), dry-run (log only).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Send alerts to this Alertmanager (http://host:port; API v2). Kept in the store until
    /// delivered.
    #[arg(long, value_name = "URL")]
    pub alertmanager: Option<String>,
    /// The model (NAME.onnx, its card NAME.json beside it). Default: the shipped model, next
    /// to the binary or in the source tree's models/. Replacing the file (atomic rename)
    /// switches models at the next tick.
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Run without the model: react to violations only.
    #[arg(long)]
    pub no_predict: bool,
    /// The ONNX Runtime library (default: ORT_DYLIB_PATH, the binary's directory, then
    /// /usr/local/lib/seer, where `cargo xtask setup` puts it).
    #[arg(long, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    /// Cluster mode: also publish every tick (services, channels, local and remote calls) to
    /// NATS JetStream at this URL (nats://HOST:PORT, tls://HOST:PORT for TLS) for `seer-agent
    /// central`. Never holds a tick up: while NATS is unreachable the agent works alone as
    /// without this flag, keeps the last --cluster-backlog ticks and sends them when NATS is
    /// back (the log, /metrics and the live table say which).
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,
    /// NATS credentials for --cluster: a .creds file (user JWT and nkey seed), a file holding
    /// an nkey user seed (SU...), or a file whose first line is USER:PASSWORD.
    #[arg(long, value_name = "FILE", requires = "cluster")]
    pub cluster_creds: Option<PathBuf>,
    /// The CA that signs the NATS servers' certificates (PEM), for tls:// servers whose
    /// certificate no public CA signs (TLS is then required).
    #[arg(long, value_name = "FILE", requires = "cluster")]
    pub cluster_ca: Option<PathBuf>,
    /// This host's name in the cluster (its subject seer.samples.NAME): 1 to 64 of
    /// A-Z a-z 0-9 _ - (default: the hostname, other characters as _).
    #[arg(long, value_name = "NAME", requires = "cluster")]
    pub cluster_host: Option<String>,
    /// Ticks kept to send while NATS is unreachable; the oldest are dropped (counted) beyond.
    #[arg(
        long,
        value_name = "TICKS",
        default_value_t = 600,
        requires = "cluster"
    )]
    pub cluster_backlog: usize,
}

#[derive(clap::Args, Clone, Debug)]
pub struct ExportArgs {
    /// Trace store to read (the agent must not be running on it: redb allows one process).
    #[arg(long, default_value = store::DEFAULT_DB)]
    pub db: PathBuf,
    /// Start: ms since the Unix epoch, "now", or relative like -1h, -30m, -90s, -2d.
    #[arg(long, allow_hyphen_values = true)]
    pub from: String,
    /// End (exclusive), same forms as --from (default: now).
    #[arg(long, default_value = "now", allow_hyphen_values = true)]
    pub to: String,
    /// Output directory: samples.arrow (Arrow IPC, one row per tick x service) + manifest.json.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args, Clone, Debug)]
pub struct QueryArgs {
    #[arg(long, default_value = store::DEFAULT_DB)]
    pub db: PathBuf,
    /// While an agent runs on --db (redb allows one process), ask it instead, at this address
    /// (its --metrics-addr).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub agent: String,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub what: QueryCmd,
}

/// What to ask the trace store (the query API's `QueryWhat`, as a subcommand).
#[derive(Subcommand, Clone, Debug)]
pub enum QueryCmd {
    /// Every service the store knows, with first and last seen.
    Services,
    /// One service's newest ticks (by name or id).
    Service {
        name: String,
        #[arg(long, short, default_value_t = 20)]
        n: usize,
    },
    /// Services with the deepest queues at the newest tick (channel: outstanding,
    /// rx_queue_bytes, accept_backlog, latency_p99_us, ...).
    Top {
        #[arg(default_value = "outstanding")]
        channel: String,
        #[arg(long, short, default_value_t = 10)]
        n: usize,
    },
    /// QoS violations the agent saw, with the service it named as initiator.
    Violations {
        /// Since: ms since the Unix epoch, "now", or relative like -1h.
        #[arg(long, default_value = "-1d", allow_hyphen_values = true)]
        from: String,
    },
    /// Diagnoses: which resource each culprit was short of, how sure, and the evidence.
    Diagnoses {
        #[arg(long, default_value = "-1d", allow_hyphen_values = true)]
        from: String,
    },
    /// What the model said: per tick, the most likely initiator and its probability (JSON:
    /// every service's), newest last.
    Predictions {
        #[arg(long, default_value = "-1m", allow_hyphen_values = true)]
        from: String,
        #[arg(long, short, default_value_t = 50)]
        n: usize,
    },
    /// Changes the agent made to the host (enforce mode), and when each was undone.
    Actions,
    /// Alerts not yet delivered to the cluster manager.
    Alerts,
}

impl From<&QueryCmd> for QueryWhat {
    fn from(c: &QueryCmd) -> Self {
        match c.clone() {
            QueryCmd::Services => Self::Services,
            QueryCmd::Service { name, n } => Self::Service { name, n },
            QueryCmd::Top { channel, n } => Self::Top { channel, n },
            QueryCmd::Violations { from } => Self::Violations { from },
            QueryCmd::Diagnoses { from } => Self::Diagnoses { from },
            QueryCmd::Predictions { from, n } => Self::Predictions { from, n },
            QueryCmd::Actions => Self::Actions,
            QueryCmd::Alerts => Self::Alerts,
        }
    }
}

/// `--mode` (the config's `[respond] mode`, which stays free of command-line types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    Enforce,
    Recommend,
    DryRun,
}

impl From<ModeArg> for crate::config::Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Enforce => Self::Enforce,
            ModeArg::Recommend => Self::Recommend,
            ModeArg::DryRun => Self::DryRun,
        }
    }
}
