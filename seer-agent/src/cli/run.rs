//! `seer-agent run`: the command line over the config file, and the tick loop's options.
use crate::{
    cli::RunArgs,
    config::{Config, ConfigError, QosConfig},
    tick_loop::RunOptions,
};

/// The config file (or the defaults) with the command line's flags over it.
pub fn config_for(args: &RunArgs) -> Result<Config, ConfigError> {
    let mut cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(t) = args.tick_ms {
        cfg.tick_ms = t;
    }
    if !args.interfaces.is_empty() {
        cfg.interfaces = Some(args.interfaces.clone());
    }
    cfg.tc_ingress |= args.tc_ingress || cfg.interfaces.is_some();
    cfg.turns &= !args.no_turns;
    cfg.epoll |= args.epoll;
    if let Some(q) = &args.qos {
        let bad = |msg: String| ConfigError::Invalid {
            path: "--qos".into(),
            msg,
        };
        let (svc, ms) = q
            .rsplit_once(':')
            .ok_or_else(|| bad(format!("{q:?}: expected SERVICE:P99_MS, e.g. nginx:50")))?;
        let p99_ms: f64 = ms
            .parse()
            .map_err(|_| bad(format!("{ms:?} is not a number of milliseconds")))?;
        // The flag sets service and target; a config's [qos] keeps its window and minimum.
        let mut qc = cfg
            .qos
            .take()
            .unwrap_or_else(|| QosConfig::new(svc, p99_ms));
        qc.service = svc.into();
        qc.p99_ms = p99_ms;
        cfg.qos = Some(qc);
    }
    if let Some(m) = args.mode {
        cfg.respond.mode = m.into();
    }
    if let Some(u) = &args.alertmanager {
        cfg.alerts.alertmanager = Some(u.clone());
    }
    cfg.validate().map_err(|msg| ConfigError::Invalid {
        path: "command line".into(),
        msg,
    })?;
    Ok(cfg)
}

/// What the tick loop takes from the command line beyond the config.
pub fn options(args: &RunArgs) -> RunOptions {
    RunOptions {
        ticks: args.ticks,
        json: args.json,
        metrics_addr: args.metrics_addr.clone(),
        db: (!args.no_store).then(|| args.db.clone()),
        predict: !args.no_predict,
        model: args.model.clone(),
        ort_lib: args.ort_lib.clone(),
        cluster: args
            .cluster
            .as_ref()
            .map(|url| crate::tick_loop::ClusterRun {
                url: url.clone(),
                creds: args.cluster_creds.clone(),
                ca: args.cluster_ca.clone(),
                host: args
                    .cluster_host
                    .clone()
                    .unwrap_or_else(crate::cluster::default_host),
                backlog: args.cluster_backlog,
            }),
    }
}
