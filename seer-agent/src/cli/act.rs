//! `seer-agent act ...`: apply, inspect and undo seer's actions by hand (and from tests):
//! tc HTB, cgroup CPU, resctrl status, the journal, and the policy's recommendation.
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::actuate::{
    Actuator, UndoReport,
    cgroup::{CpuAction, CpuCgroup},
    enforce::{Enforcer, ServiceKnobs, nothing_raised},
    htb::{HtbClass, HtbPlan},
    journal::DEFAULT_JOURNAL,
    resctrl::{self, Resctrl},
};
use crate::respond::policy::{Control, Mode, Policy, PolicyConfig, SystemClock};

#[derive(Args, Clone, Debug)]
pub struct ActArgs {
    /// Action journal: every change is recorded here before it is applied.
    #[arg(long, default_value = DEFAULT_JOURNAL, global = true)]
    pub journal: PathBuf,
    /// resctrl mount point.
    #[arg(long, default_value = resctrl::DEFAULT_ROOT, global = true)]
    pub resctrl_root: PathBuf,
    /// Print what would be done and change nothing.
    #[arg(long, global = true)]
    pub dry_run: bool,
    #[command(subcommand)]
    pub what: ActWhat,
}

#[derive(Subcommand, Clone, Debug)]
pub enum ActWhat {
    /// Whether this host has resctrl, and what the journal holds.
    Status,
    /// Shape an interface's egress with HTB: one class per service, classified by source port.
    Htb {
        #[arg(long)]
        iface: String,
        /// The bottleneck rate, Mbit/s.
        #[arg(long)]
        link_mbit: u64,
        /// NAME:PORT[+PORT..]:RATE_MBIT:CEIL_MBIT[:PRIO] (repeatable), e.g. bulk:5001:20:20:7.
        #[arg(long = "class", required = true)]
        classes: Vec<String>,
    },
    /// Set a service's CPU (cgroup v1 or v2, found from its pid).
    Cpu {
        /// The service's name (for the journal and logs).
        #[arg(long)]
        service: String,
        /// A pid in the service's cgroup.
        #[arg(long)]
        pid: u32,
        /// CFS quota as percent of one CPU (period 100 ms).
        #[arg(long)]
        quota_pct: Option<u64>,
        /// Weight, cgroup v2 scale 1..=10000 (100 = default).
        #[arg(long)]
        weight: Option<u32>,
        /// Allowed CPUs ("0-1", "1").
        #[arg(long)]
        cpus: Option<String>,
    },
    /// Give a service exclusive L3 cache ways (resctrl CAT) and move its pids into its group.
    Cache {
        #[arg(long)]
        service: String,
        #[arg(long)]
        ways: u32,
        #[arg(long = "pid")]
        pids: Vec<u32>,
    },
    /// Cap a service's memory bandwidth (resctrl MBA), percent.
    Membw {
        #[arg(long)]
        service: String,
        #[arg(long)]
        pct: u32,
        #[arg(long = "pid")]
        pids: Vec<u32>,
    },
    /// Undo everything the journal holds (also what a crashed run left), or one service's.
    Undo {
        #[arg(long)]
        service: Option<String>,
    },
    /// The policy's answer to one alert (culprit short of a resource), carried out per
    /// --mode; prints the decision and each outcome as JSON.
    Respond {
        #[arg(long)]
        culprit: String,
        /// cpu, llc, membw or net.
        #[arg(long, value_parser = parse_resource)]
        resource: Control,
        /// Services sharing the resource, heaviest first.
        #[arg(long = "antagonist")]
        antagonists: Vec<String>,
        /// enforce (apply, journaled), recommend (print for the cluster manager), dry-run.
        #[arg(long, value_enum, default_value = "recommend")]
        mode: super::ModeArg,
        /// NAME=PID: where a service lives (its cgroup is found from the pid); repeatable.
        #[arg(long = "target")]
        targets: Vec<String>,
    },
}

