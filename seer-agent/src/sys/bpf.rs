//! Loads seer's eBPF object, attaches its programs, and reads its maps.
use std::{
    io::Read as _,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::Map,
    programs::{BtfTracePoint, Iter, ProgramError, SchedClassifier, TcAttachType, TracePoint},
};
use seer_common::{
    ConnectKey, Counters, Drops, KernelOffsets, LAT_BUCKETS, LatencyHist, MAX_SLOTS, SlotCounters,
    SockRecord,
};

use super::{btf, rawbpf};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/seer"));

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    #[error("loading seer's eBPF object failed: {0}")]
    Object(#[source] Box<aya::EbpfError>),
    #[error("the verifier rejected `{prog}` ({errno}). Last verifier lines:\n{log}")]
    Verifier {
        prog: String,
        errno: std::io::Error,
        log: String,
    },
    #[error("loading `{prog}` failed: {source}")]
    Load {
        prog: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("attaching `{prog}` to {target} failed: {source}")]
    Attach {
        prog: String,
        target: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("interface `{0}` does not exist in this network namespace (see `ip -br link`)")]
    NoInterface(String),
    #[error("map `{0}` is missing from seer's eBPF object (build mismatch: rebuild seer-agent)")]
    NoMap(&'static str),
    #[error("{what} failed: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Which optional hooks to attach. The TCP iterator and the connect hook are always attached.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// The per-packet tc ingress counter (opt-in: NIC arrivals come from the per-tick socket
    /// walk otherwise), on these interfaces; None = every interface that is up.
    pub tc_ingress: bool,
    pub interfaces: Option<Vec<String>>,
    /// `sock_recv_length` / `sock_send_length`: request turns, outstanding and latency.
    pub turns: bool,
    /// `sys_{enter,exit}_epoll_{wait,pwait}`.
    pub epoll: bool,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            tc_ingress: false,
            interfaces: None,
            turns: true,
            epoll: true,
        }
    }
}

/// An optional hook the kernel refused: what it was for, and the error.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Missing {
    pub what: String,
    pub error: String,
}

/// One attached hook, for the capability report and `bpftool` cross-checks.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Hook {
    pub program: &'static str,
    pub kind: &'static str,
    pub target: String,
}

/// seer's programs, loaded and attached. Dropping this detaches everything (all attachments are
/// fd-based links: a process killed with SIGKILL leaves nothing behind either).
pub struct Probes {
    ebpf: Ebpf,
    /// `iter/tcp`: every TCP socket (discovery rounds).
    iter_link: OwnedFd,
    /// `iter/bpf_sk_storage_map` over SOCKS: only the observed sockets (every tick). Some
    /// kernels refuse it (older ones; some 6.18 builds refuse every map-element iterator).
    sk_iter_link: Option<OwnedFd>,
    /// `iter/task_file`, loaded where the kernel can restrict it to one process (6.1+): the
    /// per-tick walk over each watched process's descriptors when `sk_iter_link` is refused.
    file_iter: Option<OwnedFd>,
    /// One `file_iter` link per watched process (pid -> link), kept by `watch_processes`.
    file_links: std::collections::BTreeMap<u32, OwnedFd>,
    /// `file_iter` over every process: discovery's socket owners (None: /proc is read).
    owners_link: Option<OwnedFd>,
    /// Optional hooks this kernel refused, and why.
    pub missing: Vec<Missing>,
    /// Hooks this kernel refused that another path replaces (nothing is missing for them).
    pub replaced: Vec<Missing>,
    /// clsact qdiscs seer added (kernels before 6.6), removed on drop.
    added_clsact: Vec<String>,
    ncpus: usize,
    pub hooks: Vec<Hook>,
    /// Per-CPU read buffers, allocated once.
    counters_buf: Vec<u8>,
    latency_buf: Vec<u8>,
    drops_buf: Vec<u8>,
    read_buf: Vec<u8>,
}

fn verifier_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(12);
    lines[start..].join("\n")
}

fn load_err(prog: &str, e: ProgramError) -> ProbeError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => ProbeError::Verifier {
            prog: prog.into(),
            errno: io_error,
            log: {
                let t = verifier_tail(&verifier_log.to_string());
                if t.is_empty() {
                    "(empty: the kernel refused the program type, not its code; \
                     fentry/fexit/LSM are refused this way on some kernels)"
                        .into()
                } else {
                    t
                }
            },
        },
        source => ProbeError::Load {
            prog: prog.into(),
            source: Box::new(source),
        },
    }
}

/// Interfaces that are up in this network namespace. Asked over netlink (getifaddrs), not
/// read from /sys/class/net: a process that entered a namespace with setns(2) still sees the
/// /sys of the namespace it came from.
pub fn up_interfaces() -> std::io::Result<Vec<String>> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
    let mut out: Vec<String> = addrs
        .filter(|a| a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP))
        .map(|a| a.interface_name)
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// Every address of this network namespace's interfaces (same netlink source as above): a
/// connect() to one of these reaches a service on this host.
pub fn local_addrs() -> std::io::Result<std::collections::HashSet<std::net::IpAddr>> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
    Ok(addrs
        .filter_map(|a| a.address)
        .filter_map(|sa| {
            if let Some(v4) = sa.as_sockaddr_in() {
                Some(std::net::IpAddr::V4(v4.ip()))
            } else {
                sa.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip()))
            }
        })
        .collect())
}

