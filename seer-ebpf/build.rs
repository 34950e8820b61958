//! Rebuild the eBPF programs when the `bpf-linker` binary changes: building this crate has an
//! undeclared dependency on it (cargo has no stable artifact dependencies yet).
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!(
            "cargo:warning=bpf-linker not found on PATH: run `cargo xtask setup` to install it"
        ),
    }
}
