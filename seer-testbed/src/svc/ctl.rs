//! The control socket: the fault injector sets the blocking bug and extra work through it.
//! Served by a thread of its own, not by the service's event loop: the blocking bug stalls
//! that loop, and the injector must still be able to ramp the bug and lift it (served on the
//! loop, 13 of the corpus's 23 blocking faults ended early on a 2 s read timeout).
use std::{
    io::{self, BufRead as _, Write as _},
    os::unix::net::{UnixListener, UnixStream},
    path::Path,
    sync::{Arc, atomic::Ordering},
};

use super::server::Shared;

pub fn bind(path: &Path) -> io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
}

/// Serves the control socket on its own thread, one short session at a time.
pub fn serve(sh: Arc<Shared>, l: UnixListener) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("svc-ctl".into())
        .spawn(move || {
            for s in l.incoming() {
                match s {
                    Ok(s) => {
                        let _ = session(&sh, s);
                    }
                    Err(e) => eprintln!("{}: control socket: {e}", sh.cfg.name),
                }
            }
        })
}

fn session(sh: &Shared, s: UnixStream) -> io::Result<()> {
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut w = s.try_clone()?;
    for l in io::BufReader::new(s).lines() {
        let reply = command(sh, &l?);
        w.write_all(reply.as_bytes())?;
    }
    Ok(())
}

/// Applies one control line; returns the reply line.
pub fn command(sh: &Shared, line: &str) -> String {
    let mut it = line.split_whitespace();
    let (cmd, arg) = (it.next(), it.next().and_then(|a| a.parse::<u64>().ok()));
    match (cmd, arg) {
        (Some("block"), Some(us)) => {
            sh.block_us.store(us, Ordering::Relaxed);
            "ok\n".into()
        }
        (Some("work"), Some(us)) => {
            sh.extra_work_us.store(us, Ordering::Relaxed);
            "ok\n".into()
        }
        (Some("stats"), None) => format!(
            "ok served={} errors={} block_us={} extra_work_us={}\n",
            sh.served.load(Ordering::Relaxed),
            sh.errors.load(Ordering::Relaxed),
            sh.block_us.load(Ordering::Relaxed),
            sh.extra_work_us.load(Ordering::Relaxed)
        ),
        _ => format!("err unknown command {line:?}: use `block US`, `work US` or `stats`\n"),
    }
}

/// Client side (the fault injector): sends one command, returns the reply.
pub fn send(path: &Path, line: &str) -> io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
    writeln!(s, "{line}")?;
    let mut reply = String::new();
    std::io::BufReader::new(&s).read_line(&mut reply)?;
    if reply.starts_with("ok") {
        Ok(reply.trim().to_string())
    } else {
        Err(io::Error::other(reply.trim().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead as _, Write as _},
        time::{Duration, Instant},
    };

    use super::*;
    use crate::{scenario::Mode, svc::SvcConfig};

    /// The blocking bug stalls the service's event loop (one worker here, clients keep it
    /// busy with requests that each sleep 300 ms on it); the injector still sets and lifts the
    /// bug through the control socket at once. Before, the socket was served on that loop and
    /// the injector's 2 s read timed out (13 of the corpus's 23 blocking faults).
    #[test]
    fn the_control_socket_answers_while_the_blocking_bug_stalls_the_service() {
        let dir = std::env::temp_dir().join(format!("seer-svc-ctl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = SvcConfig {
            name: "blocked".into(),
            listen: ([127, 0, 0, 1], port).into(),
            ctl: dir.join("s.ctl"),
            work_us: 10,
            work_kb: 0,
            buffer_kb: 0,
            mode: Mode::Sequential,
            reply_bytes: 8,
            threads: 1,
            calls: vec![],
        };
        let sh = crate::svc::server::Shared::new(cfg.clone());
        serve(sh.clone(), bind(&cfg.ctl).unwrap()).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let srv = sh.clone();
        rt.spawn(async move {
            let l = tokio::net::TcpListener::bind(srv.cfg.listen).await.unwrap();
            let _ = crate::svc::server::serve(srv, l).await;
        });
        assert_eq!(send(&cfg.ctl, "block 300000").unwrap(), "ok");
        // Four clients, each a request after another: the loop is never free.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                        return 0;
                    };
                    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut r = io::BufReader::new(c.try_clone().unwrap());
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let mut line = String::new();
                        if c.write_all(b"REQ\n").is_err() || r.read_line(&mut line).is_err() {
                            break;
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(700));
        let t0 = Instant::now();
        let stats = send(&cfg.ctl, "stats").unwrap();
        let lifted = send(&cfg.ctl, "block 0").unwrap();
        let took = t0.elapsed();
        stop.store(true, Ordering::Relaxed);
        let served: u32 = clients.into_iter().map(|c| c.join().unwrap()).sum();
        println!("while blocked: {stats} ({took:?}); requests served meanwhile {served}");
        assert!(stats.contains("block_us=300000"), "{stats}");
        assert_eq!(lifted, "ok");
        assert!(
            took < Duration::from_millis(200),
            "the control socket waited on the stalled loop: {took:?}"
        );
        assert!(
            sh.served.load(Ordering::Relaxed) <= 8,
            "the bug did stall the loop (one 300 ms request at a time)"
        );
        rt.shutdown_background();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