/// Whether `name` is an interface of this network namespace (same caveat as above).
fn interface_exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

/// The ways a tick can read socket state (all write the same `SockRecord`s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketWalk {
    /// `iter/tcp`: every TCP socket of the namespace (the established hash's every bucket).
    Full,
    /// `iter/bpf_sk_storage_map`: only the sockets registered in socket-local storage.
    SocketStorage,
    /// `iter/task_file`: the descriptors of each watched process.
    ProcessFiles,
}

impl SocketWalk {
    pub fn name(self) -> &'static str {
        match self {
            SocketWalk::Full => "iter/tcp (every socket)",
            SocketWalk::SocketStorage => "iter/bpf_sk_storage_map (registered sockets)",
            SocketWalk::ProcessFiles => "iter/task_file (watched processes' descriptors)",
        }
    }
}

/// Runs one instance of the iterator `link` and appends its records to `out`.
fn run_iter(
    link: BorrowedFd<'_>,
    what: &'static str,
    buf: &mut [u8],
    out: &mut Vec<SockRecord>,
) -> Result<(), ProbeError> {
    let fd = rawbpf::iter_create(link).map_err(Probes::io(what))?;
    read_records(fd, buf, out)
}

/// Reads an iterator instance to EOF, one `SockRecord` per chunk.
fn read_records(fd: OwnedFd, buf: &mut [u8], out: &mut Vec<SockRecord>) -> Result<(), ProbeError> {
    let mut f = std::fs::File::from(fd);
    let rec = size_of::<SockRecord>();
    let mut have = 0usize;
    loop {
        let n = f.read(&mut buf[have..]).map_err(|source| ProbeError::Io {
            what: "reading a socket iterator".into(),
            source,
        })?;
        if n == 0 {
            break;
        }
        have += n;
        let whole = have / rec * rec;
        for chunk in buf[..whole].chunks_exact(rec) {
            // SAFETY: the chunk is exactly one SockRecord written by the iter program
            // (same #[repr(C)] layout from seer-common); read_unaligned copes with alignment.
            out.push(unsafe { std::ptr::read_unaligned(chunk.as_ptr() as *const SockRecord) });
        }
        buf.copy_within(whole..have, 0);
        have -= whole;
    }
    Ok(())
}

/// Keeps one record per socket among `out[start..]` (a socket several processes share, such
/// as a listener inherited by workers, is visited once per process). Records without an inode
/// are kept as they are.
fn dedup_by_inode(out: &mut Vec<SockRecord>, start: usize) {
    out[start..].sort_unstable_by_key(|r| r.inode);
    let mut w = start;
    for i in start..out.len() {
        if w > start && out[i].inode != 0 && out[i].inode == out[w - 1].inode {
            continue;
        }
        out[w] = out[i];
        w += 1;
    }
    out.truncate(w);
}

fn round8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// `Probes::load`'s steps, one per kind of hook, over the object being loaded and what has
/// been attached or refused so far.
struct Loader {
    ebpf: Ebpf,
    /// The kernel's BTF as aya reads it (program loading) and as seer's reader does (fields).
    kbtf: aya::Btf,
    own_btf: btf::Btf,
    hooks: Vec<Hook>,
    missing: Vec<Missing>,
    replaced: Vec<Missing>,
    sk_iter_link: Option<OwnedFd>,
    /// Which files-walk program loaded (`seer_file_iter` or its compat form).
    files_prog: &'static str,
}

