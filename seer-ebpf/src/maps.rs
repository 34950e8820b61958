//! Maps and globals. Layouts live in `seer-common`; the agent sizes nothing here at run time.
use core::ffi::c_void;

use aya_ebpf::{
    bindings::BPF_SK_STORAGE_GET_F_CREATE,
    btf_maps::SkStorage,
    helpers::generated::{bpf_probe_read_kernel, bpf_sk_storage_get},
    macros::{btf_map, map},
    maps::{Array, HashMap, PerCpuArray},
};
use seer_common::{
    ConnectKey, Counters, Drops, KernelOffsets, LatencyHist, MAX_SLOTS, SlotCounters, SockState,
    Turn,
};

/// Kernel struct offsets from the running kernel's BTF, set by the agent at load time.
#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = KernelOffsets::ZERO;

/// Local TCP port -> service slot + 1 (0: not watched). Written by the agent.
#[map]
pub static PORT_SLOT: Array<u16> = Array::with_max_entries(65536, 0);

/// Process id (tgid) -> service slot + 1, indexed by tgid (an array lookup the verifier inlines,
/// not a hash: every epoll call on the host pays it). The agent sizes it to `pid_max` at load.
#[map]
pub static TGID_SLOT: Array<u16> = Array::with_max_entries(32768, 0);

#[map]
pub static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static LATENCY: PerCpuArray<LatencyHist> = PerCpuArray::with_max_entries(MAX_SLOTS as u32, 0);

/// Socket-local storage: the sockets seer observes (listeners and server-side connections of
/// watched services) and their open request turn. Freed by the kernel with the socket.
#[btf_map]
pub static SOCKS: SkStorage<SockState> = SkStorage::new();

/// The `SOCKS` entry of `sk` (a BTF socket pointer), created if `create`.
#[inline(always)]
pub fn sock_state(sk: *const u8, create: bool) -> Option<&'static mut SockState> {
    let flags = if create {
        BPF_SK_STORAGE_GET_F_CREATE as u64
    } else {
        0
    };
    // SAFETY: `SOCKS` is a socket-storage map and `sk` a socket the verifier knows by its BTF
    // type; the helper returns NULL or a pointer to this socket's value, valid for this run.
    let p = unsafe {
        bpf_sk_storage_get(
            &raw const SOCKS as *mut c_void,
            sk as *mut c_void,
            core::ptr::null_mut(),
            flags,
        )
    } as *mut SockState;
    // SAFETY: non-null storage pointers point at a live SockState.
    if p.is_null() {
        None
    } else {
        Some(unsafe { &mut *p })
    }
}

/// Threads blocked in epoll_wait right now, keyed by pid_tgid: since when, which slot. (A hash,
/// not task-local storage: task storage needs 5.11+ and a map the kernel cannot create fails
/// the whole object; the difference measured here is ~50 ns per epoll call.)
#[map]
pub static EPOLL_START: HashMap<u64, Turn> = HashMap::with_max_entries(16384, 0);

/// connect() calls by process and destination port, for the call graph.
#[map]
pub static CONNECTS: HashMap<ConnectKey, u64> = HashMap::with_max_entries(16384, 0);

#[map]
pub static DROPS: PerCpuArray<Drops> = PerCpuArray::with_max_entries(1, 0);

/// Reads one offset from `OFFSETS`; volatile so the compiler keeps the load (the verifier then
/// sees the frozen read-only value as a constant).
macro_rules! offset {
    ($field:ident) => {
        // SAFETY: OFFSETS is a plain static; reading a field has no side effects.
        unsafe { core::ptr::read_volatile(&raw const $crate::maps::OFFSETS.$field) as usize }
    };
}
pub(crate) use offset;

/// Reads a `T` at `base + off` in kernel memory; zero on a fault. Branch-free: the helper
/// zeroes its destination itself when the read faults, so its result is not tested. (A test
/// per read doubled the paths the verifier walks: with one more field, `emit_tcp` passed the
/// 1M-instruction limit on 5.10 and 6.1.)
#[inline(always)]
pub fn read_kernel<T: Copy>(base: *const u8, off: usize) -> T {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: the helper writes size_of::<T>() bytes to `v` in every case (the value, or
    // zeroes on a fault), and T is plain data for which all-zero is a valid value.
    unsafe {
        bpf_probe_read_kernel(
            v.as_mut_ptr() as *mut c_void,
            core::mem::size_of::<T>() as u32,
            base.wrapping_add(off) as *const c_void,
        );
        v.assume_init()
    }
}

/// Reads a `T` at `base + off` from a pointer the verifier knows by its BTF type (a tp_btf
/// argument): a plain load, no helper call. `off` must come from `OFFSETS` (a constant to the
/// verifier, which checks the access against the kernel's BTF).
#[inline(always)]
pub fn load_btf<T: Copy>(base: *const u8, off: usize) -> T {
    // SAFETY: the verifier rejects the program unless `base + off` is a readable field of the
    // BTF type of `base`; at run time a faulting BTF load reads as zero.
    unsafe { core::ptr::read_volatile(base.wrapping_add(off) as *const T) }
}

/// Slot of a watched local port.
#[inline(always)]
pub fn port_slot(port: u16) -> Option<usize> {
    match PORT_SLOT.get(port as u32) {
        Some(&v) if v != 0 && (v as usize) <= MAX_SLOTS => Some(v as usize - 1),
        _ => None,
    }
}

/// This CPU's counters for `slot`.
#[inline(always)]
pub fn slot_counters(slot: usize) -> Option<&'static mut SlotCounters> {
    let slot = verifier_bound(slot, MAX_SLOTS)?;
    let c = COUNTERS.get_ptr_mut(0)?;
    // SAFETY: the per-CPU array value is valid for the program's run on this CPU, and no other
    // program runs on this CPU concurrently with us for this map entry (no preemption in BPF).
    unsafe { (*c).slots.get_mut(slot) }
}

/// Re-checks `i < n` in a way the compiler cannot drop: LLVM may prove the bound from earlier
/// code and elide the check, and the verifier, which tracks less, then rejects the indexing.
#[inline(always)]
pub fn verifier_bound(i: usize, n: usize) -> Option<usize> {
    // SAFETY: a volatile read of a local; it only hides the value's provenance from LLVM.
    let i = unsafe { core::ptr::read_volatile(&i) };
    if i < n { Some(i) } else { None }
}

#[inline(always)]
pub fn drops() -> Option<&'static mut Drops> {
    // SAFETY: as in `slot_counters`.
    DROPS.get_ptr_mut(0).map(|d| unsafe { &mut *d })
}
