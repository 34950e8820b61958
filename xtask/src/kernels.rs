//! `cargo xtask kernels`: the same agent on other kernels, under QEMU (software emulation).
//!
//! Downloads Debian's BTF-enabled cloud kernels (5.10 bullseye, 6.1 bookworm, 6.12 trixie)
//! without installing them, builds a static agent, packs it with a static busybox into an
//! initramfs whose /init runs `seer-agent selftest` (every channel against the guest kernel's
//! own view, on sockets it makes itself) and `seer-agent doctor` with the kernel's BTF hidden,
//! boots each kernel, and reports what loaded, which channels work and whether values match.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::util::{self, output, run, step};

const CACHE: &str = "/var/cache/seer";
const MIRROR: &str = "http://deb.debian.org/debian";

/// (label, version prefix of `linux-image-cloud-amd64` that selects the suite)
const KERNELS: &[(&str, &str)] = &[
    ("5.10 bullseye", "5.10."),
    ("6.1 bookworm", "6.1."),
    ("6.12 trixie", "6.12."),
];

fn apt_opts(sources: &Path, lists: &Path) -> Vec<String> {
    vec![
        format!("-o=Dir::Etc::sourcelist={}", sources.display()),
        "-o=Dir::Etc::sourceparts=-".into(),
        format!("-o=Dir::State::Lists={}", lists.display()),
        "-o=APT::Get::List-Cleanup=0".into(),
        "-q".into(),
    ]
}

/// A private apt view (its own sources and lists) so the machine's apt configuration is never
/// touched. `suites` e.g. ["bookworm", "bookworm-backports"].
fn private_apt(name: &str, suites: &[&str]) -> Result<Vec<String>> {
    let dir = Path::new(CACHE).join("apt");
    let lists = dir.join(format!("lists-{name}"));
    std::fs::create_dir_all(lists.join("partial"))?;
    let sources = dir.join(format!("sources-{name}.list"));
    let text: String = suites
        .iter()
        .map(|s| format!("deb {MIRROR} {s} main\n"))
        .collect();
    std::fs::write(&sources, text)?;
    let opts = apt_opts(&sources, &lists);
    let fresh = std::fs::metadata(lists.join("lock"))
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(86_400));
    let have_lists = std::fs::read_dir(&lists)?.count() > 2;
    if !(fresh && have_lists) {
        println!("[kernels] apt-get update ({})", suites.join(", "));
        run(Command::new("apt-get")
            .args(&opts)
            .arg("update")
            .stdout(Stdio::null()))
        .context(
            "apt-get update for the private kernel/qemu lists failed (Debian mirror reachable?)",
        )?;
        std::fs::write(lists.join("lock"), b"")?;
    }
    Ok(opts)
}

/// qemu-system-x86 from bookworm-backports: bookworm's own 7.2 would replace the machine's
/// qemu-utils 10.0 (TOOLCHAIN.md).
fn ensure_qemu() -> Result<()> {
    if util::have("qemu-system-x86_64") {
        println!("[kernels] qemu-system-x86_64: ok");
        return Ok(());
    }
    let opts = private_apt("bpo", &["bookworm", "bookworm-backports"])?;
    println!("[kernels] installing qemu-system-x86 from bookworm-backports ...");
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(&opts)
        .args([
            "install",
            "-y",
            "--no-install-recommends",
            "-t",
            "bookworm-backports",
            "qemu-system-x86",
            "qemu-utils",
        ]))
    .context("installing qemu-system-x86 failed")
}

/// Downloads (once) and unpacks a Debian package; returns the unpack directory.
fn fetch_deb(opts: &[String], pkg: &str, dir: &Path) -> Result<PathBuf> {
    let unpacked = dir.join(pkg.replace(['=', '/'], "_"));
    if unpacked.join(".done").exists() {
        return Ok(unpacked);
    }
    std::fs::create_dir_all(dir)?;
    println!("[kernels] downloading {pkg}");
    run(Command::new("apt-get")
        .args(opts)
        .args(["download", pkg])
        .current_dir(dir))
    .with_context(|| format!("apt-get download {pkg} failed"))?;
    let name = pkg.split('=').next().unwrap_or(pkg);
    let deb = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{name}_")) && n.ends_with(".deb"))
        })
        .with_context(|| format!("downloaded .deb for {name} not found in {}", dir.display()))?;
    std::fs::create_dir_all(&unpacked)?;
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked))?;
    std::fs::write(unpacked.join(".done"), b"")?;
    let _ = std::fs::remove_file(&deb);
    Ok(unpacked)
}