impl Loader {
    /// The object, with the running kernel's offsets and a pid-sized TGID_SLOT.
    fn open() -> Result<Self, ProbeError> {
        let own_btf = btf::Btf::from_sys_fs()?;
        let offsets: KernelOffsets = own_btf.kernel_offsets()?;
        let kbtf = aya::Btf::from_sys_fs().map_err(|e| ProbeError::Io {
            what: "reading /sys/kernel/btf/vmlinux".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        // TGID_SLOT is indexed by process id: one entry per possible pid.
        let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(4_194_304);
        let ebpf = EbpfLoader::new()
            .btf(Some(&kbtf))
            .map_max_entries("TGID_SLOT", pid_max)
            .override_global("OFFSETS", &offsets, true)
            .load(OBJECT)
            .map_err(|e| ProbeError::Object(Box::new(e)))?;
        Ok(Self {
            ebpf,
            kbtf,
            own_btf,
            hooks: Vec::new(),
            missing: Vec::new(),
            replaced: Vec::new(),
            sk_iter_link: None,
            files_prog: "seer_file_iter",
        })
    }

    /// Records an optional hook the kernel refused: its channels will be missing.
    fn optional(&mut self, what: &str, r: Result<(), ProbeError>) {
        if let Err(e) = r {
            log::warn!("{what} unavailable on this kernel, its channels will be missing: {e}");
            self.missing.push(Missing {
                what: what.to_string(),
                error: e.to_string(),
            });
        }
    }

    /// The full TCP walk (required): queue gauges at start and each discovery round; it also
    /// registers sockets for the cheap per-tick walk, except on kernels that refuse socket
    /// storage in iterators (before 5.11), which get the plain walk. Returns its link and
    /// whether it registers.
    fn tcp_walk(&mut self) -> Result<(OwnedFd, bool), ProbeError> {
        let kbtf = &self.kbtf;
        let load_iter = |ebpf: &mut Ebpf, name: &'static str| -> Result<OwnedFd, ProbeError> {
            let p: &mut Iter = prog(ebpf, name)?;
            p.load("tcp", kbtf).map_err(|e| load_err(name, e))?;
            let fd = p.fd().map_err(|e| load_err(name, e))?;
            rawbpf::iter_link_create(fd.as_fd(), None).map_err(|source| ProbeError::Io {
                what: "BPF_LINK_CREATE for iter/tcp".into(),
                source,
            })
        };
        let (link, registering) = match load_iter(&mut self.ebpf, "seer_sock_iter") {
            Ok(l) => (l, true),
            Err(e) => {
                log::warn!("socket registration refused ({e}); every tick walks every socket");
                self.missing.push(Missing {
                    what: "socket registration in iter/tcp".into(),
                    error: e.to_string(),
                });
                (load_iter(&mut self.ebpf, "seer_sock_iter_plain")?, false)
            }
        };
        self.hooks.push(Hook {
            program: if registering {
                "seer_sock_iter"
            } else {
                "seer_sock_iter_plain"
            },
            kind: "iter",
            target: "tcp".into(),
        });
        Ok((link, registering))
    }

    /// The per-tick walk over the registered sockets only (`iter/bpf_sk_storage_map` over
    /// SOCKS). Some kernels refuse it (older ones; some 6.18 builds refuse every map-element
    /// iterator).
    fn socket_storage_walk(&mut self, registering: bool) -> Result<OwnedFd, ProbeError> {
        if !registering {
            // Nothing would register sockets: this walk would see none.
            return Err(ProbeError::Io {
                what: "the per-tick walk".into(),
                source: std::io::Error::other("needs socket registration, refused above"),
            });
        }
        let socks = match self.ebpf.map("SOCKS") {
            Some(Map::SkStorage(d)) => d.fd().as_fd().as_raw_fd(),
            _ => return Err(ProbeError::NoMap("SOCKS")),
        };
        let p: &mut Iter = prog(&mut self.ebpf, "seer_sk_iter")?;
        p.load("bpf_sk_storage_map", &self.kbtf)
            .map_err(|e| load_err("seer_sk_iter", e))?;
        let fd = p.fd().map_err(|e| load_err("seer_sk_iter", e))?;
        // SAFETY: the SOCKS map fd is owned by `self.ebpf`, alive for this call.
        let socks = unsafe { BorrowedFd::borrow_raw(socks) };
        let link =
            rawbpf::iter_link_create(fd.as_fd(), Some(socks)).map_err(|source| ProbeError::Io {
                what: "BPF_LINK_CREATE for iter/bpf_sk_storage_map".into(),
                source,
            })?;
        self.hooks.push(Hook {
            program: "seer_sk_iter",
            kind: "iter",
            target: "bpf_sk_storage_map SOCKS".into(),
        });
        Ok(link)
    }

    /// Where the socket-storage walk was refused (`sk_err`): each watched process's
    /// descriptors (`iter/task_file`, restricted to one process: 6.1+). Returns the loaded
    /// program, linked per process later; None when this is refused too (then every tick walks
    /// every socket).
    fn task_file_walk(
        &mut self,
        sk_err: ProbeError,
        files: Result<OwnedFd, ProbeError>,
    ) -> Option<OwnedFd> {
        const SK_WALK: &str = "per-tick socket walk (iter/bpf_sk_storage_map)";
        match files.and_then(|p| self.per_process(p)) {
            Ok(own) => {
                log::info!(
                    "socket-storage walk refused ({sk_err}); the per-tick walk visits the \
                     watched processes' descriptors (iter/task_file)"
                );
                self.replaced.push(Missing {
                    what: SK_WALK.into(),
                    error: sk_err.to_string(),
                });
                Some(own)
            }
            Err(e) => {
                self.optional(SK_WALK, Err(sk_err));
                self.optional(
                    "per-tick socket walk (iter/task_file per watched process)",
                    Err(e),
                );
                None
            }
        }
    }

    /// The walk over processes' files (iter/task_file), loaded: `seer_file_iter` (typed
    /// pointers, direct loads: 5.11+), else `seer_file_iter_compat` (a helper call per field).
    fn load_files_prog(&mut self) -> Result<OwnedFd, ProbeError> {
        match self.load_files_prog_named("seer_file_iter") {
            Ok(fd) => Ok(fd),
            Err(e) => {
                log::info!("{e}; the files walk reads each field with a helper call instead");
                self.load_files_prog_named("seer_file_iter_compat")
            }
        }
    }

    fn load_files_prog_named(&mut self, name: &'static str) -> Result<OwnedFd, ProbeError> {
        let p: &mut Iter = prog(&mut self.ebpf, name)?;
        p.load("task_file", &self.kbtf)
            .map_err(|e| load_err(name, e))?;
        let fd = p.fd().map_err(|e| load_err(name, e))?;
        self.files_prog = name;
        fd.as_fd()
            .try_clone_to_owned()
            .map_err(|source| ProbeError::Io {
                what: "duplicating the iter/task_file program fd".into(),
                source,
            })
    }

    /// Discovery's socket owners: `seer_file_iter` linked to every process, so a discovery
    /// round reads which process holds which listener and client socket in one walk instead of
    /// a readlink of every /proc/PID/fd (half the agent's CPU with 10k sockets). None where the
    /// kernel refuses it: discovery then reads /proc.
    fn owners_walk(&mut self, files: &Result<OwnedFd, ProbeError>) -> Option<OwnedFd> {
        let r = match files {
            Ok(p) => rawbpf::iter_link_create(p.as_fd(), None).map_err(|source| ProbeError::Io {
                what: "BPF_LINK_CREATE for iter/task_file (every process)".into(),
                source,
            }),
            Err(e) => Err(ProbeError::Io {
                what: "iter/task_file".into(),
                source: std::io::Error::other(e.to_string()),
            }),
        };
        match r {
            Ok(link) => {
                self.hooks.push(Hook {
                    program: self.files_prog,
                    kind: "iter",
                    target: "task_file (every process: discovery's socket owners)".into(),
                });
                Some(link)
            }
            Err(e) => {
                log::info!("discovery reads /proc for socket owners: {e}");
                None
            }
        }
    }

    /// The files walk restricted to one process (6.1+), checked with our own pid.
    fn per_process(&mut self, own: OwnedFd) -> Result<OwnedFd, ProbeError> {
        if !self.own_btf.has_field("bpf_iter_link_info.task.pid") {
            return Err(ProbeError::Io {
                what: "iter/task_file per process".into(),
                source: std::io::Error::other(
                    "this kernel cannot restrict a task iterator to one process \
                     (bpf_iter_link_info.task, 6.1+)",
                ),
            });
        }
        rawbpf::iter_link_create_task(own.as_fd(), std::process::id()).map_err(|source| {
            ProbeError::Io {
                what: "BPF_LINK_CREATE for iter/task_file".into(),
                source,
            }
        })?;
        self.hooks.push(Hook {
            program: self.files_prog,
            kind: "iter",
            target: "task_file (one link per watched process)".into(),
        });
        Ok(own)
    }

    /// A tp_btf program on tracepoint `tp`.
    fn btf_tp(&mut self, name: &'static str, tp: &'static str) -> Result<(), ProbeError> {
        let p: &mut BtfTracePoint = prog(&mut self.ebpf, name)?;
        p.load(tp, &self.kbtf).map_err(|e| load_err(name, e))?;
        p.attach().map_err(|source| ProbeError::Attach {
            prog: name.into(),
            target: format!("tp_btf/{tp}"),
            source: Box::new(source),
        })?;
        self.hooks.push(Hook {
            program: name,
            kind: "tp_btf",
            target: tp.into(),
        });
        Ok(())
    }

    /// The socket hooks: connect() for the call graph, the lifecycle (registration, aborted
    /// turns) and, with `turns`, the request turns (outstanding, latency).
    fn socket_hooks(&mut self, turns: bool) {
        let r = self.btf_tp("seer_connect", "inet_sock_set_state");
        self.optional(
            "connect hook (tp_btf/inet_sock_set_state: call graph edges)",
            r,
        );
        let r = self.btf_tp("seer_state", "inet_sock_set_state");
        self.optional(
            "socket lifecycle hook (tp_btf/inet_sock_set_state: registration, aborted turns)",
            r,
        );
        if turns {
            let r = self
                .btf_tp("seer_recv", "sock_recv_length")
                .and_then(|()| self.btf_tp("seer_send", "sock_send_length"));
            self.optional(
                "request turns (tp_btf/sock_recv_length + sock_send_length: outstanding, latency)",
                r,
            );
        }
    }

    /// The epoll syscall tracepoints (opt-in), tracefs mounted privately if the host has not.
    fn epoll(&mut self) -> Result<(), ProbeError> {
        match super::tracefs::ensure() {
            Ok(true) => {
                log::info!("tracefs mounted in the agent's private mount namespace")
            }
            Ok(false) => {}
            Err(what) => {
                return Err(ProbeError::Io {
                    what,
                    source: std::io::Error::other("tracefs"),
                });
            }
        }
        for (name, dir) in [("seer_epoll_enter", "enter"), ("seer_epoll_exit", "exit")] {
            let p: &mut TracePoint = prog(&mut self.ebpf, name)?;
            p.load().map_err(|e| load_err(name, e))?;
            for call in ["epoll_wait", "epoll_pwait"] {
                let tp = format!("sys_{dir}_{call}");
                p.attach("syscalls", &tp)
                    .map_err(|source| ProbeError::Attach {
                        prog: name.into(),
                        target: format!("tracepoint/syscalls/{tp}"),
                        source: Box::new(source),
                    })?;
                self.hooks.push(Hook {
                    program: name,
                    kind: "tracepoint",
                    target: tp,
                });
            }
        }
        Ok(())
    }

    /// The per-packet NIC counter (opt-in) on `interfaces` (None: every interface that is up).
    /// Returns the clsact qdiscs it had to add (kernels before 6.6), removed on drop.
    fn tc_ingress(&mut self, interfaces: Option<&[String]>) -> Result<Vec<String>, ProbeError> {
        let ifaces = match interfaces {
            Some(list) => {
                for i in list {
                    if !interface_exists(i) {
                        return Err(ProbeError::NoInterface(i.clone()));
                    }
                }
                list.to_vec()
            }
            None => up_interfaces().map_err(|source| ProbeError::Io {
                what: "listing /sys/class/net".into(),
                source,
            })?,
        };
        let mut added_clsact = Vec::new();
        if !ifaces.is_empty() {
            let loaded = {
                let p: &mut SchedClassifier = prog(&mut self.ebpf, "seer_tc_ingress")?;
                p.load().map_err(|e| load_err("seer_tc_ingress", e))
            };
            self.optional("NIC arrivals (tc ingress)", loaded);
            // Before 6.6 there is no TCX: a netlink cls_bpf filter on a clsact qdisc, which
            // outlives the process. A filter a crashed run left behind is removed first, and a
            // clsact qdisc seer had to add is removed again on exit.
            let tcx = aya::util::KernelVersion::current()
                .is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0));
            for i in &ifaces {
                let p: &mut SchedClassifier = prog(&mut self.ebpf, "seer_tc_ingress")?;
                if p.fd().is_err() {
                    break;
                }
                if !tcx {
                    if aya::programs::tc::qdisc_detach_program(
                        i,
                        TcAttachType::Ingress,
                        "seer_tc_ingress",
                    )
                    .is_ok()
                    {
                        log::info!("removed a seer filter a previous run left on {i}");
                    }
                    if aya::programs::tc::qdisc_add_clsact(i).is_ok() {
                        added_clsact.push(i.clone());
                    }
                }
                let r = p
                    .attach(i, TcAttachType::Ingress)
                    .map(drop)
                    .map_err(|source| ProbeError::Attach {
                        prog: "seer_tc_ingress".into(),
                        target: format!("tc ingress on {i}"),
                        source: Box::new(source),
                    });
                if r.is_ok() {
                    self.hooks.push(Hook {
                        program: "seer_tc_ingress",
                        kind: if tcx { "tcx" } else { "cls_bpf" },
                        target: i.clone(),
                    });
                }
                self.optional(&format!("NIC arrivals on {i} (tc ingress)"), r);
            }
        }
        Ok(added_clsact)
    }
}

