//! The ten tunable contentious kernels, one per shared resource. Each runs for a bounded
//! burst at a duty cycle ("intensity", 0..=1 of every 1 ms period), in threads pinned to the
//! culprit's CPUs; buffers are sized from the host's cache sizes and allocated up front so a
//! burst only contends, never page-faults (except the memory-capacity kernel, whose job it is).
use std::{
    fs::File,
    hint::black_box,
    net::{SocketAddr, UdpSocket},
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use seer_store::safefs;

use super::{DiagnoseError, Resource, probe::Observer, probe::Window};

/// Cache sizes in bytes (per core for L1d/L2, per socket for the LLC).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CacheSizes {
    pub l1d: usize,
    pub l2: usize,
    pub llc: usize,
}

impl CacheSizes {
    /// From /sys/devices/system/cpu/cpu0/cache; common sizes where it says nothing.
    pub fn of_host() -> CacheSizes {
        let mut c = CacheSizes {
            l1d: 32 << 10,
            l2: 1 << 20,
            llc: 32 << 20,
        };
        for ix in cache_indexes(0) {
            let Some(size) = parse_size(&ix.read("size")) else {
                continue;
            };
            match (ix.level, ix.read("type").trim()) {
                (1, "Data") => c.l1d = size,
                (2, _) => c.l2 = size,
                (3, _) => c.llc = size,
                _ => {}
            }
        }
        c
    }
}

/// One cache sysfs describes for a CPU (`/sys/devices/system/cpu/cpuN/cache/indexK`).
pub struct CacheIndex {
    pub level: u32,
    dir: std::path::PathBuf,
}

impl CacheIndex {
    /// One of its files (`size`, `type`, `shared_cpu_list`, ...), empty if unreadable.
    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }
}

/// The caches sysfs describes for `cpu`, with a readable level; none where it says nothing.
pub fn cache_indexes(cpu: usize) -> Vec<CacheIndex> {
    let base = Path::new("/sys/devices/system/cpu").join(format!("cpu{cpu}/cache"));
    (0..8)
        .filter_map(|i| {
            let dir = base.join(format!("index{i}"));
            let level = std::fs::read_to_string(dir.join("level")).ok()?;
            Some(CacheIndex {
                level: level.trim().parse().ok()?,
                dir,
            })
        })
        .collect()
}

