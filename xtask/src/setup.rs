//! Fresh-machine setup: every step checks first, installs only what is missing, and says which
//! step failed and what to do.
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::util::{self, have, output, run, step};

/// Debian packages: bpftool (witness for tests, bpf stats), real servers and load for the tests
/// and benchmarks, iproute2 (netns/veth/tc), procps (ps), a real Alertmanager for the alert
/// tests (started by the tests on loopback; the package's own service is not needed),
/// promtool (package prometheus) to lint /metrics, gcc for the BTF offsets witness, and
/// systemd's systemd-analyze to check the unit, nats-server (JetStream) for cluster mode's
/// tests, started by them on loopback ports (the package's own service is not needed),
/// openssl to make the TLS test's certificates, and chromium (headless) for the live view's
/// browser test.
const DEBIAN: &[&str] = &[
    "bpftool",
    "iproute2",
    "nginx",
    "memcached",
    "redis-server",
    "wrk",
    "procps",
    "python3",
    "python3-venv",
    "python3-pip",
    "unzip",
    "prometheus-alertmanager",
    "prometheus",
    "gcc",
    "systemd",
    "nats-server",
    "openssl",
    "chromium",
];

const BPF_LINKER: &str = "bpf-linker@0.10.4";

fn ok(what: &str) {
    println!("[setup] {what}: ok");
}

pub fn setup() -> Result<()> {
    step("setup (installs only what is missing)");
    disk_space()?;
    rust_src()?;
    bpf_linker()?;
    debian()?;
    python()?;
    onnxruntime_lib()?;
    Ok(())
}

/// Free space the build needs: a fresh debug target/ (line tables only) plus the training venv
/// and the tests' own files, or a margin when target/ is already built. A full disk otherwise
/// fails deep inside a link or a test with `No space left on device`.
const FRESH_BUILD_GIB: u64 = 16;
const WARM_BUILD_GIB: u64 = 4;

fn free_gib(path: &std::path::Path) -> Result<u64> {
    let st =
        nix::sys::statvfs::statvfs(path).with_context(|| format!("statvfs {}", path.display()))?;
    Ok((st.blocks_available() as u64 * st.fragment_size() as u64) >> 30)
}

fn disk_space() -> Result<()> {
    let root = util::root();
    // xtask itself is built by now: the agent binary says whether the rest is.
    let warm = root.join("target/debug/seer-agent").is_file();
    let need = if warm {
        WARM_BUILD_GIB
    } else {
        FRESH_BUILD_GIB
    };
    let free = free_gib(&root)?;
    if free < need {
        bail!(
            "only {free} GiB free on the disk holding {} ({} build needs about {need} GiB): free \
             some space (other checkouts' target/ folders, `cargo clean` in old ones) and rerun",
            root.display(),
            if warm { "a warm" } else { "a fresh" }
        );
    }
    ok(&format!("disk ({free} GiB free, {need} GiB needed)"));
    Ok(())
}

/// The ONNX Runtime version: the agent's `ort` binds its C API (api-31), the training venv's
/// `onnxruntime` checks the exports with it (models/requirements.txt pins the same).
pub const ORT_VERSION: &str = "1.31.1";

/// Where the agent finds the library without being told (seer-agent's `infer::runtime`
/// searches here after `--ort-lib` / `ORT_DYLIB_PATH` and the binary's own directory).
pub const ORT_DIR: &str = "/usr/local/lib/seer";

/// The ONNX Runtime shared library, from PyPI's `onnxruntime` wheel (pip download + unzip: no
/// Python at run time), into ORT_DIR.
fn onnxruntime_lib() -> Result<()> {
    let lib = std::path::Path::new(ORT_DIR).join(format!("libonnxruntime.so.{ORT_VERSION}"));
    if lib.is_file() {
        use std::os::unix::fs::PermissionsExt as _;
        if std::fs::metadata(&lib)?.permissions().mode() & 0o022 != 0 {
            std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o755))?;
        }
        ok(&format!("ONNX Runtime {ORT_VERSION} ({})", lib.display()));
        return Ok(());
    }
    println!(
        "[setup] ONNX Runtime {ORT_VERSION}: downloading the onnxruntime wheel from PyPI (about 17 MB) ..."
    );
    let tmp = std::env::temp_dir().join(format!("seer-ort-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let res = (|| -> Result<()> {
        run(Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
            ])
            .args(["--only-binary=:all:", "--dest"])
            .arg(&tmp)
            .arg(format!("onnxruntime=={ORT_VERSION}")))
        .context("pip download onnxruntime failed (PyPI reachable?)")?;
        let wheel = std::fs::read_dir(&tmp)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .context("pip download left no wheel")?;
        let member = format!("onnxruntime/capi/libonnxruntime.so.{ORT_VERSION}");
        run(Command::new("unzip")
            .args(["-q", "-o"])
            .arg(&wheel)
            .arg(&member)
            .arg("-d")
            .arg(&tmp))
        .with_context(|| format!("{} has no {member}", wheel.display()))?;
        std::fs::create_dir_all(ORT_DIR)?;
        let part = lib.with_extension("part");
        std::fs::copy(tmp.join(&member), &part)?;
        // The agent refuses a library others can write (the wheel's is 0775).
        std::fs::set_permissions(&part, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        std::fs::rename(&part, &lib)?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    res?;
    ok(&format!("ONNX Runtime {ORT_VERSION} ({})", lib.display()));
    Ok(())
}