impl Probes {
    /// Loads seer's object and attaches its programs: the TCP walk (required), then the
    /// per-tick walk, the socket hooks, epoll and tc ingress as `opts` asks. An optional hook
    /// the kernel refuses is reported in `missing` (log, `doctor`) and only its channels go.
    pub fn load(opts: &ProbeOptions) -> Result<Self, ProbeError> {
        let mut l = Loader::open()?;
        let (iter_link, registering) = l.tcp_walk()?;
        let sk_res = l.socket_storage_walk(registering);
        let files = l.load_files_prog();
        let owners_link = l.owners_walk(&files);
        let file_iter = match sk_res {
            Ok(link) => {
                l.sk_iter_link = Some(link);
                None
            }
            Err(sk_err) => l.task_file_walk(sk_err, files),
        };
        l.socket_hooks(opts.turns);
        if opts.epoll {
            let r = l.epoll();
            l.optional(
                "epoll tracepoints (syscalls/sys_{enter,exit}_epoll_{wait,pwait})",
                r,
            );
        }
        let added_clsact = if opts.tc_ingress {
            l.tc_ingress(opts.interfaces.as_deref())?
        } else {
            Vec::new()
        };
        let ncpus = aya::util::nr_cpus().map_err(|(_, source)| ProbeError::Io {
            what: "reading /sys/devices/system/cpu/possible".into(),
            source,
        })?;
        Ok(Self {
            counters_buf: vec![0; round8(size_of::<Counters>()) * ncpus],
            latency_buf: vec![0; round8(size_of::<LatencyHist>()) * ncpus],
            drops_buf: vec![0; round8(size_of::<Drops>()) * ncpus],
            read_buf: vec![0; 64 * 1024],
            ebpf: l.ebpf,
            iter_link,
            sk_iter_link: l.sk_iter_link,
            file_iter,
            file_links: Default::default(),
            owners_link,
            missing: l.missing,
            replaced: l.replaced,
            added_clsact,
            ncpus,
            hooks: l.hooks,
        })
    }