/// `linux-image-cloud-amd64` version paragraphs -> the image package its newest `prefix`
/// version depends on.
fn resolve_kernel(opts: &[String], prefix: &str) -> Result<String> {
    let text = output(
        Command::new("apt-cache")
            .args(opts)
            .args(["show", "linux-image-cloud-amd64"]),
    )?;
    let mut best: Option<(String, String)> = None;
    for para in text.split("\n\n") {
        let field = |f: &str| para.lines().find_map(|l| l.strip_prefix(f)).map(str::trim);
        let (Some(ver), Some(dep)) = (field("Version:"), field("Depends:")) else {
            continue;
        };
        if !ver.starts_with(prefix) {
            continue;
        }
        let image = dep.split([' ', ',']).next().unwrap_or("").to_string();
        let newer = best.as_ref().is_none_or(|(v, _)| {
            Command::new("dpkg")
                .args(["--compare-versions", ver, "gt", v])
                .status()
                .is_ok_and(|s| s.success())
        });
        if newer {
            best = Some((ver.to_string(), format!("{image}={ver}")));
        }
    }
    best.map(|(_, p)| p)
        .with_context(|| format!("no linux-image-cloud-amd64 {prefix}x in the private apt lists"))
}

/// One file, directory or device node of the initramfs.
struct CpioEntry {
    name: String,
    mode: u32,
    data: Vec<u8>,
    /// (major, minor) of a device node.
    dev: (u32, u32),
}

