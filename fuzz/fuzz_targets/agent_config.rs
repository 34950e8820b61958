#![no_main]
//! The agent's TOML config (`run --config`): parse and validate never panic; what passes is
//! usable as it is.
// seer-agent is a binary crate: config.rs and what it names are included by path.
#[allow(dead_code)]
#[path = "../../seer-agent/src/config.rs"]
mod config;
#[allow(dead_code)]
#[path = "../../seer-agent/src/http.rs"]
mod http;
#[allow(dead_code)]
#[path = "../../seer-agent/src/respond"]
mod respond {
    pub mod policy;
}

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Config::load reads the file as UTF-8 first.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::Config::parse(text, "seer.toml") {
        Ok(cfg) => {
            assert!((config::TICK_MIN_MS..=config::TICK_MAX_MS).contains(&cfg.tick_ms));
            let _ = respond::policy::PolicyConfig::from_config(&cfg.respond);
            for url in [&cfg.alerts.alertmanager, &cfg.alerts.webhook]
                .into_iter()
                .flatten()
            {
                http::HttpUrl::parse(url).expect("validated");
            }
        }
        Err(config::ConfigError::Parse { line, .. }) => {
            assert!(line <= text.lines().count() + 1, "line {line} past the end");
        }
        Err(_) => {}
    }
});