    fn map_fd(&self, name: &'static str) -> Result<BorrowedFd<'_>, ProbeError> {
        match self.ebpf.map(name) {
            Some(Map::Array(d) | Map::HashMap(d) | Map::PerCpuArray(d) | Map::PerCpuHashMap(d)) => {
                Ok(d.fd().as_fd())
            }
            _ => Err(ProbeError::NoMap(name)),
        }
    }

    fn io(what: &str) -> impl FnOnce(std::io::Error) -> ProbeError + '_ {
        move |source| ProbeError::Io {
            what: what.into(),
            source,
        }
    }

    /// How a tick that is not a discovery round reads the sockets.
    pub fn tick_walk(&self) -> SocketWalk {
        if self.sk_iter_link.is_some() {
            SocketWalk::SocketStorage
        } else if self.file_iter.is_some() {
            SocketWalk::ProcessFiles
        } else {
            SocketWalk::Full
        }
    }

    /// The walks this kernel offers (for `selftest` and `doctor`, which check and time each).
    pub fn walks(&self) -> Vec<SocketWalk> {
        let mut w = vec![SocketWalk::Full];
        if self.sk_iter_link.is_some() {
            w.push(SocketWalk::SocketStorage);
        }
        if self.file_iter.is_some() {
            w.push(SocketWalk::ProcessFiles);
        }
        w
    }

