//! Intel CAT / AMD L3 QoS and MBA through the resctrl filesystem: one group per service
//! (`seer-<service>`), contiguous L3 way masks and memory-bandwidth percentages in `schemata`,
//! the service's tasks moved into the group.
//!
//! The kernel this project is developed on has no resctrl (no CONFIG_X86_CPU_RESCTRL); the
//! tests run against `resctrl_emu`, an emulated tree with the kernel's file formats and write
//! errors. A host without resctrl gives [`ResctrlError::Unavailable`], never a crash.
//!
//! Way sharing: seer gives each service *exclusive* ways, carved from the top of the cache;
//! the default group keeps the contiguous block below them and never fewer than
//! `floor_ways`. A second service asking for ways that are taken gets the next free
//! contiguous block, or [`ResctrlError::WaysExhausted`] naming who holds them: overlapping
//! masks would not isolate anyone.
use std::{
    io,
    path::{Path, PathBuf},
};

use super::journal::{Change, Journal, JournalError};

/// The kernel's mount point.
pub const DEFAULT_ROOT: &str = "/sys/fs/resctrl";
/// Journal owner of the default group's shrunk mask.
pub const DEFAULT_GROUP_OWNER: &str = "resctrl:default";
/// Groups seer creates are named `seer-<service>`.
pub const GROUP_PREFIX: &str = "seer-";

pub use crate::sys::resctrlfs::{KernelFs, ResctrlFs};

