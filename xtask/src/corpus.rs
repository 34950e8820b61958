//! `cargo xtask corpus [ARGS]`: builds the testbed and the agent, then runs
//! `seer-testbed corpus --out ~/.cache/seer/corpus --agent-bin ~/.cache/seer/corpus/bin/seer-agent ARGS`
//! (copies of the debug binaries, so later builds do not change a recording corpus): the
//! model's training corpus, planned from a seed and resumable (`seer-testbed corpus --help`).
use anyhow::Result;

use crate::util;

/// Where the corpus goes unless `--out` says otherwise: `$SEER_CORPUS_DIR`, else
/// `~/.cache/seer/corpus`, outside the work tree (hours of recording outlive a fresh checkout;
/// never committed).
pub fn default_dir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("SEER_CORPUS_DIR") {
        return d.into();
    }
    std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
        .join(".cache/seer/corpus")
}

pub fn run(args: &[String]) -> Result<()> {
    util::step("build seer-testbed and seer-agent");
    util::cargo(&["build", "-p", "seer-testbed", "-p", "seer-agent"])?;
    // The runs use copies, so a build while the corpus records cannot swap a binary under it.
    let bin = default_dir().join("bin");
    std::fs::create_dir_all(&bin)?;
    for b in [
        "seer-testbed",
        "seer-testbed-svc",
        "seer-testbed-load",
        "seer-agent",
    ] {
        let tmp = bin.join(format!(".{b}.tmp"));
        std::fs::copy(util::root().join("target/debug").join(b), &tmp)?;
        std::fs::rename(&tmp, bin.join(b))?;
    }
    let mut full = vec!["corpus".to_string()];
    let has = |flag: &str| {
        args.iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    if !has("--out") {
        full.extend(["--out".into(), default_dir().display().to_string()]);
    }
    if !has("--agent-bin") {
        full.extend([
            "--agent-bin".into(),
            bin.join("seer-agent").display().to_string(),
        ]);
    }
    full.extend(args.iter().cloned());
    util::step(&format!("seer-testbed {}", full.join(" ")));
    util::exec(bin.join("seer-testbed"), &full)
}
