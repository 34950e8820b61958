//! The ten tunable contentious kernels, one per shared resource. Each runs for a bounded
//! burst at a duty cycle ("intensity", 0..=1 of every 1 ms period), in threads pinned to the
//! culprit's CPUs; buffers are sized from the host's cache sizes and allocated up front so a
//! burst only contends, never page-faults (except the memory-capacity kernel, whose job it is).
use std::{
    fs::{File, OpenOptions},
    hint::black_box,
    net::{SocketAddr, UdpSocket},
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

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

/// Where the kernels contend.
#[derive(Clone, Debug)]
pub struct Placement {
    /// The culprit's CPUs: core kernels (CPU, L1i, L1d, L2) time-share them with it.
    pub cpus: Vec<usize>,
    /// CPUs for the uncore and device kernels (LLC, memory, network, disk): the host's other
    /// CPUs, so that they contend on the shared resource and not for the culprit's CPU time
    /// (the culprit's own CPUs when it may run everywhere).
    pub uncore_cpus: Vec<usize>,
    /// Directory on the culprit's filesystem (the disk kernel writes an unlinked file there).
    pub disk_dir: PathBuf,
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
        let disk_path = p
            .disk_dir
            .join(format!(".seer-diagnose-{}", std::process::id()));
        let mut threads = Vec::new();
        let n_core = p.cpus.len();
        for (i, &cpu) in p.cpus.iter().chain(&p.uncore_cpus).enumerate() {
            let core = i < n_core;
            let disk = match open_disk(&disk_path) {
                Ok(f) if !core => Some(f),
                Ok(_) => None,
                Err(e) => {
                    if unavailable.is_empty() {
                        unavailable.push((
                            Resource::Disk,
                            format!("cannot write in {}: {e}", p.disk_dir.display()),
                        ));
                    }
                    None
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

fn open_disk(path: &Path) -> std::io::Result<File> {
    let open = |direct: bool| {
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .custom_flags(if direct { libc::O_DIRECT } else { 0 })
            .open(path)
    };
    // tmpfs and some overlays refuse O_DIRECT: fall back to buffered writes + fdatasync.
    let f = open(true).or_else(|_| open(false))?;
    // Unlinked at once: the space goes back when the diagnosis ends, even if it is killed.
    std::fs::remove_file(path)?;
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

    #[test]
    fn every_kernel_runs_for_its_burst_and_does_work() {
        let dir = std::env::temp_dir();
        let p = Placement {
            cpus: vec![0],
            uncore_cpus: vec![0],
            disk_dir: dir,
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
