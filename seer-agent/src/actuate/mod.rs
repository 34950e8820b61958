//! Actions that give a culprit service the resource it is short of: L3 cache ways and memory
//! bandwidth (resctrl), egress bandwidth (tc HTB), CPU (cgroup quota, weight, cpuset).
//!
//! Every change goes through the [`Actuator`], which journals it before applying it
//! ([`journal`]), undoes everything on [`Actuator::undo_all`], and at start undoes what a
//! crashed earlier run left. `crate::respond::policy` decides what to do; in `recommend` and `dry-run` modes
//! nothing here is called.
pub mod cgroup;
#[cfg(test)]
mod cgroup_tests;
pub mod enforce;
pub mod htb;
pub mod journal;

pub mod resctrl;
#[cfg(test)]
mod resctrl_emu;
#[cfg(test)]
mod resctrl_tests;
#[cfg(test)]
pub(crate) mod testutil;
#[cfg(test)]
mod undo_tests;

use std::path::Path;

use cgroup::{CgroupError, CpuAction, CpuCgroup};
use htb::{HtbError, HtbPlan};
use journal::{Change, Entry, Journal, JournalError};
use resctrl::{Resctrl, ResctrlError};

#[derive(Debug, thiserror::Error)]
pub enum ActuateError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Resctrl(#[from] ResctrlError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Htb(#[from] HtbError),
    #[error("{0}")]
    Refused(String),
}

/// What an undo did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UndoReport {
    /// Changes put back.
    pub restored: usize,
    /// Changes whose object no longer exists (a cgroup removed after its service exited, an
    /// interface deleted): nothing to restore, entry dropped.
    pub gone: usize,
    /// Changes that could not be undone; they stay in the journal for the next try.
    pub failed: Vec<String>,
}

pub struct Actuator {
    journal: Journal,
    resctrl: Option<Resctrl>,
}

impl Actuator {
    /// Opens the journal at `path` and undoes whatever a previous run left in it (a crash, a
    /// kill -9). `resctrl` is `None` on hosts without it.
    pub fn open(path: &Path, resctrl: Option<Resctrl>) -> Result<(Self, UndoReport), ActuateError> {
        let journal = Journal::open(path)?;
        let mut a = Actuator { journal, resctrl };
        let left = a.journal.entries().len();
        let report = if left > 0 {
            log::warn!(
                "actuate: a previous run left {left} change(s) in {}: undoing them",
                path.display()
            );
            a.undo_all()
        } else {
            UndoReport::default()
        };
        Ok((a, report))
    }

    /// Opens the journal and keeps what it holds in effect (to undo one service by hand).
    pub fn open_keep(path: &Path, resctrl: Option<Resctrl>) -> Result<Self, ActuateError> {
        Ok(Actuator {
            journal: Journal::open(path)?,
            resctrl,
        })
    }

    #[cfg(test)]
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    #[cfg(test)]
    pub fn resctrl(&self) -> Option<&Resctrl> {
        self.resctrl.as_ref()
    }

    pub fn cpu(
        &mut self,
        service: &str,
        cg: &CpuCgroup,
        action: &CpuAction,
    ) -> Result<(), ActuateError> {
        Ok(cg.apply(&mut self.journal, service, action)?)
    }

    /// The value a cgroup file had before seer's first change to it, if seer changed it.
    pub fn journaled_old(&self, path: &Path) -> Option<String> {
        self.journal.entries().iter().find_map(|e| match &e.change {
            Change::CgroupFile { path: p, old, .. } if p == path => Some(old.clone()),
            _ => None,
        })
    }

    /// Whether a change seer made to `service`'s cgroup CPU files is in effect.
    pub fn holds_cpu(&self, service: &str) -> bool {
        self.journal
            .entries()
            .iter()
            .any(|e| e.service == service && matches!(e.change, Change::CgroupFile { .. }))
    }

    pub fn htb(&mut self, plan: &HtbPlan) -> Result<(), ActuateError> {
        Ok(htb::apply(&mut self.journal, plan)?)
    }

    /// Gives `service` exclusive L3 ways and moves `pids` into its group.
    pub fn l3_ways(&mut self, service: &str, ways: u32, pids: &[u32]) -> Result<u64, ActuateError> {
        let r = available(&self.resctrl)?;
        let mask = r.set_l3_ways(&mut self.journal, service, ways)?;
        move_tasks(r, service, pids)?;
        Ok(mask)
    }

    /// Caps `service`'s memory bandwidth and moves `pids` into its group.
    pub fn mb(&mut self, service: &str, pct: u32, pids: &[u32]) -> Result<u32, ActuateError> {
        let r = available(&self.resctrl)?;
        let v = r.set_mb(&mut self.journal, service, pct)?;
        move_tasks(r, service, pids)?;
        Ok(v)
    }