/// A newc cpio archive (what the kernel unpacks as an initramfs).
fn cpio(entries: &[CpioEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ino = 1;
    let mut put = |name: &str, mode: u32, data: &[u8], dev: (u32, u32)| {
        let header = format!(
            "070701{ino:08X}{mode:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            dev.0,
            dev.1,
            name.len() + 1,
            0
        );
        ino += 1;
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    for e in entries {
        put(&e.name, e.mode, &e.data, e.dev);
    }
    put("TRAILER!!!", 0, &[], (0, 0));
    out
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tmpfs tmp /tmp
for m in /modules/*.ko; do [ -e "$m" ] && insmod "$m"; done
ip link set lo up
echo SEER-SELFTEST-BEGIN
RUST_LOG=error /seer-agent selftest --json
echo SEER-SELFTEST-END rc=$?
mount --bind /dev/null /sys/kernel/btf/vmlinux
echo SEER-NOBTF-BEGIN
RUST_LOG=error /seer-agent doctor --json --iface lo
echo SEER-NOBTF-END rc=$?
poweroff -f
"#;

/// Modules the guest loads for tc on kernels without TCX (clsact qdisc, cls_bpf), when the
/// kernel package has them uncompressed (busybox insmod cannot read .ko.xz; 6.12 has TCX).
fn tc_modules(kernel_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for base in ["lib/modules", "usr/lib/modules"] {
        let Ok(rd) = std::fs::read_dir(kernel_dir.join(base)) else {
            continue;
        };
        for ver in rd.flatten() {
            for m in ["sch_ingress.ko", "cls_bpf.ko"] {
                let p = ver.path().join("kernel/net/sched").join(m);
                if p.exists() {
                    out.push(p);
                }
            }
        }
    }
    out
}

fn initramfs(agent: &Path, busybox: &Path, modules: &[PathBuf], dst: &Path) -> Result<()> {
    let dir = |p: &str| CpioEntry {
        name: p.into(),
        mode: 0o040755,
        data: Vec::new(),
        dev: (0, 0),
    };
    let file = |p: &str, data: Vec<u8>| CpioEntry {
        name: p.into(),
        mode: 0o100755,
        data,
        dev: (0, 0),
    };
    let entries = vec![
        dir("bin"),
        dir("dev"),
        dir("proc"),
        dir("sys"),
        dir("tmp"),
        dir("run"),
        CpioEntry {
            name: "dev/console".into(),
            mode: 0o020600,
            data: Vec::new(),
            dev: (5, 1),
        },
        file("init", INIT.as_bytes().to_vec()),
        file("bin/busybox", std::fs::read(busybox)?),
        file("seer-agent", std::fs::read(agent)?),
        dir("modules"),
    ];
    let mut entries = entries;
    for m in modules {
        let name = m
            .file_name()
            .and_then(|n| n.to_str())
            .context("module name")?;
        entries.push(file(&format!("modules/{name}"), std::fs::read(m)?));
    }
    let raw = cpio(&entries);
    let mut gz = Command::new("gzip")
        .arg("-1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = gz.stdin.take().context("gzip stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(&raw));
    let out = gz.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("gzip writer panicked"))??;
    std::fs::write(dst, out.stdout)?;
    Ok(())
}

fn between<'a>(text: &'a str, begin: &str, end: &str) -> Option<&'a str> {
    let a = text.find(begin)? + begin.len();
    let b = text[a..].find(end)? + a;
    Some(text[a..b].trim())
}

struct Outcome {
    label: String,
    ok: bool,
    summary: String,
}

fn boot(label: &str, vmlinuz: &Path, initrd: &Path) -> Result<Outcome> {
    let t0 = Instant::now();
    let out = Command::new("timeout")
        .args([
            "300",
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            "1G",
            "-smp",
            "1",
        ])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 quiet",
            "-nographic",
            "-no-reboot",
            "-nodefaults",
            "-serial",
            "stdio",
        ])
        .output()
        .context("running qemu-system-x86_64")?;
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let log_path = Path::new(CACHE).join(format!("kernels/{}.log", label.replace(' ', "-")));
    std::fs::write(&log_path, &text)?;
    let Some(json) = between(&text, "SEER-SELFTEST-BEGIN", "SEER-SELFTEST-END") else {
        return Ok(Outcome {
            label: label.into(),
            ok: false,
            summary: format!("no selftest output (serial log: {})", log_path.display()),
        });
    };
    let line = json
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("{}");
    let v: Value = serde_json::from_str(line).unwrap_or_default();
    let checks = v["checks"].as_array().cloned().unwrap_or_default();
    let passed = checks.iter().filter(|c| c["ok"] == true).count();
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| format!("{} (got {} want {})", c["check"], c["got"], c["want"]))
        .collect();
    let skipped: Vec<String> = checks
        .iter()
        .filter(|c| c["ok"].is_null())
        .map(|c| c["check"].as_str().unwrap_or("").to_string())
        .collect();
    let hooks: Vec<String> = v["hooks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["program"].as_str().map(str::to_string))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let nobtf = between(&text, "SEER-NOBTF-BEGIN", "SEER-NOBTF-END").unwrap_or("");
    let nobtf_clear = nobtf.contains("\"ok\":false") && nobtf.contains("BTF");
    // The queue gauges must work everywhere; everything else may be missing, but never wrong.
    let core = [
        "rx_queue_bytes (full walk) == /proc/net/tcp",
        "accept_backlog == /proc/net/tcp",
    ];
    let core_ok = core
        .iter()
        .all(|n| checks.iter().any(|c| c["check"] == *n && c["ok"] == true));
    let ok = failed.is_empty() && core_ok && nobtf_clear && v["kernel"].is_string();
    let summary = format!(
        "kernel {}, {:.0} s: programs [{}]; checks {} passed, {} failed{}, skipped: [{}]; no-BTF error clear: {}",
        v["kernel"].as_str().unwrap_or("?"),
        t0.elapsed().as_secs_f64(),
        hooks.join(" "),
        passed,
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" {failed:?}")
        },
        skipped.join("; "),
        nobtf_clear,
    );
    Ok(Outcome {
        label: label.into(),
        ok,
        summary,
    })
}

pub fn kernels() -> Result<()> {
    step("kernel matrix under QEMU (5.10, 6.1, 6.12)");
    ensure_qemu()?;
    let opts = private_apt("kernels", &["bullseye", "bookworm", "trixie"])?;
    let kdir = Path::new(CACHE).join("kernels");
    let bb = fetch_deb(
        &opts,
        &resolve_named(&opts, "busybox-static", "1:1.35")?,
        &kdir,
    )?
    .join("bin/busybox");
    let mut images = Vec::new();
    for (label, prefix) in KERNELS {
        let pkg = resolve_kernel(&opts, prefix)?;
        let dir = fetch_deb(&opts, &pkg, &kdir)?;
        let vmlinuz = std::fs::read_dir(dir.join("boot"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("vmlinuz"))
            })
            .with_context(|| format!("no vmlinuz in {}", dir.display()))?;
        images.push((label.to_string(), vmlinuz, tc_modules(&dir)));
    }
    println!("[kernels] building a static seer-agent");
    let root = util::root();
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .args([
                "build",
                "--release",
                "-p",
                "seer-agent",
                "--target",
                "x86_64-unknown-linux-gnu",
                "--target-dir",
                "target/static",
            ]),
    )?;
    let agent = root.join("target/static/x86_64-unknown-linux-gnu/release/seer-agent");
    let mut outcomes = Vec::new();
    for (label, vmlinuz, modules) in &images {
        let initrd = kdir.join(format!("initramfs-{}.gz", label.replace(' ', "-")));
        initramfs(&agent, &bb, modules, &initrd)?;
        println!("[kernels] booting {label} ...");
        let o = boot(label, vmlinuz, &initrd)?;
        println!(
            "  {} {}: {}",
            if o.ok { "ok  " } else { "FAIL" },
            o.label,
            o.summary
        );
        outcomes.push(o);
    }
    println!("\nkernel matrix:");
    for o in &outcomes {
        println!(
            "  {} {:<14} {}",
            if o.ok { "ok  " } else { "FAIL" },
            o.label,
            o.summary
        );
    }
    if outcomes.iter().any(|o| !o.ok) {
        bail!(
            "the kernel matrix failed (serial logs in {}/kernels/*.log)",
            CACHE
        );
    }
    Ok(())
}

/// The newest version of `name` whose version starts with `prefix`, as `name=version`.
fn resolve_named(opts: &[String], name: &str, prefix: &str) -> Result<String> {
    let text = output(Command::new("apt-cache").args(opts).args(["show", name]))?;
    text.split("\n\n")
        .filter_map(|p| {
            p.lines()
                .find_map(|l| l.strip_prefix("Version:"))
                .map(str::trim)
        })
        .find(|v| v.starts_with(prefix))
        .map(|v| format!("{name}={v}"))
        .with_context(|| format!("no {name} {prefix}* in the private apt lists"))
}
