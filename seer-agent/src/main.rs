//! seer-agent: watches every service's queues from the kernel, with no application changes.
//!
//! main is only: arguments -> config -> load probes -> spawn the tick loop -> select! on
//! SIGINT/SIGTERM -> detach.
// The pipeline, in the order data flows (each stage uses those above it in this list):
mod actuate; // carrying decisions out on the host (cgroups, resctrl, tc), journaled
mod alert; // alerts to Alertmanager / webhooks
mod cli;
mod cluster; // NATS JetStream: the agent's publisher and the central predictor (issue 18)
mod diagnose; // which resource the culprit is short of
mod discovery; // services, their processes, ports and call graph
mod infer; // the model: who is about to break the QoS (ONNX Runtime)
mod respond; // episodes and the policy's decision
mod sampler; // one Sample per service per tick
mod serve; // HTTP: /metrics and the query API
mod store; // the agent's side of the trace store (seer-store)
mod sys; // every privileged call: bpf, BTF, /proc, capabilities, seccomp
mod tick_loop; // load -> tick -> drain
mod watch; // the QoS watch and the initiator labeller // one file per command
// Shared plain data and helpers.
mod channels;
mod config;
mod http;
mod http_client;
mod output;
mod util;

use std::process::ExitCode;

use clap::Parser as _;
use cli::{Cli, Cmd};

/// Exit codes (sysexits.h), so scripts can tell a bad config from a missing privilege.
const EX_USAGE: u8 = 64;
const EX_NOPERM: u8 = 77;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .format_timestamp_millis()
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run(args) => {
            let cfg = match cli::run::config_for(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("seer-agent: {e}");
                    return ExitCode::from(EX_USAGE);
                }
            };
            if let Err(e) = sys::caps::check_can_attach() {
                eprintln!("seer-agent: {e}");
                return ExitCode::from(EX_NOPERM);
            }
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("seer-agent: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(tick_loop::run(cli::run::options(&args), cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("seer-agent: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Doctor {
            json,
            interfaces,
            model,
            ort_lib,
            cluster,
            cluster_creds,
            cluster_ca,
        } => {
            let ifs = (!interfaces.is_empty()).then_some(interfaces);
            let cluster = cluster
                .as_deref()
                .map(|url| (url, cluster_creds.as_deref(), cluster_ca.as_deref()));
            match cli::doctor::doctor(ifs, json, model.as_deref(), ort_lib.as_deref(), cluster) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => report(Err(e)),
            }
        }
        Cmd::Selftest { json } => match cli::selftest::selftest(json) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => report(Err(e)),
        },
        Cmd::Export(a) => {
            least_privilege(sys::caps::FOR_STORE_READERS);
            report(cli::query::export(&a))
        }
        Cmd::Query(a) => {
            least_privilege(sys::caps::FOR_STORE_READERS);
            report(cli::query::query(&a))
        }
        Cmd::Act(a) => {
            least_privilege(sys::caps::FOR_ACT);
            report(cli::act::act(&a))
        }
        Cmd::Diagnose(a) => cli::diagnose::run(&a),
        Cmd::LlcReadings(a) => cli::diagnose::llc_readings(&a),
        Cmd::BenchInfer(a) => report(cli::bench_infer::run(&a)),
        Cmd::BenchCluster(a) => report(cli::bench_cluster::run(&a)),
        Cmd::Ui(a) => report(cli::ui::run(&a)),
        Cmd::Predict(a) => report(cli::predict::run(&a)),
        Cmd::Central(a) => report(cli::central::run(&a)),
    }
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seer-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A command that needs little drops the rest for good before it reads anything (see
/// `sys::caps::restrict_to`); as a non-root user there is nothing to drop.
fn least_privilege(keep: &[(caps::Capability, &'static str)]) {
    if seer_store::safefs::euid() == 0
        && let Err(e) = sys::caps::restrict_to(keep, log::Level::Debug)
    {
        log::warn!("{e}; continuing with the capabilities we have");
    }
}