fn parse_resource(s: &str) -> Result<Control, String> {
    match s {
        "cpu" => Ok(Control::Cpu),
        "llc" => Ok(Control::Llc),
        "membw" => Ok(Control::MemBw),
        "net" => Ok(Control::Net),
        _ => Err(format!("unknown resource {s:?}: cpu, llc, membw or net")),
    }
}

fn parse_class(s: &str, minor: u16) -> anyhow::Result<HtbClass> {
    let f: Vec<&str> = s.split(':').collect();
    if !(4..=5).contains(&f.len()) {
        bail!("--class {s:?}: expected NAME:PORT[+PORT..]:RATE_MBIT:CEIL_MBIT[:PRIO]");
    }
    let ports = f[1]
        .split('+')
        .map(|p| {
            p.parse::<u16>()
                .with_context(|| format!("--class {s:?}: port {p:?}"))
        })
        .collect::<anyhow::Result<Vec<u16>>>()?;
    let mbit = |v: &str| -> anyhow::Result<u64> {
        Ok(v.parse::<u64>()
            .with_context(|| format!("--class {s:?}: rate {v:?}"))?
            * 1_000_000)
    };
    Ok(HtbClass {
        service: f[0].into(),
        minor,
        rate_bps: mbit(f[2])?,
        ceil_bps: mbit(f[3])?,
        prio: f
            .get(4)
            .map_or(Ok(0), |p| p.parse())
            .with_context(|| format!("--class {s:?}: prio"))?,
        sports: ports,
    })
}

fn resctrl_of(a: &ActArgs) -> Option<Resctrl> {
    match Resctrl::probe(&a.resctrl_root) {
        Ok(r) => Some(r),
        Err(e) => {
            log::info!("{e}");
            None
        }
    }
}

fn print_undo(what: &str, rep: &UndoReport) {
    println!(
        "{what}: {} restored, {} already gone, {} failed",
        rep.restored,
        rep.gone,
        rep.failed.len()
    );
}

/// The actuator; what a previous (crashed) run left is undone first, and said so.
fn open(a: &ActArgs) -> anyhow::Result<(Actuator, UndoReport)> {
    let (act, rep) = Actuator::open(&a.journal, resctrl_of(a))?;
    Ok((act, rep))
}

fn open_quiet(a: &ActArgs) -> anyhow::Result<Actuator> {
    let (act, rep) = open(a)?;
    if rep != UndoReport::default() {
        print_undo("undid what a previous run left", &rep);
    }
    Ok(act)
}