#[derive(Debug, thiserror::Error)]
pub enum ResctrlError {
    #[error("CAT/MBA unavailable at {root}: {reason}")]
    Unavailable { root: PathBuf, reason: String },
    #[error(
        "L3 mask {mask:#x} refused: {reason} (cbm_mask {cbm_mask:#x}, min_cbm_bits {min_bits})"
    )]
    InvalidMask {
        mask: u64,
        reason: String,
        cbm_mask: u64,
        min_bits: u32,
    },
    #[error("memory bandwidth {pct}% refused: {reason}")]
    InvalidMb { pct: u32, reason: String },
    #[error("this host's resctrl has no {what} resource (info/{what} missing)")]
    NoResource { what: &'static str },
    #[error("the kernel refused `{line}` in {path}: {status}")]
    Refused {
        path: PathBuf,
        line: String,
        status: String,
    },
    #[error(
        "{service} asked for {wanted} exclusive L3 ways but only {free} are free above the default group's floor; held by: {holders:?}"
    )]
    WaysExhausted {
        service: String,
        wanted: u32,
        free: u32,
        holders: Vec<String>,
    },
    #[error(
        "cannot create {path}: all {num_closids} CLOSIDs are in use (remove an unused resctrl group)"
    )]
    NoClosid { path: PathBuf, num_closids: u32 },
    #[error("task {pid} is gone (exited before it could be moved into {path})")]
    TaskGone { pid: u32, path: PathBuf },
    #[error("permission denied on {path}: resctrl needs root (CAP_SYS_ADMIN)")]
    PermissionDenied { path: PathBuf },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> ResctrlError {
    if matches!(source.raw_os_error(), Some(libc::EACCES | libc::EPERM)) {
        ResctrlError::PermissionDenied { path: path.into() }
    } else {
        ResctrlError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L3Info {
    pub cbm_mask: u64,
    pub min_cbm_bits: u32,
    pub num_closids: u32,
}

impl L3Info {
    pub fn ways(&self) -> u32 {
        self.cbm_mask.count_ones()
    }

    /// The kernel's `cbm_validate` (arch/x86/kernel/cpu/resctrl/ctrlmondata.c), same messages.
    pub fn validate(&self, mask: u64) -> Result<(), String> {
        if (self.min_cbm_bits > 0 && mask == 0) || mask > self.cbm_mask {
            return Err("Mask out of range".into());
        }
        if mask == 0 {
            return Ok(());
        }
        let first = mask.trailing_zeros();
        let run = (mask >> first).trailing_ones();
        if (mask >> first) >> run != 0 {
            return Err(format!("The mask {mask:x} has non-consecutive 1-bits"));
        }
        if run < self.min_cbm_bits {
            return Err(format!(
                "Need at least {} bits in the mask",
                self.min_cbm_bits
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbInfo {
    pub min_bandwidth: u32,
    pub bandwidth_gran: u32,
}

impl MbInfo {
    /// The kernel's `bw_validate`: in [min_bandwidth, 100], rounded up to bandwidth_gran.
    pub fn validate(&self, pct: u32) -> Result<u32, String> {
        if pct < self.min_bandwidth || pct > 100 {
            return Err(format!(
                "MB value {pct} out of range [{},100]",
                self.min_bandwidth
            ));
        }
        let g = self.bandwidth_gran.max(1);
        Ok(pct.div_ceil(g) * g)
    }
}

/// One parsed schemata line: resource name and (domain id, value) pairs.
pub type SchemataLine = (String, Vec<(u32, String)>);

/// A schemata line: `L3:0=fff;1=fff` -> ("L3", [(0, "fff"), (1, "fff")]).
pub fn parse_line(line: &str) -> Option<SchemataLine> {
    let (res, doms) = line.trim().split_once(':')?;
    let mut out = Vec::new();
    for d in doms.split(';').filter(|d| !d.trim().is_empty()) {
        let (id, v) = d.split_once('=')?;
        out.push((id.trim().parse().ok()?, v.trim().to_string()));
    }
    Some((res.trim().to_string(), out))
}

fn format_line(res: &str, doms: &[(u32, String)]) -> String {
    let v: Vec<String> = doms.iter().map(|(d, v)| format!("{d}={v}")).collect();
    format!("{res}:{}\n", v.join(";"))
}

pub struct Resctrl {
    root: PathBuf,
    fs: Box<dyn ResctrlFs>,
    pub l3: Option<L3Info>,
    pub mb: Option<MbInfo>,
    /// Ways the default group always keeps (never below `min_cbm_bits`).
    pub floor_ways: u32,
}

impl std::fmt::Debug for Resctrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resctrl")
            .field("root", &self.root)
            .field("l3", &self.l3)
            .field("mb", &self.mb)
            .finish()
    }
}

impl Resctrl {
    /// The kernel's tree at `root` (usually [`DEFAULT_ROOT`]).
    pub fn probe(root: &Path) -> Result<Self, ResctrlError> {
        Self::probe_with(root, Box::new(KernelFs))
    }

    pub fn probe_with(root: &Path, fs: Box<dyn ResctrlFs>) -> Result<Self, ResctrlError> {
        let unavailable = |reason: String| ResctrlError::Unavailable {
            root: root.into(),
            reason,
        };
        if fs.list(&root.join("info")).is_err() {
            let in_kernel = std::fs::read_to_string("/proc/filesystems")
                .map(|s| s.lines().any(|l| l.trim_end().ends_with("resctrl")))
                .unwrap_or(false);
            return Err(unavailable(if in_kernel {
                format!(
                    "resctrl is not mounted (mount -t resctrl resctrl {})",
                    root.display()
                )
            } else {
                "this kernel has no resctrl (CONFIG_X86_CPU_RESCTRL off, or a CPU without \
                 RDT/PQoS); cache and memory-bandwidth actions are skipped, recommend-only"
                    .into()
            }));
        }
        let num = |p: &str, hex: bool| -> Option<u64> {
            let s = fs.read(&root.join("info").join(p)).ok()?;
            let s = s.trim();
            if hex {
                u64::from_str_radix(s, 16).ok()
            } else {
                s.parse().ok()
            }
        };
        let l3 = match (num("L3/cbm_mask", true), num("L3/num_closids", false)) {
            (Some(cbm_mask), Some(n)) => Some(L3Info {
                cbm_mask,
                min_cbm_bits: num("L3/min_cbm_bits", false).unwrap_or(1) as u32,
                num_closids: n as u32,
            }),
            _ => None,
        };
        let mb = num("MB/min_bandwidth", false).map(|m| MbInfo {
            min_bandwidth: m as u32,
            bandwidth_gran: num("MB/bandwidth_gran", false).unwrap_or(10) as u32,
        });
        if l3.is_none() && mb.is_none() {
            return Err(unavailable(
                "resctrl has neither L3 nor MB (info/L3, info/MB)".into(),
            ));
        }
        let floor_ways = l3.map_or(1, |l| l.min_cbm_bits.max(1));
        Ok(Resctrl {
            root: root.into(),
            fs,
            l3,
            mb,
            floor_ways,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn group_path(&self, service: &str) -> PathBuf {
        let name: String = service
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.root.join(format!("{GROUP_PREFIX}{name}"))
    }

    fn read_schemata(&self, dir: &Path) -> Result<Vec<SchemataLine>, ResctrlError> {
        let p = dir.join("schemata");
        let s = self.fs.read(&p).map_err(|e| io_err("read", &p, e))?;
        Ok(s.lines().filter_map(parse_line).collect())
    }

    /// Writes one resource's line; a kernel refusal carries `info/last_cmd_status`.
    fn write_line(&self, dir: &Path, line: &str) -> Result<(), ResctrlError> {
        let p = dir.join("schemata");
        match self.fs.write(&p, line) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let status = self
                    .fs
                    .read(&self.root.join("info/last_cmd_status"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|_| "EINVAL".into());
                Err(ResctrlError::Refused {
                    path: p,
                    line: line.trim().into(),
                    status,
                })
            }
            Err(e) => Err(io_err("write", &p, e)),
        }
    }

    /// Writes `line` exactly as given (no validation on our side): what the kernel says wins.
    #[cfg(test)]
    pub fn write_raw(&self, service: &str, line: &str) -> Result<(), ResctrlError> {
        self.write_line(&self.group_path(service), line)
    }

    /// Creates the service's group (journaled); an existing one is reused.
    pub fn create_group(&self, j: &mut Journal, service: &str) -> Result<PathBuf, ResctrlError> {
        let p = self.group_path(service);
        let change = Change::ResctrlGroup { path: p.clone() };
        let fresh = !j.holds(&change);
        j.record(service, change)?;
        match self.fs.mkdir(&p) {
            Ok(()) => {
                log::info!("resctrl: created group {}", p.display());
                Ok(p)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(p),
            Err(e) => {
                if fresh {
                    forget(j, &Change::ResctrlGroup { path: p.clone() });
                }
                Err(match e.raw_os_error() {
                    Some(libc::ENOSPC) => ResctrlError::NoClosid {
                        path: p,
                        num_closids: self.l3.map_or(0, |l| l.num_closids),
                    },
                    _ => io_err("mkdir", &p, e),
                })
            }
        }
    }

    /// Masks of L3 ways held by other seer groups: (service group name, mask).
    fn held_ways(&self, except: &Path) -> Result<Vec<(String, u64)>, ResctrlError> {
        let names = self
            .fs
            .list(&self.root)
            .map_err(|e| io_err("list", &self.root, e))?;
        let mut out = Vec::new();
        for n in names.into_iter().filter(|n| n.starts_with(GROUP_PREFIX)) {
            let dir = self.root.join(&n);
            if dir == except {
                continue;
            }
            for (res, doms) in self.read_schemata(&dir)? {
                if res == "L3"
                    && let Some((_, v)) = doms.first()
                    && let Ok(m) = u64::from_str_radix(v, 16)
                {
                    out.push((n.clone(), m));
                }
            }
        }
        Ok(out)
    }

    /// Gives `service` `ways` exclusive L3 ways (its group is created and the default group
    /// shrunk, both journaled). Returns the mask.
    pub fn set_l3_ways(
        &self,
        j: &mut Journal,
        service: &str,
        ways: u32,
    ) -> Result<u64, ResctrlError> {
        let l3 = self.l3.ok_or(ResctrlError::NoResource { what: "L3" })?;
        let group = self.group_path(service);
        let held = self.held_ways(&group)?;
        let taken = held.iter().fold(0u64, |a, (_, m)| a | m);
        let total = l3.ways();
        let floor = self.floor_ways.max(l3.min_cbm_bits);
        let free_above_floor = (floor..total).filter(|b| taken & (1 << b) == 0).count() as u32;
        let want = ways.max(l3.min_cbm_bits);
        let mask = (floor..=total.saturating_sub(want))
            .rev()
            .map(|start| ((1u64 << want) - 1) << start)
            .find(|m| m & taken == 0 && m & !l3.cbm_mask == 0)
            .ok_or_else(|| ResctrlError::WaysExhausted {
                service: service.into(),
                wanted: want,
                free: free_above_floor,
                holders: held.iter().map(|(n, _)| n.clone()).collect(),
            })?;
        l3.validate(mask)
            .map_err(|reason| ResctrlError::InvalidMask {
                mask,
                reason,
                cbm_mask: l3.cbm_mask,
                min_bits: l3.min_cbm_bits,
            })?;
        self.create_group(j, service)?;
        // Default group first: it must stop using those ways before they are handed out.
        self.shrink_default(j, taken | mask)?;
        self.write_l3(&group, mask)?;
        log::info!("resctrl: {service} gets L3 ways {mask:#x}");
        Ok(mask)
    }

    fn write_l3(&self, dir: &Path, mask: u64) -> Result<(), ResctrlError> {
        let doms = self
            .read_schemata(&self.root)?
            .into_iter()
            .find(|(r, _)| r == "L3")
            .map(|(_, d)| d)
            .unwrap_or_default();
        let doms: Vec<(u32, String)> = doms
            .into_iter()
            .map(|(d, _)| (d, format!("{mask:x}")))
            .collect();
        self.write_line(dir, &format_line("L3", &doms))
    }

    /// The default group keeps the contiguous ways below everything seer handed out, or its
    /// original mask once nothing is handed out.
    fn shrink_default(&self, j: &mut Journal, taken: u64) -> Result<(), ResctrlError> {
        let Some(l3) = self.l3 else { return Ok(()) };
        let root_schemata = self.root.join("schemata");
        let original = self
            .read_schemata(&self.root)?
            .into_iter()
            .find(|(r, _)| r == "L3")
            .map(|(r, d)| format_line(&r, &d))
            .unwrap_or_default();
        let change = Change::ResctrlSchemata {
            path: root_schemata,
            old: original,
        };
        if taken == 0 {
            return Ok(());
        }
        let low = taken.trailing_zeros();
        let keep = ((1u64 << low) - 1) & l3.cbm_mask;
        // Journaled under the default group, not `service`: undoing one service must not
        // hand the default group ways another service still holds exclusively.
        j.record(DEFAULT_GROUP_OWNER, change)?;
        self.write_l3(&self.root, keep)
    }

    /// Sets the service's memory-bandwidth cap (percent, rounded up as the kernel does).
    pub fn set_mb(&self, j: &mut Journal, service: &str, pct: u32) -> Result<u32, ResctrlError> {
        let mb = self.mb.ok_or(ResctrlError::NoResource { what: "MB" })?;
        let v = mb
            .validate(pct)
            .map_err(|reason| ResctrlError::InvalidMb { pct, reason })?;
        let group = self.create_group(j, service)?;
        let doms = self
            .read_schemata(&self.root)?
            .into_iter()
            .find(|(r, _)| r == "MB")
            .map(|(_, d)| d)
            .unwrap_or_default();
        let doms: Vec<(u32, String)> = doms.into_iter().map(|(d, _)| (d, v.to_string())).collect();
        self.write_line(&group, &format_line("MB", &doms))?;
        log::info!("resctrl: {service} memory bandwidth capped at {v}%");
        Ok(v)
    }

    /// Moves one task (thread id) into the service's group.
    pub fn move_task(&self, service: &str, pid: u32) -> Result<(), ResctrlError> {
        let p = self.group_path(service).join("tasks");
        self.fs
            .write(&p, &format!("{pid}\n"))
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ESRCH) => ResctrlError::TaskGone {
                    pid,
                    path: p.clone(),
                },
                _ => io_err("write", &p, e),
            })
    }

    #[cfg(test)]
    pub fn tasks(&self, service: &str) -> Result<Vec<u32>, ResctrlError> {
        let p = self.group_path(service).join("tasks");
        let s = self.fs.read(&p).map_err(|e| io_err("read", &p, e))?;
        Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Removes a group (the kernel moves its tasks back to the default group); `Ok(false)` if
    /// it was already gone.
    pub fn remove_dir(&self, path: &Path) -> Result<bool, ResctrlError> {
        match self.fs.rmdir(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("rmdir", path, e)),
        }
    }

    /// Restores a schemata line recorded in the journal.
    pub fn restore_line(&self, schemata: &Path, line: &str) -> Result<(), ResctrlError> {
        let dir = schemata.parent().unwrap_or(&self.root);
        self.write_line(dir, line)
    }

    /// Gives a service's ways back: removes its group and regrows the default group.
    pub fn release(&self, j: &mut Journal, service: &str) -> Result<(), ResctrlError> {
        let group = self.group_path(service);
        self.remove_dir(&group)?;
        forget(
            j,
            &Change::ResctrlGroup {
                path: group.clone(),
            },
        );
        let taken = self.held_ways(&group)?.iter().fold(0u64, |a, (_, m)| a | m);
        let root_schemata = self.root.join("schemata");
        if taken == 0 {
            // Nothing handed out any more: the default group gets its original mask back.
            let rec = j.entries().iter().find_map(|e| match &e.change {
                Change::ResctrlSchemata { path, old } if *path == root_schemata => {
                    Some((e.id, old.clone()))
                }
                _ => None,
            });
            if let Some((id, old)) = rec {
                self.restore_line(&root_schemata, &old)?;
                j.forget(id)?;
            }
            return Ok(());
        }
        self.shrink_default(j, taken)
    }
}

/// Drops the journal entry for `change`'s object, logging (not failing) if that cannot be saved.
fn forget(j: &mut Journal, change: &Change) {
    let ids: Vec<u64> = j
        .entries()
        .iter()
        .filter(|e| e.change == *change)
        .map(|e| e.id)
        .collect();
    for id in ids {
        if let Err(e) = j.forget(id) {
            log::warn!("resctrl: {e}");
        }
    }
}
