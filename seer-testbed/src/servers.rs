//! Starting each service: Debian's nginx (front end, `proxy_pass` to the entry services over
//! kept-alive upstreams), memcached, redis, and `seer-testbed-svc` for the logic tier. Each in its
//! host's namespace and its own cgroups; output goes to `<run dir>/<service>.log`.
use std::{
    fmt::Write as _,
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use crate::{
    cgroup::Layout,
    error::{Error, Result},
    plan::{Plan, ServicePlan},
    scenario::{Kind, Scenario, Service},
    spawn::{Placement, spawn},
    svc::{CalleeConfig, SvcConfig},
};

/// nginx.conf for the front end: one location per request type.
pub fn nginx_conf(sc: &Scenario, plan: &Plan, me: &ServicePlan, threads: usize) -> String {
    let d = plan.dir.join("nginx");
    let d = d.display();
    let mut ups = String::new();
    let mut locs = String::new();
    let mut seen = Vec::new();
    for r in &sc.requests {
        let entry = r.entry.get_ref();
        if let Some(e) = plan.service(entry)
            && !seen.contains(entry)
        {
            seen.push(entry.clone());
            let _ = writeln!(
                ups,
                "  upstream up_{n} {{ server {a}; keepalive 64; }}",
                n = entry.replace('-', "_"),
                a = e.addr
            );
        }
        let _ = writeln!(
            locs,
            "    location = /{p} {{ proxy_pass http://up_{n}; }}",
            p = r.name.get_ref(),
            n = entry.replace('-', "_")
        );
    }
    format!(
        "user root;\nworker_processes {threads};\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         \x20 proxy_http_version 1.1;\n  proxy_set_header Connection \"\";\n\
         \x20 proxy_read_timeout 60s;\n  keepalive_requests 1000000;\n\
         {ups}  server {{\n    listen {addr} backlog=4096;\n{locs}    location / {{ return 404; }}\n  }}\n}}\n",
        addr = me.addr
    )
}

/// The JSON config of an rpc service.
pub fn svc_config(sc: &Scenario, plan: &Plan, s: &Service, me: &ServicePlan) -> SvcConfig {
    let calls = s
        .calls
        .iter()
        .filter_map(|c| {
            let callee = sc.service(c.get_ref())?;
            let cp = plan.service(c.get_ref())?;
            Some(CalleeConfig {
                name: cp.name.clone(),
                kind: callee.kind,
                addr: cp.addr.into(),
                value_bytes: callee.value_bytes,
                keys: callee.keys,
            })
        })
        .collect();
    SvcConfig {
        name: me.name.clone(),
        listen: me.addr.into(),
        ctl: me.ctl.clone(),
        work_us: s.work_us,
        work_kb: s.work_kb,
        buffer_kb: match (s.work_kb, s.buffer_kb) {
            (0, _) => 0,
            (w, 0) => (4 * w).max(1024),
            (_, b) => b,
        },
        mode: s.mode,
        reply_bytes: s.reply_bytes,
        threads: s.threads,
        calls,
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io("cannot write", path, e))
}

/// Starts service `s` (already has its cgroups); returns the child.
pub fn start(
    sc: &Scenario,
    plan: &Plan,
    layout: &Layout,
    s: &Service,
    svc_bin: &Path,
    die_with_parent: bool,
) -> Result<Child> {
    let me = plan
        .service(s.name.get_ref())
        .ok_or_else(|| Error::Setup(format!("{} is not in the plan", s.name.get_ref())))?;
    let ip = me.addr.ip().to_string();
    let port = me.addr.port().to_string();
    let mut cmd = match s.kind {
        Kind::Nginx => {
            let d = plan.dir.join("nginx");
            std::fs::create_dir_all(&d).map_err(|e| Error::io("cannot create", &d, e))?;
            let conf = d.join("nginx.conf");
            write(&conf, &nginx_conf(sc, plan, me, s.threads))?;
            let mut c = Command::new("nginx");
            c.arg("-p")
                .arg(&d)
                .arg("-c")
                .arg(&conf)
                .args(["-g", "daemon off;"]);
            c
        }
        Kind::Memcached => {
            let mut c = Command::new("memcached");
            c.args([
                "-u", "root", "-l", &ip, "-p", &port, "-U", "0", "-m", "64", "-c", "4096",
            ])
            .args(["-t", &s.threads.to_string()]);
            c
        }
        Kind::Redis => {
            let mut c = Command::new("redis-server");
            c.args([
                "--bind",
                &ip,
                "--port",
                &port,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args([
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
                "--logfile",
                "",
            ])
            .arg("--dir")
            .arg(&plan.dir);
            c
        }
        Kind::Rpc => {
            let cfg = svc_config(sc, plan, s, me);
            let path: PathBuf = plan.dir.join(format!("{}.json", me.name));
            let text = serde_json::to_string_pretty(&cfg).map_err(|e| Error::Json {
                what: "service config",
                source: e,
            })?;
            write(&path, &text)?;
            let mut c = Command::new(svc_bin);
            c.arg("serve").arg("--config").arg(path);
            c
        }
    };
    let log = plan.dir.join(format!("{}.log", me.name));
    let f = File::create(&log).map_err(|e| Error::io("cannot create", &log, e))?;
    let f2 = f
        .try_clone()
        .map_err(|e| Error::io("cannot dup", &log, e))?;
    cmd.stdin(Stdio::null()).stdout(f).stderr(f2);
    let p = Placement {
        netns: Some(me.netns.clone()),
        cgroups: layout.procs_files(&me.cgroup),
        die_with_parent,
    };
    spawn(&mut cmd, &p)
}
