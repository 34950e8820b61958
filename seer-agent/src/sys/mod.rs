//! The one door to the kernel: BPF (load, attach, read maps), BTF, /proc, capabilities.
//! Everything above this module works on plain data (`SockRecord`, `SlotCounters`, ...).
pub mod bpf;
pub mod btf;
pub mod caps;
pub mod procfs;
pub mod rawbpf;
pub mod seccomp;
pub mod tracefs;
