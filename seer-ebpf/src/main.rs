//! seer's kernel side: counters per service slot, read by the agent once per tick.
//!
//! Cost rules (see DESIGN.md): everything a per-tick snapshot can see is read by the TCP socket
//! iterator (`iter/tcp`), which runs only when the agent reads it. Event hooks exist only for what
//! a snapshot cannot see: NIC arrivals per port (tc ingress), request turns and their latency
//! (`sock_recv_length` / `sock_send_length`), epoll wake-ups, and connect() for the call graph.
//! Each hook leaves as early as it can when the socket or process is not watched.
#![no_std]
#![no_main]

mod iter;
mod maps;
mod net;
mod sockets;
mod syscalls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: eBPF programs cannot panic; the verifier rejects any path that reaches here.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
