//! `seer-agent ui --db STORE`: the live view's page over a recorded trace store (a stopped
//! agent's, or a copy of a running one's), for review after the fact: the call graph, each
//! service's channels and predicted probability over the last minutes, the episodes the store
//! kept. Served on loopback by default, with the same access rules as the agent's listener.
use std::path::PathBuf;

use anyhow::Context as _;

#[derive(clap::Args, Clone, Debug)]
pub struct UiArgs {
    /// The trace store (redb lets one process open it: stop the agent, or copy the file).
    #[arg(long, value_name = "PATH")]
    pub db: PathBuf,
    /// Where to serve the page (`/ui`) and `/metrics` (loopback unless you say otherwise).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: String,
    /// How much of the end of the recording to show, in minutes.
    #[arg(long, default_value_t = 5)]
    pub minutes: u64,
}

pub fn run(a: &UiArgs) -> anyhow::Result<()> {
    let store = seer_store::Store::open(&a.db, seer_store::StoreConfig::default())
        .with_context(|| format!("opening {}", a.db.display()))?;
    let db = a.db.display().to_string();
    let (feed, l) = crate::serve::recorded::load(&store, &db, a.minutes)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        // /metrics: nothing live to say.
        let (scrapes, mut rx) = tokio::sync::mpsc::channel::<tokio::sync::oneshot::Sender<String>>(4);
        tokio::spawn(async move {
            while let Some(reply) = rx.recv().await {
                let _ = reply.send("# seer-agent ui --db: a recorded store, no live metrics\n".into());
            }
        });
        let server = tokio::spawn(crate::serve::server::serve(
            a.metrics_addr.clone(),
            scrapes,
            Some(store),
            Some(feed),
        ));
        println!(
            "seer-agent ui: http://{}/ui  ({db}: {} to {} UTC, {} services, {} snapshots, {} episodes)",
            a.metrics_addr,
            seer_store::query::format_ts(l.from_ms),
            seer_store::query::format_ts(l.to_ms),
            l.services,
            l.snapshots,
            l.episodes,
        );
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            r = server => { r.context("the listener")?; anyhow::bail!("the listener stopped (see above)") }
        }
        Ok(())
    })
}
