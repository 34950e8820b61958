//! `seer-agent selftest`: seer's channels against this kernel's own view, on sockets the test
//! makes itself. Made for the kernel matrix (`cargo xtask kernels` boots other kernels under
//! QEMU and runs it there), and useful on any host: it says which channels work here and
//! whether the values read through BTF-resolved offsets are right.
use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    thread,
    time::Duration,
};

use seer_common::{LAT_BUCKETS, MAX_SLOTS, SlotCounters, SockRecord, TCP_LISTEN, quantile_us};
use serde_json::{Value, json};

use crate::sys::bpf::{ProbeOptions, Probes, SocketWalk};

struct Checks {
    list: Vec<Value>,
}

impl Checks {
    fn check(&mut self, name: &str, got: f64, want: f64, ok: bool) {
        self.list
            .push(json!({ "check": name, "ok": ok, "got": got, "want": want }));
    }
    fn skip(&mut self, name: &str, why: &str) {
        self.list
            .push(json!({ "check": name, "ok": Value::Null, "skipped": why }));
    }
}

/// Received-but-unread bytes (or accept backlog for listeners) per local port, as the kernel
/// itself reports them in /proc/net/tcp{,6}: the independent witness.
fn proc_net_rx_queue(port: u16, listen: bool) -> u64 {
    let mut sum = 0;
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(st), Some(q)) = (cols.get(1), cols.get(3), cols.get(4)) else {
                continue;
            };
            let lport = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let is_listen = *st == "0A";
            if lport == Some(port) && is_listen == listen {
                sum += q
                    .split(':')
                    .nth(1)
                    .and_then(|v| u64::from_str_radix(v, 16).ok())
                    .unwrap_or(0);
            }
        }
    }
    sum
}

fn sum_records(
    recs: &[SockRecord],
    port: u16,
    listen: bool,
    f: impl Fn(&SockRecord) -> u32,
) -> u64 {
    recs.iter()
        .filter(|r| r.lport == port && (r.state == TCP_LISTEN) == listen)
        .map(|r| f(r) as u64)
        .sum()
}

fn counters(p: &mut Probes, slot: usize) -> anyhow::Result<SlotCounters> {
    let mut all = Box::new([SlotCounters::default(); MAX_SLOTS]);
    p.read_counters(&mut all)?;
    Ok(all[slot])
}

