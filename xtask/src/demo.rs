//! `cargo xtask demo`: seer predicting on a small application with a slow fault, in the live
//! view. Brings up `seer-testbed/scenarios/demo.toml` (nginx -> api -> memcached in one
//! network namespace, 300 requests/s, the cache's CPU quota ramped down three times), runs the
//! agent in that namespace with the shipped model and the QoS `nginx:30` in recommend mode
//! (nothing on the host is changed), and tears everything down when the scenario ends or on
//! Ctrl-C (the testbed and the agent both take the terminal's SIGINT and clean up). The live
//! view's URL is printed: the agent's page, forwarded from the host's loopback into the
//! testbed's namespace for root.
use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::util;

/// Seconds of load: three faults at 20, 60 and 100 s, the last over by 115 s.
const DURATION_S: u32 = 130;

fn testbed_namespaces() -> Vec<String> {
    util::output(Command::new("ip").args(["netns", "list"]))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("seer-tb-") && n.ends_with("-app"))
        .map(str::to_string)
        .collect()
}

/// The agent's listener inside the testbed's namespace, and the port tried first on the host.
const LIVE_PORT: u16 = 9464;

/// The live view from the host: the agent listens on the loopback of the testbed's namespace,
/// so this forwards 127.0.0.1:LIVE_PORT on the host (or a free port) into it. Only root's
/// connections are forwarded (the agent's own rule: its data is root's on this host); another
/// user's connection is closed at once.
fn forward_live_view(ns: String) -> Result<u16> {
    use std::net::TcpListener;
    let l = TcpListener::bind(("127.0.0.1", LIVE_PORT))
        .or_else(|_| TcpListener::bind(("127.0.0.1", 0)))
        .context("binding a loopback port for the live view")?;
    let port = l.local_addr()?.port();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let ns = ns.clone();
            std::thread::spawn(move || relay(c, &ns));
        }
    });
    Ok(port)
}

/// The owner uid of the TCP connection `peer` -> `local` in this thread's namespace.
fn socket_uid(peer: std::net::SocketAddr, local: std::net::SocketAddr) -> Option<u32> {
    let hex = |a: std::net::SocketAddr| match a.ip() {
        std::net::IpAddr::V4(ip) => Some(format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(ip.octets()),
            a.port()
        )),
        std::net::IpAddr::V6(_) => None,
    };
    let (p, l) = (hex(peer)?, hex(local)?);
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let c: Vec<&str> = line.split_whitespace().collect();
        (c.get(1) == Some(&p.as_str()) && c.get(2) == Some(&l.as_str()))
            .then(|| c.get(7)?.parse().ok())
            .flatten()
    })
}

fn relay(client: std::net::TcpStream, ns: &str) {
    let (Ok(peer), Ok(local)) = (client.peer_addr(), client.local_addr()) else {
        return;
    };
    if socket_uid(peer, local) != Some(0) {
        return;
    }
    // This thread only moves into the testbed's namespace (setns is per thread).
    let Ok(f) = std::fs::File::open(format!("/run/netns/{ns}")) else {
        return;
    };
    if nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
        return;
    }
    let Ok(up) = std::net::TcpStream::connect(("127.0.0.1", LIVE_PORT)) else {
        return;
    };
    let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), up.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut u2, &mut c2);
        let _ = c2.shutdown(std::net::Shutdown::Write);
    });
    let (mut c, mut u) = (client, up);
    let _ = std::io::copy(&mut c, &mut u);
    let _ = u.shutdown(std::net::Shutdown::Write);
}

extern "C" fn on_sigint(_: libc::c_int) {}

/// Ctrl-C reaches the testbed and the agent (same process group), which stop and clean up;
/// this process must live on to wait for them, so SIGINT gets a handler that does nothing
/// (not SIG_IGN, which the children would inherit).
fn survive_sigint() {
    // SAFETY: an empty handler with the C ABI signal(2) expects.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
}

pub fn run() -> Result<()> {
    survive_sigint();
    util::step("build the testbed (debug) and the agent (release)");
    util::cargo(&["build", "-p", "seer-testbed"])?;
    util::cargo(&["build", "--release", "-p", "seer-agent"])?;
    let before = testbed_namespaces();
    // In root's own cache, not /tmp: root writing a predictable path in a directory everyone
    // can write would follow whatever link another user planted there.
    let dir = crate::setup::train_venv_dir().parent().map_or_else(
        || std::path::PathBuf::from("/root/.cache/seer"),
        |p| p.join("demo"),
    );
    std::fs::create_dir_all(&dir)?;
    let out = dir.join(format!("run-{}", std::process::id()));
    let log = dir.join("testbed.log");
    util::step(&format!(
        "demo: nginx -> api -> cache, 300 requests/s; the cache's CPU is ramped down at 20, 60 and 100 s ({DURATION_S} s in all; Ctrl-C ends it)"
    ));
    let mut testbed = Command::new(util::root().join("target/debug/seer-testbed"))
        .args(["run", "--scenario"])
        .arg(util::root().join("seer-testbed/scenarios/demo.toml"))
        .args(["--duration", &DURATION_S.to_string(), "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting the testbed")?;
    let t0 = Instant::now();
    let ns = loop {
        if let Some(n) = testbed_namespaces()
            .into_iter()
            .find(|n| !before.contains(n))
        {
            break n;
        }
        if let Some(st) = testbed.try_wait()? {
            bail!(
                "the testbed stopped ({st}) before it was up; its log: {}",
                log.display()
            );
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = testbed.kill();
            bail!("the testbed's namespace did not appear in 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Let the services start and the warm-up pass before the agent's table appears.
    std::thread::sleep(Duration::from_secs(3));
    let mut agent = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(util::root().join("target/release/seer-agent"))
        .args([
            "run",
            "--qos",
            "nginx:30",
            "--mode",
            "recommend",
            "--no-store",
        ])
        .args(["--metrics-addr", &format!("127.0.0.1:{LIVE_PORT}")])
        .spawn()
        .context("starting the agent")?;
    match forward_live_view(ns.clone()) {
        Ok(port) => println!(
            "\nlive view: http://127.0.0.1:{port}/ui  (root on this host; from another machine: ssh -L {port}:127.0.0.1:{port} THIS-HOST)\n"
        ),
        Err(e) => println!("\nno live view from the host ({e}); the agent's table follows\n"),
    }
    // The scenario ends (the testbed tears down and exits) or Ctrl-C ends both.
    let st = loop {
        if let Some(st) = testbed.try_wait()? {
            break st;
        }
        if agent.try_wait()?.is_some() {
            // The agent ended first (Ctrl-C): stop the testbed, which tears down.
            let _ = Command::new("kill")
                .args(["-INT", &testbed.id().to_string()])
                .status();
            let t = Instant::now();
            while testbed.try_wait()?.is_none() && t.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = testbed.kill();
            break testbed.wait()?;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = Command::new("kill")
        .args(["-INT", &agent.id().to_string()])
        .status();
    let _ = agent.wait();
    // Whatever is left (a testbed killed before its teardown): `down` for this run only.
    if let Some(id) = ns
        .strip_prefix("seer-tb-")
        .and_then(|r| r.strip_suffix("-app"))
        && testbed_namespaces().contains(&ns)
    {
        let _ = Command::new(util::root().join("target/debug/seer-testbed"))
            .args(["down", "--run", id])
            .status();
    }
    let _ = std::fs::remove_dir_all(&out);
    println!(
        "\ndemo over (testbed {st}); the testbed's log: {}",
        log.display()
    );
    Ok(())
}