/// `32K` / `1024K` / `32M` -> bytes
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mul) = match s.chars().last()? {
        'K' => (&s[..s.len() - 1], 1 << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<usize>().ok().map(|n| n * mul)
}

/// Seer's own folder for the disk kernel where the culprit's filesystem has no `O_TMPFILE`
/// (beside the trace store's default, on a disk rather than tmpfs).
pub const DISK_FALLBACK: &str = "/var/lib/seer/diagnose";

/// Where the kernels contend.
#[derive(Clone, Debug)]
pub struct Placement {
    /// The culprit's CPUs: core kernels (CPU, L1i, L1d, L2) time-share them with it.
    pub cpus: Vec<usize>,
    /// CPUs for the uncore and device kernels (LLC, memory, network, disk): the host's other
    /// CPUs, so that they contend on the shared resource and not for the culprit's CPU time
    /// (the culprit's own CPUs when it may run everywhere).
    pub uncore_cpus: Vec<usize>,
    /// The culprit's working directory as the magic link `/proc/PID/cwd`: the disk kernel
    /// writes an unnamed `O_TMPFILE` there, on the culprit's own filesystem in its own mount
    /// namespace. The culprit controls that folder: no name is ever created in it, so nothing
    /// planted there (a symlink, a FIFO) is followed.
    pub disk_dir: PathBuf,
    /// Seer's own folder (root's, created 0700) for the disk kernel where the culprit's
    /// filesystem has no `O_TMPFILE`; None: the kernel is then unavailable.
    pub disk_fallback: Option<PathBuf>,
    /// Where the network kernel sends its UDP datagrams.
    pub net_dest: SocketAddr,
    /// The memory-capacity kernel touches at most this many bytes per thread.
    pub memcap_bytes: usize,
}

/// One thread's buffers, allocated before any burst.
pub struct ThreadMem {
    cpu: usize,
    l1d: Vec<u64>,
    l2: Vec<u64>,
    llc: Vec<u64>,
    stream: Vec<u64>,
    io: Vec<u8>,
    disk: Option<File>,
    udp: Option<UdpSocket>,
    net_dest: SocketAddr,
    memcap_bytes: usize,
}

/// Every kernel's state: one [`ThreadMem`] per culprit CPU (core kernels) and one per
/// uncore CPU.
pub struct Arena {
    pub core: Vec<ThreadMem>,
    pub uncore: Vec<ThreadMem>,
    /// Kernels that cannot run here, with why (e.g. no writable filesystem for the disk one).
    pub unavailable: Vec<(Resource, String)>,
}

fn pow2_words(bytes: usize) -> usize {
    (bytes / 8).max(64).next_power_of_two()
}

/// All the kernels' buffers together stay under this: uncore threads (each about 2.5x the
/// LLC, at least 64 MiB) are the ones to count; without a cap a 64-CPU host with a 32 MiB LLC
/// took about 5 GiB for one diagnosis.
pub const MAX_ARENA_BYTES: usize = 512 << 20;

/// Bytes one core thread's buffers take.
fn core_bytes(sizes: CacheSizes) -> usize {
    8 * (pow2_words(sizes.l1d) + pow2_words(sizes.l2)) + (1 << 20) + 4096
}

/// Bytes one uncore thread's buffers take.
fn uncore_bytes(sizes: CacheSizes) -> usize {
    core_bytes(sizes) + 8 * pow2_words(sizes.llc / 2) + (sizes.llc * 2).max(64 << 20)
}

/// How many of `n_uncore` uncore threads fit beside `n_core` core threads in `budget` (at
/// least one, so the uncore kernels still run).
fn uncore_threads_within(
    n_core: usize,
    n_uncore: usize,
    sizes: CacheSizes,
    budget: usize,
) -> usize {
    let left = budget.saturating_sub(n_core * core_bytes(sizes));
    (left / uncore_bytes(sizes).max(1))
        .clamp(1, n_uncore.max(1))
        .min(n_uncore)
}

fn touched(words: usize) -> Vec<u64> {
    (0..words as u64).collect()
}

impl Arena {
    pub fn new(p: &Placement, sizes: CacheSizes) -> Result<Arena, DiagnoseError> {
        if p.cpus.is_empty() {
            return Err(DiagnoseError::BadRequest(
                "the culprit may run on no CPU (empty affinity)".into(),
            ));
        }
        let mut unavailable = Vec::new();
        let mut threads = Vec::new();
        let n_core = p.cpus.len();
        let n_uncore = uncore_threads_within(n_core, p.uncore_cpus.len(), sizes, MAX_ARENA_BYTES);
        if n_uncore < p.uncore_cpus.len() {
            log::info!(
                "diagnose: uncore kernels on {n_uncore} of {} other CPUs (their buffers stay under {} MiB)",
                p.uncore_cpus.len(),
                MAX_ARENA_BYTES >> 20
            );
        }
        for (i, &cpu) in p
            .cpus
            .iter()
            .chain(p.uncore_cpus.iter().take(n_uncore))
            .enumerate()
        {
            let core = i < n_core;
            // Only the uncore threads write; after one failure the others would fail alike.
            let disk = if core || !unavailable.is_empty() {
                None
            } else {
                match open_disk(p) {
                    Ok(f) => Some(f),
                    Err(why) => {
                        unavailable.push((Resource::Disk, why));
                        None
                    }
                }
            };
            let udp = UdpSocket::bind(if p.net_dest.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            })
            .map_err(|source| DiagnoseError::Bench {
                what: "network",
                source,
            })?;
            threads.push(ThreadMem {
                cpu,
                l1d: touched(pow2_words(sizes.l1d)),
                l2: touched(pow2_words(sizes.l2)),
                // Half the LLC: it stays in the cache (contending for it) rather than
                // streaming to memory, which is the memory-bandwidth kernel's job.
                llc: if core {
                    Vec::new()
                } else {
                    touched(pow2_words(sizes.llc / 2))
                },
                // Streaming over twice the LLC (at least 64 MiB) always goes to memory.
                stream: if core {
                    Vec::new()
                } else {
                    touched((sizes.llc * 2).max(64 << 20) / 8)
                },
                io: vec![0x5a; (1 << 20) + 4096],
                disk,
                udp: Some(udp),
                net_dest: p.net_dest,
                memcap_bytes: p.memcap_bytes,
            });
        }
        let uncore = threads.split_off(n_core);
        Ok(Arena {
            core: threads,
            uncore,
            unavailable,
        })
    }

    /// Runs `kind` at `intensity` on every culprit CPU for `dur` while `obs` watches the
    /// culprit; returns the culprit's latency over the burst and the kernel's work done.
    pub fn burst(
        &mut self,
        kind: Resource,
        intensity: f64,
        dur: Duration,
        obs: &mut dyn Observer,
    ) -> Result<(Window, u64), DiagnoseError> {
        self.burst_on(kind, !is_core(kind), intensity, dur, obs)
    }

    /// As [`Arena::burst`], on the uncore CPUs or the culprit's as `uncore` says (the
    /// CPU-integer kernel on the uncore CPUs is the reference for the uncore kernels).
    pub fn burst_on(
        &mut self,
        kind: Resource,
        uncore: bool,
        intensity: f64,
        dur: Duration,
        obs: &mut dyn Observer,
    ) -> Result<(Window, u64), DiagnoseError> {
        let until = Instant::now() + dur;
        let intensity = intensity.clamp(0.01, 1.0);
        std::thread::scope(|s| {
            let threads = if !uncore {
                &mut self.core
            } else {
                &mut self.uncore
            };
            let hs: Vec<_> = threads
                .iter_mut()
                .map(|m| s.spawn(move || run(kind, intensity, until, m)))
                .collect();
            let w = obs.window(dur);
            let mut ops = 0;
            for h in hs {
                ops += h.join().unwrap_or(0);
            }
            w.map(|w| (w, ops))
        })
    }
}