/// The training and evaluation venv (models/requirements.txt), outside the repo:
/// `$SEER_TRAIN_VENV`, else `~/.cache/seer/train-venv`. Recreated when the requirements change.
pub fn train_venv_dir() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("SEER_TRAIN_VENV") {
        return p.into();
    }
    std::path::PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
        .join(".cache/seer/train-venv")
}

/// Creates or reuses the training venv; returns its python.
pub fn train_venv() -> Result<std::path::PathBuf> {
    let dir = train_venv_dir();
    let req_path = util::root().join("models/requirements.txt");
    let req = std::fs::read_to_string(&req_path)
        .with_context(|| format!("cannot read {}", req_path.display()))?;
    let stamp = dir.join(".seer-requirements");
    let py = dir.join("bin/python");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == req) && py.exists() {
        ok(&format!("training venv ({})", dir.display()));
        return Ok(py);
    }
    println!(
        "[setup] training venv {}: installing models/requirements.txt (PyTorch with its CUDA \
         libraries: about 3 GB to download, 5.5 GB on disk, 1-3 minutes) ...",
        dir.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // Debian's python (python3-venv) when there is one: a pyenv shim first in PATH may point
    // at an interpreter without venv support.
    let base = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    run(Command::new(base).arg("-m").arg("venv").arg(&dir))
        .context("python3 -m venv failed (Debian package python3-venv)")?;
    run(Command::new(&py)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&req_path))
    .context("pip install -r models/requirements.txt failed (PyPI reachable? disk space?)")?;
    std::fs::write(&stamp, req)?;
    ok(&format!("training venv ({})", dir.display()));
    Ok(py)
}

/// pyarrow: reads the training export (`seer-agent export`) in the store's tests and in models/.
fn python() -> Result<()> {
    let have = Command::new("python3")
        .args(["-c", "import pyarrow"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have {
        ok("python3 pyarrow");
        return Ok(());
    }
    println!("[setup] pip install pyarrow ...");
    run(Command::new("python3").args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "pyarrow",
    ]))
    .context("pip install pyarrow failed (PyPI reachable?)")
}

fn rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]))
        .context("the nightly toolchain is needed for the eBPF crate (-Z build-std); `rustup toolchain list` should show it")?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        ok("nightly rust-src");
        return Ok(());
    }
    println!("[setup] installing rust-src for nightly ...");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
        .context("installing rust-src failed: the eBPF crate cannot be built without it")
}

fn bpf_linker() -> Result<()> {
    let home = std::env::var("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    if have("bpf-linker") || home.join("bin/bpf-linker").is_file() {
        ok("bpf-linker");
        return Ok(());
    }
    println!("[setup] installing {BPF_LINKER} (about 80 s) ...");
    run(Command::new("cargo").args(["install", BPF_LINKER, "--locked"])).context(
        "installing bpf-linker failed (it links the eBPF programs); see the cargo output above",
    )
}

fn dpkg_installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_ok_and(|s| s.contains("install ok installed"))
}

fn debian() -> Result<()> {
    let missing: Vec<&str> = DEBIAN
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        ok(&format!("Debian packages ({})", DEBIAN.join(" ")));
        return Ok(());
    }
    if !have("apt-get") {
        bail!(
            "missing packages {missing:?} and no apt-get: install them with your package manager"
        );
    }
    println!(
        "[setup] apt-get update, then installing {} ...",
        missing.join(" ")
    );
    run(Command::new("apt-get").args(["update", "-qq"]))
        .context("apt-get update failed: is the Debian mirror reachable?")?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing))
    .with_context(|| format!("apt-get install {} failed", missing.join(" ")))?;
    ok("Debian packages");
    Ok(())
}

/// Writes `seer-agent/src/sys/btf_fixtures/<uname -r>.txt`: the offsets bindgen's layout of this
/// kernel's structs gives, as an independent check of the agent's own BTF reader.
pub fn bindgen_offsets() -> Result<()> {
    if !have("bindgen") {
        bail!(
            "bindgen is not installed: apt-get install libclang-dev && cargo install bindgen-cli --locked"
        );
    }
    let release = output(Command::new("uname").arg("-r"))?.trim().to_string();
    let dir = std::env::temp_dir().join("seer-bindgen");
    std::fs::create_dir_all(&dir)?;
    let header = output(Command::new("bpftool").args([
        "btf",
        "dump",
        "file",
        "/sys/kernel/btf/vmlinux",
        "format",
        "c",
    ]))?;
    std::fs::write(dir.join("vmlinux.h"), header)?;
    run(Command::new("bindgen")
        .arg(dir.join("vmlinux.h"))
        .args([
            "--allowlist-type",
            "^(sock|socket|file|inode|tcp_sock)$",
            "--no-layout-tests",
            "--no-doc-comments",
        ])
        .arg("-o")
        .arg(dir.join("vm.rs")))?;
    let prog = format!(
        "#![allow(warnings)]\ninclude!({:?});\n{}",
        dir.join("vm.rs"),
        include_str!("bindgen_offsets.rs.txt")
    );
    std::fs::write(dir.join("main.rs"), prog)?;
    run(Command::new("rustc")
        .args(["--edition", "2021", "-O"])
        .arg(dir.join("main.rs"))
        .arg("-o")
        .arg(dir.join("offsets")))?;
    let out = output(&mut Command::new(dir.join("offsets")))?;
    let dst = util::root().join(format!("seer-agent/src/sys/btf_fixtures/{release}.txt"));
    std::fs::write(&dst, out)?;
    println!("wrote {}", dst.display());
    Ok(())
}
