//! The samples stream: created by the first central with the settings it is given, checked by
//! every other (a mismatch names what differs), and followed by an ordered consumer from a
//! point in time (a window back at the start, the last assembled tick after a reconnect).
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt as _;

use super::{SAMPLES_PREFIX, STREAM, wire::MAX_MESSAGE};

/// The stream as this central wants it.
pub fn stream_config(retention: Duration, replicas: usize) -> stream::Config {
    stream::Config {
        name: STREAM.into(),
        description: Some("seer: every host's samples, one message per host per tick".into()),
        subjects: vec![format!("{SAMPLES_PREFIX}.>")],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: retention,
        max_message_size: MAX_MESSAGE as i32,
        num_replicas: replicas,
        duplicate_window: retention.min(Duration::from_secs(60)),
        ..Default::default()
    }
}

/// What differs between the stream found and the one wanted (empty: it fits).
pub fn mismatches(have: &stream::Config, want: &stream::Config) -> Vec<String> {
    let mut d = Vec::new();
    if have.subjects != want.subjects {
        d.push(format!(
            "subjects {:?} (want {:?})",
            have.subjects, want.subjects
        ));
    }
    if have.storage != want.storage {
        d.push(format!("storage {:?} (want file)", have.storage));
    }
    if have.retention != want.retention {
        d.push(format!("retention {:?} (want limits)", have.retention));
    }
    if have.max_age != want.max_age {
        d.push(format!(
            "max age {:?} (want {:?}, --retention-s)",
            have.max_age, want.max_age
        ));
    }
    if have.num_replicas != want.num_replicas {
        d.push(format!(
            "replicas {} (want {}, --replicas)",
            have.num_replicas, want.num_replicas
        ));
    }
    d
}

/// Creates the samples stream if missing; checks it if present.
pub async fn ensure_stream(
    js: &jetstream::Context,
    retention: Duration,
    replicas: usize,
) -> anyhow::Result<stream::Stream> {
    let want = stream_config(retention, replicas);
    match js.get_stream(STREAM).await {
        Ok(s) => {
            let d = mismatches(&s.cached_info().config, &want);
            if !d.is_empty() {
                bail!(
                    "the stream {STREAM} exists with other settings: {}; give the central the same flags as the others, or delete the stream (`nats stream rm {STREAM}`)",
                    d.join(", ")
                );
            }
            Ok(s)
        }
        Err(e)
            if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            log::info!(
                "central: creating the stream {STREAM} ({}.>, file storage, {:?} retention, {replicas} replica(s))",
                SAMPLES_PREFIX,
                retention
            );
            js.create_stream(want)
                .await
                .with_context(|| format!("creating the stream {STREAM}"))
        }
        Err(e) => Err(anyhow::anyhow!(
            "looking up the stream {STREAM}: {e} (is JetStream on? nats-server -js)"
        )),
    }
}

/// An ordered consumer of every host's samples from `start_ms` on.
pub async fn consume(
    st: &stream::Stream,
    start_ms: u64,
) -> anyhow::Result<consumer::pull::Ordered> {
    let start = async_nats::datetime::from_nanos(i128::from(start_ms) * 1_000_000)
        .map_err(|e| anyhow::anyhow!("start time {start_ms}: {e}"))?;
    let c = st
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: format!("{SAMPLES_PREFIX}.>"),
            deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: start },
            ..Default::default()
        })
        .await
        .context("creating the samples consumer")?;
    c.messages().await.context("reading the samples consumer")
}

/// The consumer's next message; never, while there is no consumer.
pub async fn next_msg(
    m: &mut Option<consumer::pull::Ordered>,
) -> Option<Result<jetstream::Message, consumer::pull::OrderedError>> {
    match m {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_with_other_settings_is_named_by_what_differs() {
        let want = stream_config(Duration::from_secs(300), 1);
        assert!(mismatches(&want, &want).is_empty());
        let mut have = want.clone();
        have.max_age = Duration::from_secs(60);
        have.num_replicas = 3;
        have.storage = stream::StorageType::Memory;
        let d = mismatches(&have, &want).join(", ");
        assert!(d.contains("max age 60s"), "{d}");
        assert!(d.contains("replicas 3 (want 1"), "{d}");
        assert!(d.contains("storage Memory"), "{d}");
    }
}