/// Kernels that contend inside one core (and so must share the culprit's CPUs).
pub fn is_core(r: Resource) -> bool {
    matches!(
        r,
        Resource::CpuInt | Resource::CpuFp | Resource::L1i | Resource::L1d | Resource::L2
    )
}

/// The disk kernel's file: unnamed (`O_TMPFILE`, mode 0600), so its space goes back when the
/// diagnosis ends, even if it is killed, and nothing planted at a name is ever opened. In the
/// culprit's working directory ([`Placement::disk_dir`]), else in seer's own folder
/// ([`Placement::disk_fallback`]); `O_DIRECT` where the filesystem allows it, else buffered
/// writes + fdatasync (tmpfs, some overlays). Err: why neither works.
fn open_disk(p: &Placement) -> Result<File, String> {
    fn direct_or_buffered<E>(open: impl Fn(i32) -> Result<File, E>) -> Result<File, E> {
        open(libc::O_DIRECT).or_else(|_| open(0))
    }
    let culprit = match direct_or_buffered(|fl| safefs::unnamed_file_in(&p.disk_dir, fl)) {
        Ok(f) => return Ok(f),
        Err(e) => format!(
            "no unnamed file (O_TMPFILE) in the culprit's working directory ({}): {e}",
            p.disk_dir.display()
        ),
    };
    let Some(own) = &p.disk_fallback else {
        return Err(culprit);
    };
    let f = safefs::private_dir(own)
        .and_then(|d| direct_or_buffered(|fl| d.unnamed_file(fl)))
        .map_err(|e| format!("{culprit}; nor in seer's own folder: {e}"))?;
    log::info!(
        "disk microbenchmark writes in {} ({culprit}): not the culprit's filesystem",
        own.display()
    );
    Ok(f)
}

