//! Contention generators for the fault injector, run inside a victim's cgroup (and namespace) as
//! `seer-testbed-svc hog`. Each works in duty cycles of 10 ms: `level` (0..=1, read as lines
//! `level L` on stdin) is the busy fraction, so ramps and bursts shape them like any fault.
//! The hog exits when stdin closes.
use std::{
    io::{BufRead as _, Write as _},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

const CYCLE: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HogKind {
    /// `ceil(intensity)` spinning threads sharing `intensity` cores.
    Cpu,
    /// One thread reading a 32 MiB buffer at random (larger than a typical LLC share).
    Cache,
    /// `intensity` threads streaming over 64 MiB each (memory bandwidth).
    Membw,
    /// Keeps `intensity * level` MiB allocated and touched (memory capacity).
    Mem,
    /// `intensity` threads writing 1 MiB blocks with fdatasync (disk I/O).
    Disk,
}

struct Level(AtomicU64);

impl Level {
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
    fn set(&self, v: f64) {
        self.0.store(v.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }
}

/// Pins the calling process (and the threads it starts later) to `cpus`.
pub fn pin_to(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        if c >= libc::CPU_SETSIZE as usize {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("CPU {c} out of range"),
            ));
        }
        // SAFETY: c < CPU_SETSIZE, checked above.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: pid 0 is this thread; the set is initialised and its size is passed.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Runs the hog until stdin closes. `dir` holds the disk hog's scratch file.
pub fn run(kind: HogKind, intensity: f64, dir: &Path) -> std::io::Result<()> {
    let level = Arc::new(Level(AtomicU64::new(0f64.to_bits())));
    let threads = match kind {
        HogKind::Cpu | HogKind::Membw | HogKind::Disk => intensity.ceil().max(1.0) as usize,
        HogKind::Cache | HogKind::Mem => 1,
    };
    let share = match kind {
        HogKind::Cpu => intensity / threads as f64,
        _ => 1.0,
    };
    for i in 0..threads {
        let level = level.clone();
        let path = dir.join(format!("disk-hog-{}-{i}", std::process::id()));
        thread::spawn(move || worker(kind, intensity, share, &level, path));
    }
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line?;
        if let Some(v) = line
            .strip_prefix("level ")
            .and_then(|v| v.trim().parse().ok())
        {
            level.set(v);
        }
        let _ = std::io::stdout().flush();
    }
    for i in 0..threads {
        let _ = std::fs::remove_file(dir.join(format!("disk-hog-{}-{i}", std::process::id())));
    }
    Ok(())
}

fn worker(kind: HogKind, intensity: f64, share: f64, level: &Level, path: PathBuf) {
    let mut buf: Vec<u8> = match kind {
        HogKind::Cache => vec![1; 32 << 20],
        HogKind::Membw => vec![1; 64 << 20],
        HogKind::Disk => vec![7; 1 << 20],
        _ => Vec::new(),
    };
    let mut file = None;
    let mut acc = 0u64;
    loop {
        let start = Instant::now();
        let busy = CYCLE.mul_f64((level.get() * share).clamp(0.0, 1.0));
        match kind {
            HogKind::Mem => {
                let want = ((intensity * level.get()) as usize) << 20;
                buf.resize(want, 1);
                // Touch one byte per page so the memory stays resident.
                for i in (0..buf.len()).step_by(4096) {
                    buf[i] = buf[i].wrapping_add(1);
                }
                thread::sleep(CYCLE * 10);
                continue;
            }
            _ => {
                while start.elapsed() < busy {
                    acc = acc.wrapping_add(step(kind, &mut buf, &mut file, &path, acc));
                }
            }
        }
        std::hint::black_box(acc);
        if let Some(rest) = CYCLE.checked_sub(start.elapsed()) {
            thread::sleep(rest);
        }
    }
}

/// One small unit of the hog's work; returns something to keep the optimiser honest.
fn step(
    kind: HogKind,
    buf: &mut [u8],
    file: &mut Option<std::fs::File>,
    path: &Path,
    seed: u64,
) -> u64 {
    match kind {
        HogKind::Cpu | HogKind::Mem => {
            (0..1000u64).fold(seed, |a, i| a.wrapping_mul(31).wrapping_add(i))
        }
        HogKind::Cache => {
            let mut x = seed | 1;
            let mut s = 0u64;
            for _ in 0..1000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s += u64::from(buf[(x as usize) % buf.len()]);
            }
            s
        }
        HogKind::Membw => {
            // Writes the next 1 MiB of the buffer (memset: full speed in any build), so that
            // successive steps stream through all of it and never hit in a cache; `seed` (the
            // sum of the 1s returned so far) is the chunk's index.
            let chunks = (buf.len() >> 20).max(1);
            let i = (seed as usize) % chunks;
            if let Some(c) = buf.chunks_mut(1 << 20).nth(i) {
                c.fill(seed as u8);
            }
            1
        }
        HogKind::Disk => {
            use std::io::{Seek as _, SeekFrom};
            if file.is_none() {
                *file = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .open(path)
                    .ok();
            }
            if let Some(f) = file.as_mut() {
                let _ = f.write_all(buf);
                let _ = f.sync_data();
                if f.stream_position().unwrap_or(0) > 64 << 20 {
                    let _ = f.seek(SeekFrom::Start(0));
                }
            }
            1
        }
    }
}