    /// Keeps one `iter/task_file` link per process in `pids` (the watched services'
    /// processes): new ones get a link, gone ones lose theirs. A no-op where the per-process
    /// walk is not loaded.
    pub fn watch_processes(
        &mut self,
        pids: impl IntoIterator<Item = u32>,
    ) -> Result<(), ProbeError> {
        let Some(prog) = &self.file_iter else {
            return Ok(());
        };
        let want: std::collections::BTreeSet<u32> = pids.into_iter().collect();
        self.file_links.retain(|pid, _| want.contains(pid));
        for pid in want {
            if self.file_links.contains_key(&pid) {
                continue;
            }
            let link = rawbpf::iter_link_create_task(prog.as_fd(), pid).map_err(|source| {
                ProbeError::Io {
                    what: format!("BPF_LINK_CREATE for iter/task_file of pid {pid}"),
                    source,
                }
            })?;
            self.file_links.insert(pid, link);
        }
        Ok(())
    }

    /// Appends one record per listener and per socket on a watched port held by any process,
    /// with the holder's `tgid` (a socket several processes hold comes once per process).
    /// False, with nothing read, where the kernel refused this walk: read /proc instead.
    pub fn read_owners(&mut self, out: &mut Vec<SockRecord>) -> Result<bool, ProbeError> {
        let Some(link) = &self.owners_link else {
            return Ok(false);
        };
        run_iter(
            link.as_fd(),
            "BPF_ITER_CREATE (iter/task_file, every process)",
            &mut self.read_buf,
            out,
        )?;
        Ok(true)
    }

    /// Runs one iterator and appends one record per reported socket to `out`: `full` walks
    /// every TCP socket of the namespace (and registers new ones for the cheap walk); otherwise
    /// only the watched sockets are visited, by the cheapest walk this kernel offers.
    pub fn read_sockets(
        &mut self,
        out: &mut Vec<SockRecord>,
        full: bool,
    ) -> Result<(), ProbeError> {
        let walk = if full {
            SocketWalk::Full
        } else {
            self.tick_walk()
        };
        self.read_sockets_by(walk, out)
    }

    /// `read_sockets` by a given walk (one this kernel offers: see `walks`).
    pub fn read_sockets_by(
        &mut self,
        walk: SocketWalk,
        out: &mut Vec<SockRecord>,
    ) -> Result<(), ProbeError> {
        match walk {
            SocketWalk::Full => run_iter(
                self.iter_link.as_fd(),
                "BPF_ITER_CREATE (iter/tcp)",
                &mut self.read_buf,
                out,
            ),
            SocketWalk::SocketStorage => {
                let link = self.sk_iter_link.as_ref().ok_or_else(|| ProbeError::Io {
                    what: "the socket-storage walk".into(),
                    source: std::io::Error::other("refused by this kernel"),
                })?;
                run_iter(
                    link.as_fd(),
                    "BPF_ITER_CREATE (iter/bpf_sk_storage_map)",
                    &mut self.read_buf,
                    out,
                )
            }
            SocketWalk::ProcessFiles => {
                let start = out.len();
                for link in self.file_links.values() {
                    run_iter(
                        link.as_fd(),
                        "BPF_ITER_CREATE (iter/task_file)",
                        &mut self.read_buf,
                        out,
                    )?;
                }
                dedup_by_inode(out, start);
                Ok(())
            }
        }
    }

