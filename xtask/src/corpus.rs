//! `cargo xtask corpus [ARGS]`: builds the testbed and the agent (release), then runs
//! `nice -n -10 seer-testbed corpus --out ~/.cache/seer/corpus --agent-bin ~/.cache/seer/corpus/bin/seer-agent ARGS`
//! (copies of the release binaries, so later builds do not change a recording corpus): the
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

/// The build a corpus records with, written to `<corpus>/build-profile`: release, as a
/// deployment runs. Runs 000-126 of the first corpus were recorded with debug builds of the
/// services, the load generator and the agents: in a fault-free run every request sent during
/// a 200 ms stretch took 150-200 ms now and then (`models/REPORT.md`, "What the corpus can
/// teach": 190 violations an hour without a fault); the same scenario gave 2-3 violations a
/// minute in debug and 1 in release, side by side. A corpus never mixes builds.
const PROFILE: &str = "release";

/// Niceness of the testbed (its services, load and agents): the application under test gets
/// the CPU before whatever else runs on this machine (builds, tests), as on a dedicated host.
const NICE: &str = "-10";

pub fn run(args: &[String]) -> Result<()> {
    let out = flag_value(args, "--out")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(default_dir);
    check_profile(&out)?;
    util::step("build seer-testbed and seer-agent (release)");
    util::cargo(&[
        "build",
        "--release",
        "-p",
        "seer-testbed",
        "-p",
        "seer-agent",
    ])?;
    // The runs use copies, so a build while the corpus records cannot swap a binary under it.
    let bin = out.join("bin");
    std::fs::create_dir_all(&bin)?;
    for b in [
        "seer-testbed",
        "seer-testbed-svc",
        "seer-testbed-load",
        "seer-agent",
    ] {
        let tmp = bin.join(format!(".{b}.tmp"));
        std::fs::copy(util::root().join("target").join(PROFILE).join(b), &tmp)?;
        std::fs::rename(&tmp, bin.join(b))?;
    }
    std::fs::write(out.join("build-profile"), format!("{PROFILE}\n"))?;
    let mut full = vec![
        "-n".to_string(),
        NICE.to_string(),
        bin.join("seer-testbed").display().to_string(),
        "corpus".to_string(),
    ];
    if flag_value(args, "--out").is_none() {
        full.extend(["--out".into(), out.display().to_string()]);
    }
    if flag_value(args, "--agent-bin").is_none() {
        full.extend([
            "--agent-bin".into(),
            bin.join("seer-agent").display().to_string(),
        ]);
    }
    full.extend(args.iter().cloned());
    util::step(&format!("nice {}", full.join(" ")));
    util::exec("nice".into(), &full)
}

/// `--flag VALUE` or `--flag=VALUE` in `args`.
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    let eq = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&eq).map(str::to_string)
        }
    })
}

/// A corpus with runs records on with the build it began with: refuse another.
fn check_profile(out: &std::path::Path) -> Result<()> {
    let has_runs = std::fs::read_dir(out.join("runs"))
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if !has_runs {
        return Ok(());
    }
    let recorded = std::fs::read_to_string(out.join("build-profile"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "debug".to_string());
    if recorded != PROFILE {
        anyhow::bail!(
            "{}: its runs were recorded with {recorded} builds and a corpus never mixes builds; \
             move it aside (`mv {0} {0}-{recorded}`) to start a {PROFILE} corpus there, or give \
             another --out",
            out.display()
        );
    }
    Ok(())
}
