//! Builds the eBPF programs (`seer-ebpf`) with the nightly toolchain and `bpf-linker`, and puts
//! the object in OUT_DIR for `include_bytes_aligned!`. `cargo xtask setup` installs both.
use std::path::PathBuf;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest
        .join("../seer-ebpf")
        .canonicalize()
        .context("seer-ebpf directory")?;
    let root = root.to_str().context("non-UTF-8 path to seer-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "seer-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context(
        "building the eBPF programs failed: run `cargo xtask setup` (nightly rust-src, bpf-linker)",
    )
}
