//! The control socket: the fault injector sets the blocking bug and extra work through it.
use std::{
    io,
    path::Path,
    sync::{Arc, atomic::Ordering},
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
};

use super::server::Shared;

pub fn bind(path: &Path) -> io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
}

pub async fn serve(sh: Arc<Shared>, l: UnixListener) -> io::Result<()> {
    loop {
        let (s, _) = l.accept().await?;
        let sh = sh.clone();
        tokio::spawn(async move {
            let _ = session(&sh, s).await;
        });
    }
}

async fn session(sh: &Shared, s: UnixStream) -> io::Result<()> {
    let (r, mut w) = s.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Some(l) = lines.next_line().await? {
        let reply = command(sh, &l);
        w.write_all(reply.as_bytes()).await?;
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
    use std::io::{BufRead as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
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
