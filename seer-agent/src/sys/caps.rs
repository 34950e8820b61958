//! Capabilities: checked before loading (with a message that names what is missing) and dropped
//! after attaching to what the sampler still needs.
use caps::{CapSet, Capability};

/// What loading and attaching needs: the name to print and why.
const NEEDED_TO_ATTACH: &[(Capability, &str)] = &[
    (Capability::CAP_BPF, "load eBPF programs and create maps"),
    (
        Capability::CAP_PERFMON,
        "attach tracepoints and read kernel memory from eBPF",
    ),
    (
        Capability::CAP_NET_ADMIN,
        "attach the tc ingress counter to interfaces",
    ),
];

/// What the running sampler keeps, and why.
pub const KEPT_AFTER_ATTACH: &[(Capability, &str)] = &[
    (
        Capability::CAP_BPF,
        "bpf(2) map reads and a new TCP iterator instance every tick",
    ),
    (
        Capability::CAP_SYS_PTRACE,
        "read /proc/<pid>/fd of other users' services (discovery)",
    ),
    (
        Capability::CAP_DAC_READ_SEARCH,
        "list /proc/<pid>/fd of other users' services",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error(
        "missing capabilities: {missing}. Run seer-agent as root, or grant them \
         (systemd: AmbientCapabilities={caps}; file: setcap {lower}+ep seer-agent)"
    )]
    Missing {
        missing: String,
        caps: String,
        lower: String,
    },
    #[error("changing capabilities failed: {0}")]
    Set(String),
}

/// Fails, naming each missing capability and what it is for, unless all attach needs are met.
/// CAP_SYS_ADMIN stands in for all three, as on kernels before 5.8.
pub fn check_can_attach() -> Result<(), CapsError> {
    let has = |c| caps::has_cap(None, CapSet::Effective, c).unwrap_or(false);
    if has(Capability::CAP_SYS_ADMIN) && has(Capability::CAP_NET_ADMIN) {
        return Ok(());
    }
    let missing: Vec<_> = NEEDED_TO_ATTACH.iter().filter(|(c, _)| !has(*c)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(CapsError::Missing {
        missing: missing
            .iter()
            .map(|(c, why)| format!("{c} (to {why})"))
            .collect::<Vec<_>>()
            .join(", "),
        caps: missing
            .iter()
            .map(|(c, _)| c.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        lower: missing
            .iter()
            .map(|(c, _)| c.to_string().to_lowercase())
            .collect::<Vec<_>>()
            .join(","),
    })
}

/// Drops every capability except [`KEPT_AFTER_ATTACH`] and `extra` (what the configured
/// response needs, e.g. CAP_NET_ADMIN to change tc classes) from the effective, permitted and
/// inheritable sets, and logs what it keeps and why.
pub fn drop_after_attach(extra: &[(Capability, &'static str)]) -> Result<(), CapsError> {
    let all: Vec<(Capability, &str)> = KEPT_AFTER_ATTACH
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect();
    let keep: caps::CapsHashSet = all.iter().map(|(c, _)| *c).collect();
    let have = caps::read(None, CapSet::Permitted).map_err(|e| CapsError::Set(e.to_string()))?;
    let keep: caps::CapsHashSet = keep.intersection(&have).copied().collect();
    for set in [CapSet::Effective, CapSet::Inheritable, CapSet::Permitted] {
        let target = if matches!(set, CapSet::Inheritable) {
            caps::CapsHashSet::new()
        } else {
            keep.clone()
        };
        caps::set(None, set, &target).map_err(|e| CapsError::Set(format!("{set:?}: {e}")))?;
    }
    let dropped = have.len().saturating_sub(keep.len());
    for (c, why) in &all {
        if keep.contains(c) {
            log::info!("keeping {c}: {why}");
        }
    }
    log::info!("dropped {dropped} other capabilities after attaching");
    Ok(())
}