pub fn act(a: &ActArgs) -> anyhow::Result<()> {
    match &a.what {
        ActWhat::Status => {
            match Resctrl::probe(&a.resctrl_root) {
                Ok(r) => println!(
                    "resctrl: available at {} ({:?}, {:?})",
                    r.root().display(),
                    r.l3,
                    r.mb
                ),
                Err(e) => println!("resctrl: {e}"),
            }
            let j = crate::actuate::journal::Journal::peek(&a.journal)?;
            println!(
                "journal {}: {} change(s) in effect",
                a.journal.display(),
                j.entries().len()
            );
            for e in j.entries() {
                println!("  {} {}", e.service, serde_json::to_string(&e.change)?);
            }
        }
        ActWhat::Htb {
            iface,
            link_mbit,
            classes,
        } => {
            let classes = classes
                .iter()
                .enumerate()
                .map(|(i, c)| parse_class(c, 0x10 + i as u16))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let plan = HtbPlan {
                iface: iface.clone(),
                link_bps: link_mbit * 1_000_000,
                classes,
            };
            plan.validate()?;
            if a.dry_run {
                println!("dry-run: would install {plan:?}");
                return Ok(());
            }
            open_quiet(a)?.htb(&plan)?;
            println!("htb installed on {iface}; `seer-agent act undo` removes it");
        }
        ActWhat::Cpu {
            service,
            pid,
            quota_pct,
            weight,
            cpus,
        } => {
            let cg = CpuCgroup::of_pid(*pid)?;
            let mut actions = Vec::new();
            if let Some(q) = quota_pct {
                actions.push(CpuAction::Quota {
                    quota_us: q * 1000,
                    period_us: 100_000,
                });
            }
            if let Some(w) = weight {
                actions.push(CpuAction::Weight(*w));
            }
            if let Some(c) = cpus {
                actions.push(CpuAction::Cpus(c.clone()));
            }
            if actions.is_empty() {
                bail!("nothing to do: give --quota-pct, --weight or --cpus");
            }
            if a.dry_run {
                for act in &actions {
                    println!(
                        "dry-run: {service} ({cg:?}): would write {:?}",
                        cg.writes(act)?
                    );
                }
                return Ok(());
            }
            let mut act = open_quiet(a)?;
            for x in &actions {
                act.cpu(service, &cg, x)?;
            }
            println!("{service}: applied {actions:?}; `seer-agent act undo` restores it");
        }
        ActWhat::Cache {
            service,
            ways,
            pids,
        } => {
            if a.dry_run {
                println!("dry-run: would give {service} {ways} exclusive L3 ways, tasks {pids:?}");
                return Ok(());
            }
            let mask = open_quiet(a)?.l3_ways(service, *ways, pids)?;
            println!("{service}: L3 ways {mask:#x}");
        }
        ActWhat::Membw { service, pct, pids } => {
            if a.dry_run {
                println!("dry-run: would cap {service} at {pct}% memory bandwidth, tasks {pids:?}");
                return Ok(());
            }
            let v = open_quiet(a)?.mb(service, *pct, pids)?;
            println!("{service}: memory bandwidth {v}%");
        }
        ActWhat::Undo { service } => {
            // Opening the journal undoes every change it holds (as after a crash); with
            // --service only that service's changes are undone and the rest stays.
            let mut rep = match service {
                Some(s) => {
                    let mut act = Actuator::open_keep(&a.journal, resctrl_of(a))?;
                    act.undo_service(s)
                }
                None => open(a)?.1,
            };
            rep.failed.sort();
            print_undo("undo", &rep);
            if !rep.failed.is_empty() {
                bail!(
                    "could not undo: {:?} (kept in {})",
                    rep.failed,
                    a.journal.display()
                );
            }
        }
        ActWhat::Respond {
            culprit,
            resource,
            antagonists,
            mode,
            targets,
        } => {
            let mode = if a.dry_run {
                Mode::DryRun
            } else {
                Mode::from(*mode)
            };
            let mut p = Policy::new(
                PolicyConfig {
                    mode,
                    ..Default::default()
                },
                SystemClock::default(),
            );
            let d = p.on_alert(culprit, *resource, antagonists);
            println!("{}", serde_json::to_string(&d)?);
            let mut e = Enforcer::new(if mode == Mode::Enforce {
                open_quiet(a)?
            } else {
                Actuator::open_keep(&a.journal, None)?
            });
            for t in targets {
                let (name, pid) = t
                    .split_once('=')
                    .with_context(|| format!("--target {t:?}: expected NAME=PID"))?;
                let pid: u32 = pid
                    .parse()
                    .with_context(|| format!("--target {t:?}: pid"))?;
                let cpu = match CpuCgroup::of_pid(pid) {
                    Ok(c) => Some(c),
                    Err(err) => {
                        log::warn!("{err}");
                        None
                    }
                };
                e.targets.insert(
                    name.into(),
                    ServiceKnobs {
                        cpu,
                        pids: vec![pid],
                    },
                );
            }
            let out = e.carry_out(&d);
            for o in &out {
                println!("{}", serde_json::to_string(o)?);
            }
            // A culprit with no CPU quota has nothing to raise: its antagonists' step, at once.
            if let Some(r) = nothing_raised(&out, culprit) {
                p.cannot_grow(culprit, r);
                let d = p.on_alert(culprit, r, antagonists);
                println!("{}", serde_json::to_string(&d)?);
                for o in e.carry_out(&d) {
                    println!("{}", serde_json::to_string(&o)?);
                }
            }
        }
    }
    Ok(())
}
