//! A real nginx -> memcached stack (Debian's servers) inside a network namespace, used by the
//! integration tests and by `cargo xtask bench overhead`.
use std::{path::PathBuf, process::Command, time::Duration};

use crate::{NetPair, Proc, sh};

pub struct Stack {
    pub dir: PathBuf,
    pub ns: String,
    pub http_port: u16,
    pub mc_port: u16,
    _procs: Vec<Proc>,
}

/// nginx configuration: one worker, memcached_pass to a keepalive upstream, value under key `k`.
fn nginx_conf(dir: &std::path::Path, http_port: u16, mc_port: u16) -> String {
    let d = dir.display();
    format!(
        "user root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         upstream mc {{ server 127.0.0.1:{mc_port}; keepalive 64; }}\n\
         server {{\n    listen {http_port} backlog=4096;\n    location / {{ set $memcached_key \"k\"; memcached_pass mc; }}\n  }}\n}}\n"
    )
}

impl Stack {
    /// Starts memcached (1 thread) and nginx (1 worker) on `lo` of `ns`, and stores a value of
    /// `value_bytes` under key `k`.
    pub fn start(ns: &str, http_port: u16, mc_port: u16, value_bytes: usize) -> Self {
        let dir = std::env::temp_dir().join(format!("seer-stack-{ns}"));
        std::fs::create_dir_all(&dir).expect("stack dir");
        std::fs::write(dir.join("nginx.conf"), nginx_conf(&dir, http_port, mc_port))
            .expect("nginx.conf");
        let mc = Proc::spawn(NetPair::cmd(
            ns,
            std::path::Path::new("memcached"),
            &[
                "-u",
                "root",
                "-l",
                "127.0.0.1",
                "-p",
                &mc_port.to_string(),
                "-t",
                "1",
                "-m",
                "64",
                "-I",
                "2m",
            ],
        ));
        let ngx = Proc::spawn(NetPair::cmd(
            ns,
            std::path::Path::new("nginx"),
            &[
                "-p",
                &dir.display().to_string(),
                "-c",
                &dir.join("nginx.conf").display().to_string(),
                "-g",
                "daemon off;",
            ],
        ));
        // Wait for both to listen, then load the value.
        for _ in 0..100 {
            let l = sh(&format!("ip netns exec {ns} ss -ltnH"));
            if l.contains(&format!(":{http_port}")) && l.contains(&format!(":{mc_port}")) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let py = format!(
            "import socket\ns=socket.create_connection(('127.0.0.1',{mc_port}))\nv=b'x'*{value_bytes}\n\
             s.sendall(b'set k 0 0 %d\\r\\n'%len(v)+v+b'\\r\\n')\nassert s.recv(64).startswith(b'STORED')"
        );
        let st = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", &py])
            .status()
            .expect("python3");
        assert!(st.success(), "loading memcached failed");
        Stack {
            dir,
            ns: ns.into(),
            http_port,
            mc_port,
            _procs: vec![mc, ngx],
        }
    }

    /// Runs wrk in the namespace; returns (requests/s, wrk's full output).
    pub fn wrk(&self, threads: u32, conns: u32, secs: u32) -> (f64, String) {
        let out = sh(&format!(
            "ip netns exec {} wrk -t{threads} -c{conns} -d{secs}s http://127.0.0.1:{}/",
            self.ns, self.http_port
        ));
        let rps = out
            .lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("wrk printed no Requests/sec: {out}"));
        (rps, out)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
