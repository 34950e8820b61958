//! ONNX Runtime: the shared library found and loaded once per process (`ort` load-dynamic),
//! and models loaded into sessions. The library comes from PyPI's `onnxruntime` wheel, which
//! `cargo xtask setup` unpacks into DEFAULT_DIR; no Python at run time.
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::OnceLock,
};

/// Where `cargo xtask setup` installs the library.
pub const DEFAULT_DIR: &str = "/usr/local/lib/seer";
/// The ONNX Runtime release the agent's bindings (api-31) and the shipped models are tested with.
pub const VERSION: &str = "1.31.1";

/// The library, in search order: `--ort-lib`, `ORT_DYLIB_PATH`, the agent binary's own
/// directory, DEFAULT_DIR. The first that exists is the one used.
pub fn find_library(flag: Option<&Path>) -> Result<PathBuf, String> {
    let mut tried = Vec::new();
    if let Some(p) = flag {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(format!("--ort-lib {}: no such file", p.display()))
        };
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        tried.push(format!("ORT_DYLIB_PATH={}", p.display()));
    }
    let mut dirs = Vec::new();
    if let Some(d) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(d);
    }
    dirs.push(PathBuf::from(DEFAULT_DIR));
    for d in dirs {
        for name in [
            format!("libonnxruntime.so.{VERSION}"),
            "libonnxruntime.so".to_string(),
        ] {
            let p = d.join(&name);
            if p.is_file() {
                return Ok(p);
            }
            tried.push(p.display().to_string());
        }
    }
    Err(format!(
        "no ONNX Runtime library (tried {}): `cargo xtask setup` installs it, or give --ort-lib PATH",
        tried.join(", ")
    ))
}

/// A file the agent, running as root, would trust with code or decisions: owned by root (or
/// by the agent's own user) and writable by no one else, in a directory no one else can write.
/// Loading a library another user can replace would run their code as root; a model they can
/// replace would steer the agent's actions.
pub fn check_trusted(path: &Path, what: &str) -> Result<(), String> {
    let me = nix::unistd::geteuid().as_raw();
    let check = |p: &Path, kind: &str| -> Result<(), String> {
        let m = std::fs::metadata(p).map_err(|e| format!("{what} {}: {e}", p.display()))?;
        if m.uid() != 0 && m.uid() != me {
            return Err(format!(
                "{what} {}: the {kind} belongs to uid {}, not root: refused (another user could change it)",
                path.display(),
                m.uid()
            ));
        }
        if m.mode() & 0o022 != 0 {
            return Err(format!(
                "{what} {}: the {kind} {} is writable by group or others (mode {:o}): refused; chmod go-w it",
                path.display(),
                p.display(),
                m.mode() & 0o7777
            ));
        }
        Ok(())
    };
    let real =
        std::fs::canonicalize(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    check(&real, "file")?;
    if let Some(dir) = real.parent() {
        check(dir, "directory")?;
    }
    Ok(())
}

static ENV: OnceLock<Result<(ort::environment::Environment, PathBuf), String>> = OnceLock::new();

/// Loads the library (once per process) and builds the environment sessions are made in.
pub fn environment(
    flag: Option<&Path>,
) -> Result<&'static (ort::environment::Environment, PathBuf), String> {
    ENV.get_or_init(|| {
        let lib = find_library(flag)?;
        check_trusted(&lib, "ONNX Runtime library")?;
        let env = ort::init_from(&lib)
            .map_err(|e| format!("loading {}: {e}", lib.display()))?
            .with_name("seer")
            .build()
            .map_err(|e| format!("ONNX Runtime {}: {e}", lib.display()))?;
        Ok((env, lib))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// A model in a session, one thread (inference runs beside the services it watches).
pub fn session(
    env: &ort::environment::Environment,
    model: &Path,
) -> Result<ort::session::Session, String> {
    let fail = |e: String| format!("model {}: {e}", model.display());
    ort::session::Session::builder(env)
        .map_err(|e| fail(e.to_string()))?
        // As Python's onnxruntime does by default (the report's inference times).
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::All)
        .map_err(|e| fail(e.to_string()))?
        .with_intra_threads(1)
        .map_err(|e| fail(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| fail(e.to_string()))?
        .commit_from_file(model)
        .map_err(|e| fail(e.to_string()))
}