    /// Sums every CPU's counters into `out` (one entry per slot).
    pub fn read_counters(&mut self, out: &mut [SlotCounters; MAX_SLOTS]) -> Result<(), ProbeError> {
        let fd = self.map_fd("COUNTERS")?.as_raw_fd();
        // SAFETY: fd belongs to self.ebpf, alive for this call.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        // SAFETY: COUNTERS is a per-CPU array keyed by u32 of `Counters` (seer-common); the
        // buffer holds round8(size_of::<Counters>()) bytes for each possible CPU.
        unsafe { rawbpf::lookup(fd, &0u32.to_ne_bytes(), &mut self.counters_buf) }
            .map_err(Self::io("reading COUNTERS"))?;
        *out = [SlotCounters::default(); MAX_SLOTS];
        let stride = round8(size_of::<Counters>());
        for cpu in 0..self.ncpus {
            let base = &self.counters_buf[cpu * stride..cpu * stride + size_of::<Counters>()];
            for (slot, o) in out.iter_mut().enumerate() {
                let at = slot * size_of::<SlotCounters>();
                // SAFETY: `base` holds one Counters value; each slot is a SlotCounters within it.
                let c: SlotCounters =
                    unsafe { std::ptr::read_unaligned(base[at..].as_ptr() as *const SlotCounters) };
                o.nic_rx_pkts += c.nic_rx_pkts;
                o.nic_rx_bytes += c.nic_rx_bytes;
                o.epoll_calls += c.epoll_calls;
                o.epoll_events += c.epoll_events;
                o.epoll_wait_ns += c.epoll_wait_ns;
                o.req_started += c.req_started;
                o.req_completed += c.req_completed;
                o.req_aborted += c.req_aborted;
            }
        }
        Ok(())
    }

    /// Sums every CPU's latency histogram of `slot` into `out`.
    pub fn read_latency(
        &mut self,
        slot: usize,
        out: &mut [u64; LAT_BUCKETS],
    ) -> Result<(), ProbeError> {
        let fd = self.map_fd("LATENCY")?.as_raw_fd();
        // SAFETY: fd belongs to self.ebpf, alive for this call.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        // SAFETY: LATENCY is a per-CPU array keyed by u32 of `LatencyHist`; the buffer holds
        // round8(size_of::<LatencyHist>()) bytes for each possible CPU.
        unsafe { rawbpf::lookup(fd, &(slot as u32).to_ne_bytes(), &mut self.latency_buf) }
            .map_err(Self::io("reading LATENCY"))?;
        out.fill(0);
        let stride = round8(size_of::<LatencyHist>());
        for cpu in 0..self.ncpus {
            let base = &self.latency_buf[cpu * stride..];
            for (b, o) in out.iter_mut().enumerate() {
                let v = u32::from_ne_bytes([
                    base[b * 4],
                    base[b * 4 + 1],
                    base[b * 4 + 2],
                    base[b * 4 + 3],
                ]);
                *o += v as u64;
            }
        }
        Ok(())
    }

    pub fn read_drops(&mut self) -> Result<Drops, ProbeError> {
        let fd = self.map_fd("DROPS")?.as_raw_fd();
        // SAFETY: fd belongs to self.ebpf, alive for this call.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        // SAFETY: DROPS is a per-CPU array keyed by u32 of `Drops`; the buffer holds
        // round8(size_of::<Drops>()) bytes for each possible CPU.
        unsafe { rawbpf::lookup(fd, &0u32.to_ne_bytes(), &mut self.drops_buf) }
            .map_err(Self::io("reading DROPS"))?;
        let mut d = Drops::default();
        let stride = round8(size_of::<Drops>());
        for cpu in 0..self.ncpus {
            // SAFETY: each stride holds one Drops value.
            let c: Drops = unsafe {
                std::ptr::read_unaligned(self.drops_buf[cpu * stride..].as_ptr() as *const Drops)
            };
            d.turns_full += c.turns_full;
            d.connects_full += c.connects_full;
            d.epoll_full += c.epoll_full;
            d.iter_write += c.iter_write;
        }
        Ok(d)
    }

    /// The (client process, destination) -> connect() count pairs seen since the last call,
    /// taken out of the kernel's map: it never fills up on a host that runs for months (a
    /// connect() between the read and the delete of its key is lost; the next one brings the
    /// edge back).
    pub fn drain_connects(&self, out: &mut Vec<(ConnectKey, u64)>) -> Result<(), ProbeError> {
        let from = out.len();
        self.read_connects(out)?;
        let fd = self.map_fd("CONNECTS")?;
        for (k, _) in &out[from..] {
            // SAFETY: CONNECTS is keyed by `ConnectKey`; `k` is one.
            unsafe { rawbpf::delete(fd, rawbpf::bytes_of(k)) }
                .map_err(Self::io("draining CONNECTS"))?;
        }
        Ok(())
    }