pub fn selftest(as_json: bool) -> anyhow::Result<bool> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let mut p = Probes::load(&ProbeOptions {
        tc_ingress: true,
        interfaces: Some(vec!["lo".into()]),
        turns: true,
        epoll: true,
    })?;
    let has = |p: &Probes, prog: &str| p.hooks.iter().any(|h| h.program == prog);
    let mut c = Checks { list: Vec::new() };

    // Queues: a server that accepts and never reads, and one that never accepts.
    let unread = TcpListener::bind("127.0.0.1:0")?;
    let pending = TcpListener::bind("127.0.0.1:0")?;
    let (pu, pp) = (unread.local_addr()?.port(), pending.local_addr()?.port());
    p.set_port_slot(pu, Some(0))?;
    p.set_port_slot(pp, Some(1))?;
    let before = counters(&mut p, 0)?;
    let mut clients = Vec::new();
    let mut held = Vec::new();
    let mut written = 0u64;
    for n in [1000usize, 2000, 3000] {
        let mut s = TcpStream::connect(("127.0.0.1", pu))?;
        s.set_nodelay(true)?;
        s.write_all(&vec![b'x'; n])?;
        written += n as u64;
        held.push(unread.accept()?.0);
        clients.push(s);
    }
    let backlog: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(("127.0.0.1", pp)))
        .collect::<Result<_, _>>()?;
    for _ in 0..5 {
        clients[0].write_all(b"ping")?;
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(Duration::from_millis(100));
    written += 20;
    // NIC arrivals for the port: every segment these clients emitted (handshake included), by
    // their own TCP_INFO. The server never reads, so the clients get nothing to acknowledge.
    let emitted: u64 = clients.iter().map(crate::sys::thread::tcp_segs_out).sum();

    let mut recs = Vec::new();
    p.read_sockets(&mut recs, true)?;
    let witness_rx = proc_net_rx_queue(pu, false);
    let witness_backlog = proc_net_rx_queue(pp, true);
    let rx = sum_records(&recs, pu, false, |r| r.rx_queue);
    c.check(
        "rx_queue_bytes (full walk) == /proc/net/tcp",
        rx as f64,
        witness_rx as f64,
        rx == witness_rx && rx == written,
    );
    // NIC arrivals from the sockets' own counters (the default path): a connection's segs_in
    // counts every segment from its SYN on (measured: equal to the sender's segs_out).
    let segs_in = sum_records(&recs, pu, false, |r| r.segs_in);
    c.check(
        "nic_rx_pkts (sockets' segs_in) == segments the senders emitted",
        segs_in as f64,
        emitted as f64,
        segs_in == emitted,
    );
    let received: u64 = recs
        .iter()
        .filter(|r| r.lport == pu && r.state != TCP_LISTEN)
        .map(|r| r.bytes_received)
        .sum();
    c.check(
        "nic_rx_bytes (sockets' bytes_received) == bytes the senders wrote",
        received as f64,
        written as f64,
        received == written,
    );
    let bl = sum_records(&recs, pp, true, |r| r.ack_backlog);
    c.check(
        "accept_backlog == /proc/net/tcp",
        bl as f64,
        witness_backlog as f64,
        bl == witness_backlog && bl == 4,
    );
    // Discovery's socket owners: the walk over every process's files names this process as
    // the holder of its listener, as /proc/self/fd would.
    let mut owners = Vec::new();
    if p.read_owners(&mut owners)? {
        let me = std::process::id();
        let held = owners
            .iter()
            .filter(|r| r.lport == pu && r.state == TCP_LISTEN)
            .map(|r| r.tgid)
            .collect::<Vec<_>>();
        c.check(
            "socket owners (iter/task_file, every process): this process holds its listener",
            held.first().copied().unwrap_or(0) as f64,
            me as f64,
            held == [me],
        );
    } else {
        c.skip(
            "socket owners (iter/task_file, every process)",
            "refused by this kernel: discovery reads /proc/PID/fd",
        );
    }
    // Every per-tick walk this kernel offers must see the same queues as the full walk.
    p.watch_processes([std::process::id()])?;
    let walks: Vec<SocketWalk> = p
        .walks()
        .into_iter()
        .filter(|w| *w != SocketWalk::Full)
        .collect();
    if walks.is_empty() {
        c.skip(
            "rx_queue_bytes (per-tick walk)",
            "no per-tick walk on this kernel (socket-storage and per-process iterators refused): every tick walks every socket",
        );
    }
    for w in walks {
        recs.clear();
        p.read_sockets_by(w, &mut recs)?;
        let rx = sum_records(&recs, pu, false, |r| r.rx_queue);
        c.check(
            &format!(
                "rx_queue_bytes (per-tick walk: {}) == /proc/net/tcp",
                w.name()
            ),
            rx as f64,
            witness_rx as f64,
            rx == witness_rx,
        );
        let bl = sum_records(&recs, pp, true, |r| r.ack_backlog);
        c.check(
            &format!(
                "accept_backlog (per-tick walk: {}) == /proc/net/tcp",
                w.name()
            ),
            bl as f64,
            witness_backlog as f64,
            bl == witness_backlog,
        );
    }
    if has(&p, "seer_tc_ingress") {
        let got = counters(&mut p, 0)?.nic_rx_pkts - before.nic_rx_pkts;
        c.check(
            "nic_rx_pkts (tc ingress) == segments the senders emitted",
            got as f64,
            emitted as f64,
            got == emitted,
        );
    } else {
        c.skip("nic_rx_pkts", "tc ingress refused by this kernel");
    }
    drop((clients, held, backlog));

    // Turns: a server answering each line after 20 ms.
    if has(&p, "seer_recv") && has(&p, "seer_send") {
        let srv = TcpListener::bind("127.0.0.1:0")?;
        let port = srv.local_addr()?.port();
        p.set_port_slot(port, Some(2))?;
        let mut lat0 = [0u64; LAT_BUCKETS];
        p.read_latency(2, &mut lat0)?;
        let t = thread::spawn(move || -> std::io::Result<()> {
            let (mut s, _) = srv.accept()?;
            let mut buf = [0u8; 64];
            for _ in 0..5 {
                let _ = s.read(&mut buf)?;
                thread::sleep(Duration::from_millis(20));
                s.write_all(b"ok\n")?;
            }
            Ok(())
        });
        let mut cl = TcpStream::connect(("127.0.0.1", port))?;
        let mut buf = [0u8; 8];
        for _ in 0..5 {
            cl.write_all(b"get\n")?;
            let _ = cl.read(&mut buf)?;
        }
        let _ = t.join();
        let k = counters(&mut p, 2)?;
        c.check(
            "requests completed",
            k.req_completed as f64,
            5.0,
            k.req_completed == 5,
        );
        let mut lat = [0u64; LAT_BUCKETS];
        p.read_latency(2, &mut lat)?;
        for (l, b) in lat.iter_mut().zip(lat0) {
            *l -= b;
        }
        let p50 = quantile_us(&lat, 0.5);
        c.check(
            "latency p50 of a 20 ms server (us)",
            p50 as f64,
            20_000.0,
            (20_000..=26_000).contains(&p50),
        );
    } else {
        c.skip(
            "request turns and latency",
            "sock_recv_length/sock_send_length not on this kernel",
        );
    }

    // epoll: exactly 20 calls, 5 of which return one event.
    if has(&p, "seer_epoll_exit") {
        p.set_tgid_slot(std::process::id(), Some(3))?;
        let k0 = counters(&mut p, 3)?;
        // SAFETY: epoll/eventfd syscalls on descriptors this function creates and closes.
        unsafe {
            let ep = libc::epoll_create1(0);
            let ev = libc::eventfd(1, 0);
            let mut reg = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 1,
            };
            libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, ev, &mut reg);
            let mut out = [libc::epoll_event { events: 0, u64: 0 }; 4];
            for i in 0..20 {
                if i == 5 {
                    let mut v = 0u64;
                    libc::read(ev, &mut v as *mut u64 as *mut _, 8);
                }
                libc::epoll_wait(ep, out.as_mut_ptr(), 4, 0);
            }
            libc::close(ev);
            libc::close(ep);
        }
        let k = counters(&mut p, 3)?;
        let (calls, events) = (
            k.epoll_calls - k0.epoll_calls,
            k.epoll_events - k0.epoll_events,
        );
        c.check("epoll calls", calls as f64, 20.0, calls == 20);
        c.check("epoll events", events as f64, 5.0, events == 5);
    } else {
        c.skip("epoll", "syscall tracepoints unavailable");
    }

    let ok = c.list.iter().all(|v| v["ok"] != false);
    let report = json!({
        "kernel": release,
        "hooks": p.hooks,
        "missing": p.missing,
        "checks": c.list,
        "ok": ok,
    });
    if as_json {
        println!("{report}");
    } else {
        println!("seer selftest on kernel {release}:");
        for v in &c.list {
            let mark = match v["ok"].as_bool() {
                Some(true) => "ok     ",
                Some(false) => "FAILED ",
                None => "skipped",
            };
            println!(
                "  {mark} {}  (got {} want {}){}",
                v["check"].as_str().unwrap_or(""),
                v["got"],
                v["want"],
                v["skipped"]
                    .as_str()
                    .map(|s| format!(" {s}"))
                    .unwrap_or_default()
            );
        }
        for m in &p.missing {
            println!("  missing: {}: {}", m.what, m.error);
        }
    }
    Ok(ok)
}