/// One burst on one CPU: work for `intensity` of every 1 ms period until `until`.
fn run(kind: Resource, intensity: f64, until: Instant, m: &mut ThreadMem) -> u64 {
    // An ordinary neighbour: nice 0, not the probe's priority this thread inherited.
    let _ = super::nice_thread(0);
    super::pin_thread(&[m.cpu]);
    let period = Duration::from_millis(1);
    let busy = period.mul_f64(intensity);
    let mut ops = 0u64;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ m.cpu as u64;
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut held_bytes = 0usize;
    let mut off = 0usize;
    loop {
        let p0 = Instant::now();
        if p0 >= until {
            break;
        }
        while p0.elapsed() < busy && Instant::now() < until {
            seed = chunk(kind, m, seed, &mut off, &mut held, &mut held_bytes);
            ops += 1;
        }
        if intensity < 1.0 {
            let rest = (p0 + period).min(until);
            if let Some(d) = rest.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
    }
    black_box(seed);
    ops
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// Random read-modify-write over a power-of-two buffer: misses in every cache smaller than it.
fn thrash(buf: &mut [u64], mut x: u64) -> u64 {
    let mask = buf.len() - 1;
    for _ in 0..2048 {
        x = xorshift(x);
        let i = (x as usize) & mask;
        buf[i] = buf[i].wrapping_add(x);
    }
    x
}

/// A few microseconds of one kernel's work.
fn chunk(
    kind: Resource,
    m: &mut ThreadMem,
    mut x: u64,
    off: &mut usize,
    held: &mut Vec<Vec<u8>>,
    held_bytes: &mut usize,
) -> u64 {
    match kind {
        Resource::CpuInt => {
            for _ in 0..4096 {
                x = xorshift(x).wrapping_mul(0x2545_F491_4F6C_DD1D);
            }
        }
        Resource::CpuFp => {
            let mut a = [1.0f64; 64];
            for _ in 0..64 {
                for v in a.iter_mut() {
                    *v = *v * 1.000_000_1 + 1e-9;
                }
                a = black_box(a);
            }
            x ^= a[0].to_bits();
        }
        Resource::L1i => {
            for _ in 0..512 {
                x = xorshift(x);
                let i = (x as usize) & 511;
                x = L1I[i >> 3][i & 7](x);
            }
        }
        Resource::L1d => x = thrash(&mut m.l1d, x),
        Resource::L2 => x = thrash(&mut m.l2, x),
        Resource::Llc => x = thrash(&mut m.llc, x),
        Resource::MemoryBandwidth => {
            // 256 KiB written then read per chunk, walking the whole stream buffer.
            let n = (256 << 10) / 8;
            if *off + n > m.stream.len() {
                *off = 0;
            }
            let s = &mut m.stream[*off..*off + n];
            s.fill(x);
            x = x.wrapping_add(s.iter().fold(0u64, |a, &b| a ^ b));
            *off += n;
        }
        Resource::MemoryCapacity => {
            // Fresh pages, touched and held until the burst ends.
            const STEP: usize = 2 << 20;
            if *held_bytes + STEP <= m.memcap_bytes {
                let mut v = vec![0u8; STEP];
                for p in v.iter_mut().step_by(4096) {
                    *p = 1;
                }
                *held_bytes += STEP;
                held.push(v);
            } else {
                std::hint::spin_loop();
            }
        }
        Resource::Network => {
            if let Some(u) = &m.udp {
                for _ in 0..16 {
                    // Losses and ICMP errors are expected: the point is the bytes sent.
                    let _ = u.send_to(&m.io[..1400], m.net_dest);
                }
            }
        }
        Resource::Disk => {
            if let Some(f) = &m.disk {
                let a = m.io.as_ptr().align_offset(4096);
                let buf = &m.io[a..a + (256 << 10)];
                let pos = (*off % 256) as u64 * (256 << 10);
                if f.write_at(buf, pos).is_ok() {
                    let _ = f.sync_data();
                }
                *off += 1;
            } else {
                std::hint::spin_loop();
            }
        }
    }
    x
}

/// A distinct block of code per N: 512 of them overflow any L1 instruction cache.
#[inline(never)]
fn blk<const N: u64>(mut x: u64) -> u64 {
    x ^= N.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = x.wrapping_mul(N | 1).rotate_left((N % 61 + 1) as u32);
    x = (x ^ (N << 7)).wrapping_add(N * 3 + 11);
    x = x
        .wrapping_mul(0xD6E8_FEB8_6659_FD93 ^ N)
        .rotate_right((N % 59 + 2) as u32);
    x = (x ^ (x >> 29)).wrapping_sub(N * 7 + 5);
    x = x
        .wrapping_mul(0xA076_1D64_78BD_642F ^ (N << 3))
        .rotate_left((N % 53 + 3) as u32);
    x = (x ^ (x >> 31)).wrapping_add(N ^ 0x5555);
    x
}

type Blk = fn(u64) -> u64;

macro_rules! row {
    ($b:literal) => {
        [
            blk::<{ $b * 8 }>,
            blk::<{ $b * 8 + 1 }>,
            blk::<{ $b * 8 + 2 }>,
            blk::<{ $b * 8 + 3 }>,
            blk::<{ $b * 8 + 4 }>,
            blk::<{ $b * 8 + 5 }>,
            blk::<{ $b * 8 + 6 }>,
            blk::<{ $b * 8 + 7 }>,
        ]
    };
}

static L1I: [[Blk; 8]; 64] = [
    row!(0),
    row!(1),
    row!(2),
    row!(3),
    row!(4),
    row!(5),
    row!(6),
    row!(7),
    row!(8),
    row!(9),
    row!(10),
    row!(11),
    row!(12),
    row!(13),
    row!(14),
    row!(15),
    row!(16),
    row!(17),
    row!(18),
    row!(19),
    row!(20),
    row!(21),
    row!(22),
    row!(23),
    row!(24),
    row!(25),
    row!(26),
    row!(27),
    row!(28),
    row!(29),
    row!(30),
    row!(31),
    row!(32),
    row!(33),
    row!(34),
    row!(35),
    row!(36),
    row!(37),
    row!(38),
    row!(39),
    row!(40),
    row!(41),
    row!(42),
    row!(43),
    row!(44),
    row!(45),
    row!(46),
    row!(47),
    row!(48),
    row!(49),
    row!(50),
    row!(51),
    row!(52),
    row!(53),
    row!(54),
    row!(55),
    row!(56),
    row!(57),
    row!(58),
    row!(59),
    row!(60),
    row!(61),
    row!(62),
    row!(63),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Before: one uncore thread per other CPU, each with 2.5x the LLC: about 5 GiB on 64
    /// CPUs with a 32 MiB LLC. Now the buffers stay under MAX_ARENA_BYTES, with at least one
    /// uncore thread where there is another CPU.
    #[test]
    fn the_kernels_buffers_stay_under_the_cap() {
        let big = CacheSizes {
            l1d: 48 << 10,
            l2: 2 << 20,
            llc: 32 << 20,
        };
        let n = uncore_threads_within(2, 62, big, MAX_ARENA_BYTES);
        assert!(n >= 1);
        let total = 2 * core_bytes(big) + n * uncore_bytes(big);
        assert!(total <= MAX_ARENA_BYTES, "{} MiB", total >> 20);
        assert!(
            62 * uncore_bytes(big) > 4 << 30,
            "the uncapped case was ~5 GiB"
        );
        let small = CacheSizes {
            l1d: 32 << 10,
            l2: 256 << 10,
            llc: 4 << 20,
        };
        assert_eq!(uncore_threads_within(1, 1, small, MAX_ARENA_BYTES), 1);
        assert_eq!(uncore_threads_within(1, 0, small, MAX_ARENA_BYTES), 0);
        assert_eq!(uncore_threads_within(1, 8, big, 1), 1, "always one");
    }
    use std::{fs::OpenOptions, os::unix::fs::OpenOptionsExt as _};

    struct Sleepy;
    impl Observer for Sleepy {
        fn window(&mut self, dur: Duration) -> Result<Window, DiagnoseError> {
            std::thread::sleep(dur);
            Ok(Window::from_samples(&mut [1.0]))
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("32K\n"), Some(32 << 10));
        assert_eq!(parse_size("32M"), Some(32 << 20));
        assert_eq!(parse_size("512"), Some(512));
        let c = CacheSizes::of_host();
        assert!(c.l1d < c.l2 && c.l2 <= c.llc, "{c:?}");
    }

    /// A directory another user could have prepared, under a root-owned location.
    fn planted_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("seer-mb-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    fn small_placement(disk_dir: PathBuf) -> Placement {
        Placement {
            cpus: vec![0],
            uncore_cpus: vec![0],
            disk_dir,
            disk_fallback: None,
            net_dest: "127.0.0.1:9".parse().expect("addr"),
            memcap_bytes: 16 << 20,
        }
    }

    const SMALL: CacheSizes = CacheSizes {
        l1d: 32 << 10,
        l2: 256 << 10,
        llc: 1 << 20,
    };

    #[test]
    fn disk_kernel_follows_no_planted_symlink() {
        let d = planted_dir("link");
        let victim = d.join("victim");
        std::fs::write(&victim, "precious\n").expect("victim");
        let work = d.join("cwd");
        std::fs::create_dir(&work).expect("mkdir");
        // Every name the old code could use, for this process (the diagnosing agent).
        std::os::unix::fs::symlink(
            &victim,
            work.join(format!(".seer-diagnose-{}", std::process::id())),
        )
        .expect("plant");
        let a = Arena::new(&small_placement(work.clone()), SMALL).expect("arena");
        let got = std::fs::read_to_string(&victim).expect("read victim");
        let _ = std::fs::remove_dir_all(&d);
        assert_eq!(
            got, "precious\n",
            "the disk kernel wrote through a planted link"
        );
        assert!(
            a.uncore.iter().all(|m| m.disk.is_some()),
            "disk kernel unavailable: {:?}",
            a.unavailable
        );
    }

    #[test]
    fn disk_kernel_does_not_hang_on_a_planted_fifo() {
        let d = planted_dir("fifo");
        let fifo = d.join(format!(".seer-diagnose-{}", std::process::id()));
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666))
            .expect("mkfifo");
        let (tx, rx) = std::sync::mpsc::channel();
        let p = small_placement(d.clone());
        std::thread::spawn(move || {
            let _ = tx.send(Arena::new(&p, SMALL).map(|a| a.unavailable));
        });
        let got = rx.recv_timeout(Duration::from_secs(5));
        if got.is_err() {
            // Let the stuck opener go before failing.
            let _ = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo);
        }
        let _ = std::fs::remove_dir_all(&d);
        let unavailable = got
            .expect("the disk kernel hung on a planted FIFO")
            .expect("arena");
        assert!(unavailable.is_empty(), "{unavailable:?}");
    }

    #[test]
    fn disk_kernel_writes_in_the_culprits_cwd_through_proc() {
        // This process stands for the culprit.
        let cwd = PathBuf::from(format!("/proc/{}/cwd", std::process::id()));
        let before = std::fs::read_dir(&cwd).expect("list cwd").count();
        let a = Arena::new(&small_placement(cwd.clone()), SMALL).expect("arena");
        assert!(a.unavailable.is_empty(), "{:?}", a.unavailable);
        assert!(a.uncore.iter().all(|m| m.disk.is_some()));
        assert_eq!(
            std::fs::read_dir(&cwd).expect("list cwd").count(),
            before,
            "the disk kernel left a name in the culprit's folder"
        );
    }

    #[test]
    fn disk_kernel_falls_back_to_seers_own_folder_or_says_why() {
        let d = planted_dir("fallback");
        let own = d.join("own");
        let mut p = small_placement(d.join("no-such-folder"));
        p.disk_fallback = Some(own.clone());
        let a = Arena::new(&p, SMALL).expect("arena");
        let listed = std::fs::read_dir(&own).map(|r| r.count());
        let own_mode = std::fs::metadata(&own).map(|m| {
            use std::os::unix::fs::PermissionsExt as _;
            m.permissions().mode() & 0o7777
        });
        // A fallback folder others can write is refused: the kernel is then unavailable.
        let open = d.join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("chmod");
        p.disk_fallback = Some(open.clone());
        let b = Arena::new(&p, SMALL).expect("arena");
        let _ = std::fs::remove_dir_all(&d);
        assert!(a.unavailable.is_empty(), "{:?}", a.unavailable);
        assert!(a.uncore.iter().all(|m| m.disk.is_some()));
        assert_eq!(listed.expect("own folder"), 0, "a name was left behind");
        assert_eq!(own_mode.expect("own folder"), 0o700);
        let why = &b.unavailable.first().expect("disk unavailable").1;
        assert!(why.contains("no-such-folder"), "{why}");
        assert!(why.contains("writable") && why.contains("open"), "{why}");
        assert!(b.uncore.iter().all(|m| m.disk.is_none()));
    }

    #[test]
    fn every_kernel_runs_for_its_burst_and_does_work() {
        let dir = std::env::temp_dir();
        let p = Placement {
            cpus: vec![0],
            uncore_cpus: vec![0],
            disk_dir: dir,
            disk_fallback: None,
            net_dest: "127.0.0.1:9".parse().expect("addr"),
            memcap_bytes: 16 << 20,
        };
        let sizes = CacheSizes {
            l1d: 32 << 10,
            l2: 256 << 10,
            llc: 4 << 20,
        };
        let mut a = Arena::new(&p, sizes).expect("arena");
        for k in Resource::ALL {
            // Three bursts: on a loaded machine a pinned thread may miss one 10 ms burst.
            let mut ops = 0;
            for _ in 0..3 {
                let t0 = Instant::now();
                let (_, n) = a
                    .burst(k, 0.5, Duration::from_millis(10), &mut Sleepy)
                    .expect("burst");
                let el = t0.elapsed();
                assert!(
                    el < Duration::from_millis(100),
                    "{k:?} overran its 10 ms burst: {el:?}"
                );
                ops += n;
            }
            assert!(ops > 0, "{k:?} did no work in three bursts");
        }
    }
}
