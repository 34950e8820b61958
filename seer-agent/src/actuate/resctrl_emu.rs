//! An emulated resctrl tree for tests (this kernel has no resctrl): a temp directory laid out
//! like /sys/fs/resctrl, with the kernel's behaviour on writes: `schemata` lines are parsed and
//! validated as `rdtgroup_schemata_write` does (all-or-nothing, EINVAL with the reason in
//! `info/last_cmd_status`), `mkdir` fails with ENOSPC past `num_closids`, a new group starts
//! with full masks, writing a pid to `tasks` moves it out of every other group (ESRCH for a
//! pid that does not exist), and `rmdir` hands the group's tasks back to the default group.
use std::{
    io,
    path::{Path, PathBuf},
};

use super::{
    resctrl::{L3Info, MbInfo, ResctrlFs, parse_line},
    testutil::TempDir,
};

pub struct Emulated {
    pub dir: TempDir,
    l3: L3Info,
    mb: MbInfo,
    domains: Vec<u32>,
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

impl Emulated {
    /// `cbm_mask` e.g. 0xfff (12 ways), two L3 domains (sockets), MB min 10 gran 10.
    pub fn new(name: &str, cbm_mask: u64, min_cbm_bits: u32, num_closids: u32) -> Self {
        let dir = TempDir::new(name);
        let r = dir.path().to_path_buf();
        let w = |p: &str, s: &str| {
            let p = r.join(p);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, s).expect("write");
        };
        w("info/L3/cbm_mask", &format!("{cbm_mask:x}\n"));
        w("info/L3/min_cbm_bits", &format!("{min_cbm_bits}\n"));
        w("info/L3/num_closids", &format!("{num_closids}\n"));
        w("info/L3/shareable_bits", "0\n");
        w("info/MB/min_bandwidth", "10\n");
        w("info/MB/bandwidth_gran", "10\n");
        w("info/MB/num_closids", &format!("{num_closids}\n"));
        w("info/MB/delay_linear", "1\n");
        w("info/last_cmd_status", "ok\n");
        w("tasks", "1\n");
        w("cpus", "3\n");
        let e = Emulated {
            dir,
            l3: L3Info {
                cbm_mask,
                min_cbm_bits,
                num_closids,
            },
            mb: MbInfo {
                min_bandwidth: 10,
                bandwidth_gran: 10,
            },
            domains: vec![0, 1],
        };
        w("schemata", &e.default_schemata());
        e
    }

    /// A new view over a tree an earlier `Emulated` made (as after an agent restart).
    pub fn reopen(root: &Path) -> Self {
        let n = |p: &str, hex: bool| {
            let s = std::fs::read_to_string(root.join("info").join(p)).expect("info file");
            if hex {
                u64::from_str_radix(s.trim(), 16).expect("hex")
            } else {
                s.trim().parse().expect("number")
            }
        };
        Emulated {
            dir: TempDir::adopt(root),
            l3: L3Info {
                cbm_mask: n("L3/cbm_mask", true),
                min_cbm_bits: n("L3/min_cbm_bits", false) as u32,
                num_closids: n("L3/num_closids", false) as u32,
            },
            mb: MbInfo {
                min_bandwidth: n("MB/min_bandwidth", false) as u32,
                bandwidth_gran: n("MB/bandwidth_gran", false) as u32,
            },
            domains: vec![0, 1],
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn default_schemata(&self) -> String {
        let d = |v: String| -> String {
            let parts: Vec<String> = self.domains.iter().map(|d| format!("{d}={v}")).collect();
            parts.join(";")
        };
        format!(
            "    L3:{}\n    MB:{}\n",
            d(format!("{:x}", self.l3.cbm_mask)),
            d("100".into())
        )
    }

    fn status(&self, s: &str) {
        let _ = std::fs::write(
            self.dir.path().join("info/last_cmd_status"),
            format!("{s}\n"),
        );
    }

    fn groups(&self) -> Vec<PathBuf> {
        let mut v = vec![self.root()];
        if let Ok(rd) = std::fs::read_dir(self.root()) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() && e.file_name() != "info" {
                    v.push(p);
                }
            }
        }
        v
    }

