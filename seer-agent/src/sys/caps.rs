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
/// response needs, e.g. CAP_NET_ADMIN to change tc classes), for good:
/// 1. the bounding set loses the rest (nothing exec'd later, `tc` at exit included, can get
///    them back), the ambient set is emptied;
/// 2. the effective and permitted sets keep only those, the inheritable set nothing;
/// 3. `PR_SET_NO_NEW_PRIVS`: no execve ever grants more (set-uid, file capabilities);
/// 4. the steady state's seccomp filter ([`super::seccomp`]) on every thread.
///
/// Capabilities belong to a thread: call this before the agent starts any thread (the store's
/// writer, the diagnosis), or those threads keep everything. [`threads_agree`] checks it.
/// Logs what it keeps and why; step 4 failing is logged, not fatal.
pub fn drop_after_attach(extra: &[(Capability, &'static str)]) -> Result<(), CapsError> {
    let all: Vec<(Capability, &str)> = KEPT_AFTER_ATTACH
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect();
    restrict_to(&all, log::Level::Info)
}

/// What the commands that only read the store and write files or answers (`export`, `query`)
/// keep: nothing. As uid 0 they still open root's 0700 store; they cannot load programs,
/// trace, or write files root does not own.
pub const FOR_STORE_READERS: &[(Capability, &str)] = &[];

/// What `seer-agent act` keeps: cgroup and resctrl files are root's own (no capability
/// needed as uid 0); tc classes need CAP_NET_ADMIN.
pub const FOR_ACT: &[(Capability, &str)] = &[(
    Capability::CAP_NET_ADMIN,
    "change tc HTB classes and qdiscs",
)];

/// What `seer-agent diagnose` keeps once it has entered the service's network namespace.
pub const FOR_DIAGNOSE: &[(Capability, &str)] = &[
    (
        Capability::CAP_PERFMON,
        "count the culprit's cgroup with hardware counters (private mode)",
    ),
    (
        Capability::CAP_SYS_NICE,
        "hold the LLC reading at SCHED_FIFO / nice -20",
    ),
    (
        Capability::CAP_SYS_PTRACE,
        "read /proc/<pid> of another user's service",
    ),
    (
        Capability::CAP_DAC_READ_SEARCH,
        "read /proc/<pid>/fd of another user's service",
    ),
    (
        Capability::CAP_DAC_OVERRIDE,
        "write the disk microbenchmark's unnamed file in the culprit's own directory",
    ),
];

/// Keeps only `all` (those the process has), for good, as described at [`drop_after_attach`].
/// For a non-root user without CAP_SETPCAP it fails at the bounding set and changes nothing.
pub fn restrict_to(all: &[(Capability, &'static str)], level: log::Level) -> Result<(), CapsError> {
    let keep: caps::CapsHashSet = all.iter().map(|(c, _)| *c).collect();
    let have = caps::read(None, CapSet::Permitted).map_err(|e| CapsError::Set(e.to_string()))?;
    let keep: caps::CapsHashSet = keep.intersection(&have).copied().collect();
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes next.
    let bounding = caps::read(None, CapSet::Bounding).map_err(|e| CapsError::Set(e.to_string()))?;
    for c in bounding.difference(&keep) {
        caps::drop(None, CapSet::Bounding, *c)
            .map_err(|e| CapsError::Set(format!("bounding set, {c}: {e}")))?;
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| CapsError::Set(format!("ambient: {e}")))?;
    for set in [CapSet::Effective, CapSet::Inheritable, CapSet::Permitted] {
        let target = if matches!(set, CapSet::Inheritable) {
            caps::CapsHashSet::new()
        } else {
            keep.clone()
        };
        caps::set(None, set, &target).map_err(|e| CapsError::Set(format!("{set:?}: {e}")))?;
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(CapsError::Set(format!(
            "no_new_privs: {}",
            std::io::Error::last_os_error()
        )));
    }
    let dropped = have.len().saturating_sub(keep.len());
    for (c, why) in all {
        if keep.contains(c) {
            log::log!(level, "keeping {c}: {why}");
        }
    }
    log::log!(
        level,
        "dropped {dropped} other capabilities (bounding set too); no new privileges"
    );
    match super::seccomp::install() {
        Ok(()) => log::log!(
            level,
            "seccomp: {} system calls refused from now on ({})",
            super::seccomp::DENIED.len(),
            super::seccomp::DENIED
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Err(e) => log::warn!("seccomp: the filter is not installed: {e}"),
    }
    if let Err(e) = threads_agree() {
        log::error!("{e}");
    }
    Ok(())
}

/// Every thread of this process has the same effective capabilities as this one; the first
/// that does not is named (a thread started before [`drop_after_attach`] keeps everything).
pub fn threads_agree() -> Result<(), String> {
    let field = |status: &str, key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
    };
    let me = std::fs::read_to_string("/proc/thread-self/status").map_err(|e| e.to_string())?;
    let mine = field(&me, "CapEff:");
    let tasks = std::fs::read_dir("/proc/self/task").map_err(|e| e.to_string())?;
    for t in tasks.flatten() {
        let Ok(st) = std::fs::read_to_string(t.path().join("status")) else {
            continue; // exited meanwhile
        };
        if field(&st, "CapEff:") != mine {
            return Err(format!(
                "thread {} ({}) kept capabilities {:?} (this one: {mine:?}): it was started before the drop",
                t.file_name().to_string_lossy(),
                field(&st, "Name:").unwrap_or_default(),
                field(&st, "CapEff:").unwrap_or_default()
            ));
        }
    }
    Ok(())
}
