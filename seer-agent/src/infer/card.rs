//! The model card (`NAME.json` beside `NAME.onnx`, written by models/seer_models/train.py):
//! what the model expects, checked against what this agent feeds before a model is used.
use serde::Deserialize;

use seer_common::sample::{CHANNEL_NAMES, CHANNELS};

pub const CARD_FORMAT: &str = "seer-model-card-v1";

fn two_ticks() -> u32 {
    2
}

#[derive(Clone, Debug, Deserialize)]
pub struct Card {
    pub format: String,
    pub name: String,
    pub network: String,
    pub t: usize,
    pub c: usize,
    pub channels: Vec<String>,
    pub tick_ms: u64,
    pub horizon_ms: u64,
    pub threshold: f32,
    /// Ticks in a row at or over the threshold before an alarm fires, chosen with the threshold
    /// (cards from before it: the agent's old default, 2).
    #[serde(default = "two_ticks")]
    pub consecutive: u32,
    pub normalisation: Normalisation,
    pub services: ServicesSpec,
    /// Channels that were zeros in every training run (this host's kernel may see them; the
    /// model never did): fed as zeros.
    #[serde(default)]
    pub zeroed_channels: Vec<String>,
    #[serde(default)]
    pub onnxruntime_tested: String,
    /// What training measured on its validation runs (precision_pct: the share of alarms a
    /// violation followed); the agent acts on alarms only above `[predict] min_precision_pct`.
    #[serde(default)]
    pub validation: Option<Measured>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Measured {
    #[serde(default)]
    pub precision_pct: Option<f64>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Normalisation {
    pub kind: String,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ServicesSpec {
    /// Fixed-N networks: inputs padded to this many services.
    #[serde(default)]
    pub n_max: Option<usize>,
}

/// Why a model cannot be used by this agent.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error("cannot read the model card {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the model card {path} is not valid: {msg}")]
    Parse { path: String, msg: String },
    #[error("the model does not fit this agent: {0}")]
    Mismatch(String),
}

impl Card {
    pub fn load(path: &std::path::Path) -> Result<Card, CardError> {
        let text = std::fs::read_to_string(path).map_err(|source| CardError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Card::parse(&path.display().to_string(), &text)
    }

    pub fn parse(path: &str, text: &str) -> Result<Card, CardError> {
        let card: Card = serde_json::from_str(text).map_err(|e| CardError::Parse {
            path: path.into(),
            msg: e.to_string(),
        })?;
        if card.format != CARD_FORMAT {
            return Err(CardError::Parse {
                path: path.into(),
                msg: format!("format {:?}, expected {CARD_FORMAT:?}", card.format),
            });
        }
        Ok(card)
    }

    /// Checks the card against what this agent feeds: channels (names and order), window,
    /// tick, normalisation. Every mismatch is named.
    pub fn check(&self, agent_tick_ms: u64) -> Result<(), CardError> {
        let mut bad = Vec::new();
        let ours: Vec<&str> = CHANNEL_NAMES.to_vec();
        if self
            .channels
            .iter()
            .map(String::as_str)
            .ne(ours.iter().copied())
        {
            bad.push(format!(
                "channels {:?}, this agent feeds {:?} (retrain on a corpus recorded by this agent: cargo xtask corpus, cargo xtask train)",
                self.channels, ours
            ));
        }
        if self.c != CHANNELS {
            bad.push(format!(
                "C = {}, this agent has {CHANNELS} channels",
                self.c
            ));
        }
        if self.t == 0 || self.t > MAX_T {
            bad.push(format!("T = {} ticks (1..={MAX_T} supported)", self.t));
        }
        if self.tick_ms != agent_tick_ms {
            bad.push(format!(
                "trained on {} ms ticks, this agent ticks every {agent_tick_ms} ms (run with --tick-ms {} or retrain)",
                self.tick_ms, self.tick_ms
            ));
        }
        if self.normalisation.kind != "log1p_standard" {
            bad.push(format!(
                "normalisation {:?} (this agent applies log1p_standard)",
                self.normalisation.kind
            ));
        }
        if self.normalisation.mean.len() != self.c || self.normalisation.std.len() != self.c {
            bad.push("normalisation statistics are not one per channel".into());
        }
        if self
            .normalisation
            .std
            .iter()
            .any(|s| !(s.is_finite() && *s > 0.0))
            || self.normalisation.mean.iter().any(|m| !m.is_finite())
        {
            bad.push("normalisation statistics must be finite, std > 0".into());
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            bad.push(format!("threshold {} is not in (0, 1)", self.threshold));
        }
        if !(1..=100).contains(&self.consecutive) {
            bad.push(format!(
                "consecutive {} is not 1 ..= 100 ticks",
                self.consecutive
            ));
        }
        for z in &self.zeroed_channels {
            if !ours.contains(&z.as_str()) {
                bad.push(format!("zeroed channel {z:?} is not a channel"));
            }
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(CardError::Mismatch(bad.join("; ")))
        }
    }

    /// Whether the model takes the call graph (`adj`) and so any number of services.
    pub fn takes_graph(&self) -> bool {
        self.services.n_max.is_none()
    }

    /// The card of a model file: `NAME.onnx` -> `NAME.json`.
    pub fn path_for(model: &std::path::Path) -> std::path::PathBuf {
        model.with_extension("json")
    }
}

/// The longest window a model may ask for (ticks kept per service).
pub const MAX_T: usize = 64;

#[cfg(test)]
pub(crate) mod tests_support {
    use seer_common::sample::{CHANNEL_NAMES, CHANNELS};

    /// A card that fits this agent (graph network, T = 10, 100 ms).
    pub fn card_json() -> String {
        let chans: Vec<String> = CHANNEL_NAMES.iter().map(|c| format!("\"{c}\"")).collect();
        let ones = vec!["1.0"; CHANNELS].join(",");
        let zeros = vec!["0.0"; CHANNELS].join(",");
        format!(
            r#"{{"format":"seer-model-card-v1","name":"m","network":"graph","t":10,"c":{CHANNELS},
            "channels":[{}],"tick_ms":100,"horizon_ms":100,"threshold":0.5,
            "normalisation":{{"kind":"log1p_standard","mean":[{zeros}],"std":[{ones}]}},
            "services":{{"n":"any"}}}}"#,
            chans.join(",")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good_card() -> String {
        tests_support::card_json()
    }

    #[test]
    fn a_card_that_fits_is_accepted() {
        let c = Card::parse("m.json", &good_card()).unwrap();
        c.check(100).unwrap();
        assert!(c.takes_graph());
    }

    #[test]
    fn every_mismatch_is_named() {
        let text = good_card()
            .replace("\"nic_rx_pkts\"", "\"nic_rx_packets\"")
            .replace("\"t\":10", "\"t\":0")
            .replace("\"threshold\":0.5", "\"threshold\":1.5");
        let c = Card::parse("m.json", &text).unwrap();
        let e = c.check(200).unwrap_err().to_string();
        for want in ["channels", "T = 0", "100 ms ticks", "threshold 1.5"] {
            assert!(e.contains(want), "{want:?} not in {e}");
        }
    }

    #[test]
    fn another_format_or_broken_json_is_refused() {
        let e = Card::parse("m.json", &good_card().replace("seer-model-card-v1", "v0"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("format \"v0\""), "{e}");
        let e = Card::parse("m.json", "{\"format\":")
            .unwrap_err()
            .to_string();
        assert!(e.contains("m.json is not valid"), "{e}");
    }
}