    fn write_schemata(&self, p: &Path, s: &str) -> io::Result<()> {
        let mut cur: Vec<(String, Vec<(u32, String)>)> = std::fs::read_to_string(p)?
            .lines()
            .filter_map(parse_line)
            .collect();
        for line in s.lines().filter(|l| !l.trim().is_empty()) {
            let Some((res, doms)) = parse_line(line) else {
                self.status("Missing '=' or non-numeric domain");
                return Err(einval());
            };
            let Some(slot) = cur.iter_mut().find(|(r, _)| *r == res) else {
                self.status(&format!("Unknown or unsupported resource name '{res}'"));
                return Err(einval());
            };
            for (d, v) in doms {
                let Some(entry) = slot.1.iter_mut().find(|(id, _)| *id == d) else {
                    self.status("Unknown domain");
                    return Err(einval());
                };
                let value = if res == "L3" {
                    let Ok(m) = u64::from_str_radix(&v, 16) else {
                        self.status(&format!("Non-hex character in the mask {v}"));
                        return Err(einval());
                    };
                    if let Err(why) = self.l3.validate(m) {
                        self.status(&why);
                        return Err(einval());
                    }
                    format!("{m:x}")
                } else {
                    let Ok(n) = v.parse::<u32>() else {
                        self.status(&format!("Non-decimal digit in MB value {v}"));
                        return Err(einval());
                    };
                    match self.mb.validate(n) {
                        Ok(n) => n.to_string(),
                        Err(why) => {
                            self.status(&why);
                            return Err(einval());
                        }
                    }
                };
                entry.1 = value;
            }
        }
        let text: String = cur
            .iter()
            .map(|(r, d)| {
                let v: Vec<String> = d.iter().map(|(d, v)| format!("{d}={v}")).collect();
                format!("    {r}:{}\n", v.join(";"))
            })
            .collect();
        std::fs::write(p, text)?;
        self.status("ok");
        Ok(())
    }

    fn write_tasks(&self, p: &Path, s: &str) -> io::Result<()> {
        let pid: u32 = s.trim().parse().map_err(|_| einval())?;
        if !Path::new(&format!("/proc/{pid}")).exists() {
            self.status(&format!("No task {pid}"));
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        for g in self.groups() {
            let t = g.join("tasks");
            let rest: String = std::fs::read_to_string(&t)?
                .lines()
                .filter(|l| l.trim() != pid.to_string())
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(&t, rest)?;
        }
        let mut cur = std::fs::read_to_string(p)?;
        cur.push_str(&format!("{pid}\n"));
        std::fs::write(p, cur)
    }
}

impl ResctrlFs for Emulated {
    fn read(&self, p: &Path) -> io::Result<String> {
        std::fs::read_to_string(p)
    }

    fn write(&self, p: &Path, s: &str) -> io::Result<()> {
        if !p.exists() {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        match p.file_name().and_then(|n| n.to_str()) {
            Some("schemata") => self.write_schemata(p, s),
            Some("tasks") => self.write_tasks(p, s),
            _ => std::fs::write(p, s),
        }
    }

    fn mkdir(&self, p: &Path) -> io::Result<()> {
        if p.parent() != Some(self.dir.path()) {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        if p.exists() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        if self.groups().len() as u32 >= self.l3.num_closids {
            self.status("Out of CLOSIDs");
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        std::fs::create_dir(p)?;
        std::fs::write(p.join("schemata"), self.default_schemata())?;
        std::fs::write(p.join("tasks"), "")?;
        std::fs::write(p.join("cpus"), "0\n")
    }

    fn rmdir(&self, p: &Path) -> io::Result<()> {
        if p == self.dir.path() || p.parent() != Some(self.dir.path()) {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        let tasks = std::fs::read_to_string(p.join("tasks"))?;
        let root_tasks = self.dir.path().join("tasks");
        let mut cur = std::fs::read_to_string(&root_tasks)?;
        cur.push_str(&tasks);
        std::fs::write(root_tasks, cur)?;
        std::fs::remove_dir_all(p)
    }

    fn list(&self, p: &Path) -> io::Result<Vec<String>> {
        std::fs::read_dir(p)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    }
}
