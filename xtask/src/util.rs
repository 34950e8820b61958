//! Running commands with clear progress and errors.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_path_buf()
}

pub fn step(what: &str) {
    println!("\n==> {what}");
}

pub fn have(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let st = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !st.success() {
        bail!("{shown} failed ({st})");
    }
    Ok(())
}

pub fn output(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn cargo(args: &[&str]) -> Result<()> {
    cargo_in(&root(), args)
}

pub fn cargo_in(dir: &Path, args: &[&str]) -> Result<()> {
    // `cargo +nightly` needs the rustup proxy, not the cargo binary that runs xtask.
    let mut c = if args.first().is_some_and(|a| a.starts_with('+')) {
        Command::new("cargo")
    } else {
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
    };
    if args.first().is_some_and(|a| a.starts_with('+')) {
        c.env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO")
            .env_remove("RUSTC");
    }
    run(c.args(args).current_dir(dir))
}

/// Replaces this process with `prog` (so Ctrl-C and exit codes go straight to it).
pub fn exec(prog: PathBuf, args: &[String]) -> Result<()> {
    use std::os::unix::process::CommandExt as _;
    let err = Command::new(&prog).args(args).exec();
    bail!("cannot run {}: {err}", prog.display())
}

/// `args` with `flag value` added in front unless `args` already give the flag.
pub fn with_default(args: Vec<String>, flag: &str, value: String) -> Vec<String> {
    if args
        .iter()
        .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    {
        return args;
    }
    let mut v = vec![flag.to_string(), value];
    v.extend(args);
    v
}