    /// All (client process, destination port) -> connect() count pairs in the kernel's map.
    pub fn read_connects(&self, out: &mut Vec<(ConnectKey, u64)>) -> Result<(), ProbeError> {
        let fd = self.map_fd("CONNECTS")?;
        let mut key: Option<ConnectKey> = None;
        loop {
            let mut next = [0u8; size_of::<ConnectKey>()];
            let prev = key.as_ref().map(rawbpf::bytes_of);
            // SAFETY: CONNECTS is keyed by `ConnectKey`: `prev` is one, `next` holds one.
            if !unsafe { rawbpf::next_key(fd, prev, &mut next) }
                .map_err(Self::io("iterating CONNECTS"))?
            {
                break;
            }
            // SAFETY: `next` holds exactly one ConnectKey as the kernel wrote it (Pod).
            let next: ConnectKey = unsafe { std::ptr::read_unaligned(next.as_ptr().cast()) };
            let mut v = [0u8; 8];
            // SAFETY: CONNECTS maps a `ConnectKey` to a u64 (8 bytes in `v`).
            if unsafe { rawbpf::lookup(fd, rawbpf::bytes_of(&next), &mut v) }
                .map_err(Self::io("reading CONNECTS"))?
            {
                out.push((next, u64::from_ne_bytes(v)));
            }
            key = Some(next);
        }
        Ok(())
    }

    pub fn set_port_slot(&self, port: u16, slot: Option<usize>) -> Result<(), ProbeError> {
        let v: u16 = slot.map_or(0, |s| s as u16 + 1);
        let fd = self.map_fd("PORT_SLOT")?;
        // SAFETY: PORT_SLOT maps a u32 port to a u16 slot + 1.
        unsafe { rawbpf::update(fd, &(port as u32).to_ne_bytes(), &v.to_ne_bytes()) }
            .map_err(Self::io("writing PORT_SLOT"))
    }

    pub fn set_tgid_slot(&self, tgid: u32, slot: Option<usize>) -> Result<(), ProbeError> {
        let v: u16 = slot.map_or(0, |s| s as u16 + 1);
        let fd = self.map_fd("TGID_SLOT")?;
        // SAFETY: TGID_SLOT maps a u32 tgid to a u16 slot + 1.
        unsafe { rawbpf::update(fd, &tgid.to_ne_bytes(), &v.to_ne_bytes()) }
            .map_err(Self::io("writing TGID_SLOT"))
    }

    /// What each attached program costs on this host now: the kernel's run-time statistics
    /// (BPF_ENABLE_STATS, on only for `window`, off again when this returns) before and after
    /// `window`: runs per second and ns per run. Per-event hooks run per packet or call;
    /// iterators once per walk.
    pub fn hook_prices(&self, window: std::time::Duration) -> Result<Vec<HookPrice>, ProbeError> {
        let _on = aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| ProbeError::Io {
            what: "turning on the kernel's BPF run-time statistics (BPF_ENABLE_STATS, 5.8+)".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let read = || -> Vec<(String, u64, u64)> {
            self.ebpf
                .programs()
                .filter_map(|(n, p)| {
                    let i = p.info().ok()?;
                    Some((n.to_string(), i.run_count(), i.run_time().as_nanos() as u64))
                })
                .collect()
        };
        let a = read();
        std::thread::sleep(window);
        let b = read();
        let secs = window.as_secs_f64().max(1e-3);
        let mut out: Vec<HookPrice> = b
            .into_iter()
            .filter(|(n, _, _)| self.hooks.iter().any(|h| h.program == n.as_str()))
            .map(|(program, cnt, ns)| {
                let (c0, n0) = a
                    .iter()
                    .find(|(p, _, _)| *p == program)
                    .map_or((0, 0), |(_, c, n)| (*c, *n));
                let runs = cnt.saturating_sub(c0);
                HookPrice {
                    program,
                    runs_per_s: runs as f64 / secs,
                    ns_per_run: if runs == 0 {
                        0.0
                    } else {
                        ns.saturating_sub(n0) as f64 / runs as f64
                    },
                    cpu_pct: ns.saturating_sub(n0) as f64 / (secs * 1e9) * 100.0,
                }
            })
            .collect();
        out.sort_by(|x, y| y.cpu_pct.total_cmp(&x.cpu_pct));
        Ok(out)
    }

    /// Program ids, for bpf stats (`bpftool prog show id N`) in the overhead benchmark.
    pub fn program_ids(&self) -> Vec<(String, u32)> {
        self.ebpf
            .programs()
            .filter_map(|(name, p)| Some((name.to_string(), p.info().ok()?.id())))
            .collect()
    }
}

/// One attached program's cost, measured by [`Probes::hook_prices`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct HookPrice {
    pub program: String,
    pub runs_per_s: f64,
    /// Mean program time per run (0 when it did not run in the window).
    pub ns_per_run: f64,
    /// Share of one CPU it took in the window.
    pub cpu_pct: f64,
}

impl Drop for Probes {
    fn drop(&mut self) {
        // Netlink filters are removed when `ebpf` drops; the qdiscs we added go here.
        for i in &self.added_clsact {
            let st = std::process::Command::new("tc")
                .args(["qdisc", "del", "dev", i, "clsact"])
                .status();
            if !st.is_ok_and(|s| s.success()) {
                log::warn!(
                    "could not remove the clsact qdisc seer added on {i}: `tc qdisc del dev {i} clsact`"
                );
            }
        }
    }
}

fn prog<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, ProbeError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let p = ebpf.program_mut(name).ok_or(ProbeError::NoMap(name))?;
    p.try_into().map_err(|source| ProbeError::Load {
        prog: name.into(),
        source: Box::new(source),
    })
}
