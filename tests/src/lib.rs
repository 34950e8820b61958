//! Shared helpers for seer's integration tests: throwaway network namespaces joined by veth,
//! child processes that die with the test, the agent run as a subprocess, and `ss` as witness.
//!
//! Tests need root (they create namespaces and load eBPF programs). A test that cannot run here
//! prints `SKIP:` and why; it never passes silently.
use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod loadgen;
pub mod stack;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Skips (with a printed reason) unless running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            println!("SKIP: needs root (network namespaces, eBPF)");
            return;
        }
    };
}

/// The workspace's target directory (tests run from target/<profile>/deps).
pub fn target_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // Test binaries live in target/<profile>/deps, other binaries in target/<profile>.
    let mut dir = exe.parent().expect("exe dir");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target/<profile>");
    }
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --bins` (cargo xtask test does)",
        p.display()
    );
    p
}

pub fn agent_bin() -> PathBuf {
    target_bin("seer-agent")
}

/// A shipped systemd unit (`deploy/...`), its ExecStart pointed at the built agent: asserts
/// that `systemd-analyze verify` has nothing to say about it and returns the exposure level
/// `systemd-analyze security` rates it (lower is better; "OK" up to 5).
pub fn unit_exposure(unit: &std::path::Path) -> f64 {
    let text = std::fs::read_to_string(unit).unwrap_or_else(|e| panic!("{}: {e}", unit.display()));
    let name = unit
        .file_name()
        .expect("unit name")
        .to_string_lossy()
        .to_string();
    let dir = std::env::temp_dir().join(format!("seer-unit-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let copy = dir.join(&name);
    std::fs::write(
        &copy,
        text.replace(
            "/usr/local/bin/seer-agent",
            &agent_bin().display().to_string(),
        ),
    )
    .expect("unit copy");
    let run = |args: &[&str]| {
        Command::new("systemd-analyze")
            .args(args)
            .arg(&copy)
            .output()
            .expect("systemd-analyze (Debian package systemd) must be installed")
    };
    let v = run(&["verify"]);
    let err = String::from_utf8_lossy(&v.stderr);
    assert!(
        v.status.success() && err.trim().is_empty(),
        "verify {name}: {err}"
    );
    let s = run(&["security", "--offline=yes"]);
    let out = String::from_utf8_lossy(&s.stdout);
    let _ = std::fs::remove_dir_all(&dir);
    out.lines()
        .find_map(|l| {
            l.split(&format!("Overall exposure level for {name}:"))
                .nth(1)
        })
        .and_then(|r| r.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in: {out}{}",
                String::from_utf8_lossy(&s.stderr)
            )
        })
}

pub fn testsrv_bin() -> PathBuf {
    target_bin("seer-testsrv")
}

/// GET http://127.0.0.1:PORT/PATH from inside namespace `ns` (as root, as the agent's
/// listener wants for its data): the body.
pub fn http_in(ns: &str, port: u16, path: &str) -> String {
    sh(&format!(
        "ip netns exec {ns} python3 -c \"import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:{port}{path}').read().decode())\""
    ))
}

pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

static NS_SEQ: AtomicU32 = AtomicU32::new(0);

/// A pair of network namespaces (`server`, `client`) joined by a veth pair:
/// server side `198.51.100.1/30` on `sv0`, client side `198.51.100.2/30` on `cv0`.
/// Both namespaces have `lo` up. Removed on drop, also when the test fails.
pub struct NetPair {
    pub server: String,
    pub client: String,
}

pub const SERVER_ADDR: &str = "198.51.100.1";

impl NetPair {
    pub fn new() -> Self {
        let n = NS_SEQ.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}{}", std::process::id(), n);
        let p = NetPair {
            server: format!("seer-s{id}"),
            client: format!("seer-c{id}"),
        };
        sh(&format!(
            "set -e; ip netns add {s}; ip netns add {c}; \
             ip link add sv0 netns {s} type veth peer name cv0 netns {c}; \
             ip -n {s} addr add 198.51.100.1/30 dev sv0; ip -n {c} addr add 198.51.100.2/30 dev cv0; \
             ip -n {s} link set lo up; ip -n {c} link set lo up; \
             ip -n {s} link set sv0 up; ip -n {c} link set cv0 up",
            s = p.server,
            c = p.client
        ));
        p
    }

    /// A command run inside `ns`.
    pub fn cmd(ns: &str, prog: &std::path::Path, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(prog).args(args);
        c
    }
}

impl Default for NetPair {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        // Kill whatever still runs in the namespaces, then remove them (veth goes with them).
        for ns in [&self.server, &self.client] {
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "ip netns pids {ns} | xargs -r kill -9; ip netns del {ns}"
                ))
                .status();
        }
    }
}

fn wait_for_line(
    buf: &Mutex<Vec<String>>,
    stream: &str,
    what: &str,
    timeout: Duration,
    f: impl Fn(&str) -> bool,
) -> String {
    let t0 = Instant::now();
    loop {
        if let Some(l) = buf.lock().expect("lock").iter().find(|l| f(l)) {
            return l.clone();
        }
        assert!(
            t0.elapsed() < timeout,
            "timed out waiting for {what}; {stream}: {:?}",
            buf.lock().expect("lock")
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub lines: Arc<Mutex<Vec<String>>>,
    /// stderr lines (the agent's log).
    pub errs: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Spawns with piped stdin/stdout; stdout lines are collected in the background.
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let out: ChildStdout = child.stdout.take().expect("stdout");
        let err: ChildStderr = child.stderr.take().expect("stderr");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let errs: Arc<Mutex<Vec<String>>> = Arc::default();
        for (stream, sink) in [
            (
                Box::new(out) as Box<dyn std::io::Read + Send>,
                lines.clone(),
            ),
            (Box::new(err), errs.clone()),
        ] {
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().expect("lock").push(line);
                }
            });
        }
        Proc {
            child,
            stdin,
            lines,
            errs,
        }
    }

    /// Waits until a stdout line satisfies `f`, returning it.
    pub fn wait_line(&self, what: &str, timeout: Duration, f: impl Fn(&str) -> bool) -> String {
        wait_for_line(&self.lines, "stdout", what, timeout, f)
    }

    /// Waits until a stderr line satisfies `f`, returning it.
    pub fn wait_err(&self, what: &str, timeout: Duration, f: impl Fn(&str) -> bool) -> String {
        wait_for_line(&self.errs, "stderr", what, timeout, f)
    }

    pub fn stderr(&self) -> String {
        self.errs.lock().expect("lock").join("\n")
    }

    pub fn send(&mut self, line: &str) {
        let s = self.stdin.as_mut().expect("stdin");
        writeln!(s, "{line}").expect("write stdin");
        s.flush().expect("flush");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit and returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                // give the reader threads a moment to drain stdout and stderr
                thread::sleep(Duration::from_millis(100));
                return st;
            }
            assert!(
                t0.elapsed() < timeout,
                "{:?} did not exit in {timeout:?}",
                self.child.id()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent running `--json` inside a namespace; ticks are parsed as they arrive. Each agent
/// records into its own trace store (`db`, in a folder of its own), removed on drop.
pub struct Agent {
    pub proc: Proc,
    pub db: PathBuf,
}

static AGENT_SEQ: AtomicU32 = AtomicU32::new(0);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
        if let Some(dir) = self.db.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Agent {
    pub fn start(ns: &str, ticks: u32, extra: &[&str]) -> Self {
        Self::start_with(ns, ticks, extra, NetPair::cmd)
    }

    /// Like `start`, but enters only the network namespace (`nsenter --net`): `ip netns exec`
    /// also remounts /sys, which hides the host's cgroup mounts from the agent's actuator.
    pub fn start_net_only(ns: &str, ticks: u32, extra: &[&str]) -> Self {
        Self::start_with(ns, ticks, extra, |ns, prog, args| {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg(prog).args(args);
            c
        })
    }

    fn start_with(
        ns: &str,
        ticks: u32,
        extra: &[&str],
        cmd: impl Fn(&str, &std::path::Path, &[&str]) -> Command,
    ) -> Self {
        let t = ticks.to_string();
        // In a folder of its own: the agent refuses to write in one others can write (/tmp).
        let db = std::env::temp_dir()
            .join(format!(
                "seer-test-{}-{}",
                std::process::id(),
                AGENT_SEQ.fetch_add(1, Ordering::SeqCst)
            ))
            .join("seer.redb");
        let dbs = db.display().to_string();
        let mut args = vec!["run", "--json", "--ticks", &t, "--db", &dbs];
        args.extend_from_slice(extra);
        let mut cmd = cmd(ns, &agent_bin(), &args);
        cmd.env(
            "RUST_LOG",
            std::env::var("SEER_TEST_LOG").unwrap_or_else(|_| "info".into()),
        );
        Agent {
            proc: Proc::spawn(cmd),
            db,
        }
    }

    pub fn ticks(&self) -> Vec<Value> {
        self.proc
            .lines
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until the latest tick has the service `name` and `f` holds for it; returns it.
    pub fn wait_service(&self, name: &str, timeout: Duration, f: impl Fn(&Value) -> bool) -> Value {
        let t0 = Instant::now();
        loop {
            if let Some(t) = self.ticks().last()
                && let Some(s) = service(t, name)
                && f(s)
            {
                return s.clone();
            }
            assert!(
                t0.elapsed() < timeout,
                "timed out waiting on service {name}; last tick: {:?}",
                self.ticks().last()
            );
            thread::sleep(Duration::from_millis(30));
        }
    }

    /// Waits for the agent to exit by itself (after --ticks) and returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.proc.wait_exit(timeout)
    }
}

pub fn service<'a>(tick: &'a Value, name: &str) -> Option<&'a Value> {
    tick["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
}

pub fn num(s: &Value, field: &str) -> f64 {
    s[field]
        .as_f64()
        .unwrap_or_else(|| panic!("field {field} missing in {s}"))
}

/// Sum of `field` over every tick for service `name`.
pub fn sum_over_ticks(ticks: &[Value], name: &str, field: &str) -> f64 {
    ticks
        .iter()
        .filter_map(|t| service(t, name))
        .map(|s| num(s, field))
        .sum()
}

/// `ss` Recv-Q sum for sockets in `ns` matching an ss filter (e.g. `state established sport = :80`).
pub fn ss_recvq(ns: &str, flags: &str, filter: &str) -> u64 {
    sh(&format!("ip netns exec {ns} ss -H {flags} {filter}"))
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(if flags.contains('l') { 1 } else { 0 })?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// A TCP listener bound inside network namespace `ns` (a socket keeps the namespace it was
/// made in, whichever thread then uses it), listening before this returns: a client can
/// connect at once, no sleep needed.
pub fn listen_in_ns(ns: &str, addr: std::net::SocketAddr) -> std::net::TcpListener {
    let what = format!("bind {addr} in {ns}");
    in_ns(ns, move || std::net::TcpListener::bind(addr))
        .join()
        .expect("bind thread")
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Polls `f` every 20 ms until it holds; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `f` on a thread that has entered network namespace `ns` (setns is per thread; threads
/// `f` spawns inherit it).
pub fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    use std::os::fd::AsRawFd as _;
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: fd is a valid namespace file; CLONE_NEWNET switches only this thread.
        let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// Prometheus' own linter over a `/metrics` body: HELP on every metric, base units in names.
pub fn promtool_check(body: &str) {
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; `cargo xtask setup` installs it)");
    lint.stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("feed promtool");
    let out = lint.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh v1 cpu cgroup (`/sys/fs/cgroup/cpu/seer-NAME-PID`) holding the memcached that
/// listens on 127.0.0.1:`port` (a test's fault target); on drop its processes go back to the
/// root cgroup and it is removed.
pub struct CpuCgroup(pub std::path::PathBuf);

impl CpuCgroup {
    pub fn memcached(name: &str, port: u16) -> Self {
        let pid = sh(&format!(
            "pgrep -f 'memcached -u root -l 127.0.0.1 -p {port}'"
        ))
        .trim()
        .lines()
        .next()
        .expect("memcached pid")
        .to_string();
        let cg = CpuCgroup(std::path::PathBuf::from(format!(
            "/sys/fs/cgroup/cpu/seer-{name}-{}",
            std::process::id()
        )));
        std::fs::create_dir_all(&cg.0).expect("mkdir cgroup");
        std::fs::write(cg.0.join("cgroup.procs"), &pid).expect("move memcached");
        cg
    }
}

impl Drop for CpuCgroup {
    fn drop(&mut self) {
        if let Ok(t) = std::fs::read_to_string(self.0.join("cgroup.procs")) {
            for pid in t.lines() {
                let _ = std::fs::write("/sys/fs/cgroup/cpu/cgroup.procs", pid);
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// GET `path` on an agent's listener at 127.0.0.1:9464 (its default) in namespace `ns`, with
/// curl (2 s): the body, or curl's error after it.
pub fn agent_get(ns: &str, path: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(["curl", "-sS", "--max-time", "2"])
        .arg(format!("http://127.0.0.1:9464{path}"))
        .output()
        .expect("curl");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The value of metric `name` on the agent's `/metrics` in namespace `ns`; -1 when the
/// listener does not answer or has no such line.
pub fn agent_metric(ns: &str, name: &str) -> f64 {
    agent_get(ns, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0)
}
