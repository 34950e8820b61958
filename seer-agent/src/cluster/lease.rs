//! Leader election among `central` processes: a JetStream key-value lease.
//!
//! The bucket keeps one revision per key and forgets entries older than the lease (its
//! max age). Whoever creates the key `leader` (only possible while it is absent) leads, for
//! the term named by the revision it created; it renews by updating at its own last revision
//! (compare-and-set) every third of the lease. A standby tries to create the key each turn, so
//! it takes over within one lease after the leader stops renewing. A leader that cannot renew
//! (deposed, or cut off from NATS) stops leading as soon as its last good renewal is older than
//! the lease minus a margin, whether or not NATS answers: two leaders never publish at once for
//! long.
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};

use super::LEASE_BUCKET;

const KEY: &str = "leader";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Leader { term: u64 },
    Standby { leader: Option<String> },
}

pub struct Lease {
    store: kv::Store,
    me: String,
    ttl: Duration,
    /// (revision of our last write, when it was acknowledged, the term).
    held: Option<(u64, Instant, u64)>,
    last_try: Option<Instant>,
    leader_seen: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("the lease bucket {LEASE_BUCKET}: {0}")]
    Bucket(String),
    #[error(
        "the lease bucket {LEASE_BUCKET} exists with max age {have:?}, this central wants {want:?}: give the same --lease-ms to every central (or delete the bucket)"
    )]
    Mismatch { have: Duration, want: Duration },
}

impl Lease {
    /// Opens the bucket (created when missing; checked when present).
    pub async fn open(
        js: &jetstream::Context,
        me: &str,
        ttl: Duration,
        replicas: usize,
    ) -> Result<Lease, LeaseError> {
        let store = match js.get_key_value(LEASE_BUCKET).await {
            Ok(s) => s,
            Err(_) => {
                // The bucket's stream made here, as the key-value convention has it:
                // async-nats' create_key_value first asks for the account's info, which it
                // cannot read from Debian's nats-server 2.9.
                js.create_stream(jetstream::stream::Config {
                    name: format!("KV_{LEASE_BUCKET}"),
                    description: Some("seer central: the leader's lease".into()),
                    subjects: vec![format!("$KV.{LEASE_BUCKET}.>")],
                    max_messages_per_subject: 1,
                    max_age: ttl,
                    max_message_size: 1024,
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: replicas,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    discard: jetstream::stream::DiscardPolicy::New,
                    ..Default::default()
                })
                .await
                .map_err(|e| LeaseError::Bucket(e.to_string()))?;
                js.get_key_value(LEASE_BUCKET)
                    .await
                    .map_err(|e| LeaseError::Bucket(e.to_string()))?
            }
        };
        let info = store
            .status()
            .await
            .map_err(|e| LeaseError::Bucket(e.to_string()))?;
        let have = info.max_age();
        if have != ttl {
            return Err(LeaseError::Mismatch { have, want: ttl });
        }
        Ok(Lease {
            store,
            me: me.into(),
            ttl,
            held: None,
            last_try: None,
            leader_seen: None,
        })
    }

    /// Whether the lease is ours now, judged on our clock alone (no NATS round trip).
    pub fn role(&self) -> Role {
        match self.held {
            Some((_, at, term)) if at.elapsed() < self.ttl.mul_f32(0.8) => Role::Leader { term },
            _ => Role::Standby {
                leader: self.leader_seen.clone(),
            },
        }
    }

    /// One turn: renew (leader) or try to take the lease (standby), at most every third of
    /// the lease. Errors (NATS away) leave the role to expire on its own.
    pub async fn turn(&mut self) {
        let every = self.ttl / 3;
        if self.last_try.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last_try = Some(Instant::now());
        let me: Vec<u8> = self.me.as_bytes().to_vec();
        match self.held {
            Some((rev, _, term)) if matches!(self.role(), Role::Leader { .. }) => {
                let sent = Instant::now();
                match self.store.update(KEY, me.into(), rev).await {
                    Ok(rev) => self.held = Some((rev, sent, term)),
                    Err(e) => {
                        log::warn!("central: lost the lease (term {term}): {e}");
                        self.held = None;
                    }
                }
            }
            _ => {
                if self.held.take().is_some() {
                    log::warn!("central: the lease lapsed before it was renewed; standing by");
                }
                let sent = Instant::now();
                match self.store.create(KEY, me.into()).await {
                    Ok(rev) => {
                        log::info!("central: leading (term {rev})");
                        self.held = Some((rev, sent, rev));
                    }
                    Err(_) => {
                        let who = self
                            .store
                            .get(KEY)
                            .await
                            .ok()
                            .flatten()
                            .map(|b| String::from_utf8_lossy(&b).into_owned());
                        if who != self.leader_seen {
                            log::info!(
                                "central: standing by (leader: {})",
                                who.as_deref().unwrap_or("none yet")
                            );
                            self.leader_seen = who;
                        }
                    }
                }
            }
        }
    }

    /// Gives the lease up (clean shutdown): a standby takes over at its next turn.
    pub async fn release(&mut self) {
        if let Some((rev, _, term)) = self.held.take() {
            match self.store.delete_expect_revision(KEY, Some(rev)).await {
                Ok(()) => log::info!("central: released the lease (term {term})"),
                Err(e) => log::warn!("central: releasing the lease: {e}"),
            }
        }
    }
}