    /// Gives back `service`'s resctrl group (its ways and bandwidth cap); the default group
    /// regrows only into ways nobody else holds.
    pub fn release_resctrl(&mut self, service: &str) -> UndoReport {
        let mut rep = UndoReport::default();
        let Some(r) = &self.resctrl else { return rep };
        let group = Change::ResctrlGroup {
            path: r.group_path(service),
        };
        if self.journal.entries().iter().any(|e| e.change == group) {
            match r.release(&mut self.journal, service) {
                Ok(()) => rep.restored += 1,
                Err(e) => {
                    log::error!("actuate: cannot release {service}'s resctrl group: {e}");
                    rep.failed.push(format!("{service}: {e}"));
                }
            }
        }
        rep
    }

    /// Restores `service`'s cgroup CPU files.
    pub fn undo_cpu(&mut self, service: &str) -> UndoReport {
        let ids: Vec<u64> = self
            .journal
            .entries()
            .iter()
            .rev()
            .filter(|e| e.service == service && matches!(e.change, Change::CgroupFile { .. }))
            .map(|e| e.id)
            .collect();
        self.undo_ids(&ids)
    }

    /// Undoes the changes made for one service (newest first), its resctrl group first.
    pub fn undo_service(&mut self, service: &str) -> UndoReport {
        let pre = self.release_resctrl(service);
        let ids: Vec<u64> = self
            .journal
            .entries()
            .iter()
            .rev()
            .filter(|e| e.service == service)
            .map(|e| e.id)
            .collect();
        let mut rep = self.undo_ids(&ids);
        rep.restored += pre.restored;
        rep.failed.extend(pre.failed);
        rep
    }

    /// As a killed process: nothing undone, the journal's lock released, the rest (an
    /// emulated resctrl tree) left in place.
    #[cfg(test)]
    pub fn crash(mut self) {
        self.journal.release_lock();
        std::mem::forget(self);
    }

    /// Undoes every recorded change, newest first; what fails stays journaled.
    pub fn undo_all(&mut self) -> UndoReport {
        let ids: Vec<u64> = self.journal.entries().iter().rev().map(|e| e.id).collect();
        self.undo_ids(&ids)
    }

    fn undo_ids(&mut self, ids: &[u64]) -> UndoReport {
        let mut rep = UndoReport::default();
        for id in ids {
            let Some(e) = self.journal.entries().iter().find(|e| e.id == *id).cloned() else {
                continue;
            };
            match self.undo_one(&e) {
                Ok(true) => rep.restored += 1,
                Ok(false) => {
                    log::info!(
                        "actuate: undo {:?} for {}: already gone",
                        e.change,
                        e.service
                    );
                    rep.gone += 1;
                }
                Err(err) => {
                    log::error!(
                        "actuate: cannot undo {:?} for {}: {err}",
                        e.change,
                        e.service
                    );
                    rep.failed.push(format!("{}: {err}", e.service));
                    continue;
                }
            }
            if let Err(err) = self.journal.forget(e.id) {
                log::error!("actuate: {err}");
                rep.failed.push(err.to_string());
            }
        }
        rep
    }

    fn undo_one(&self, e: &Entry) -> Result<bool, ActuateError> {
        let root = self
            .resctrl
            .as_ref()
            .map_or(Path::new(resctrl::DEFAULT_ROOT), |r| r.root());
        if let Some(why) = e.change.refusal(root) {
            return Err(ActuateError::Refused(format!(
                "journal entry {} ({}): {why}: not undone, kept in the journal (inspect it)",
                e.id, e.service
            )));
        }
        match &e.change {
            Change::CgroupFile { path, old, wrote } => {
                Ok(cgroup::restore(path, old, wrote.as_deref())?)
            }
            Change::ResctrlSchemata { path, old } => {
                let r = available(&self.resctrl)?;
                match r.restore_line(path, old) {
                    Ok(()) => Ok(true),
                    Err(ResctrlError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        Ok(false)
                    }
                    Err(err) => Err(err.into()),
                }
            }
            Change::ResctrlGroup { path } => Ok(available(&self.resctrl)?.remove_dir(path)?),
            Change::HtbRoot { iface, ifindex, .. } => Ok(htb::remove_root(iface, *ifindex)?),
        }
    }
}

fn available(r: &Option<Resctrl>) -> Result<&Resctrl, ActuateError> {
    r.as_ref().ok_or_else(|| {
        ActuateError::Resctrl(ResctrlError::Unavailable {
            root: resctrl::DEFAULT_ROOT.into(),
            reason: "no resctrl on this host (see `seer-agent act status`)".into(),
        })
    })
}

/// Moves each pid; one that exited in the meantime is logged and skipped (it needs no cache).
fn move_tasks(r: &Resctrl, service: &str, pids: &[u32]) -> Result<(), ResctrlError> {
    for &pid in pids {
        match r.move_task(service, pid) {
            Ok(()) => {}
            Err(ResctrlError::TaskGone { pid, .. }) => {
                log::info!("resctrl: {service}: task {pid} exited before it could be moved");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
