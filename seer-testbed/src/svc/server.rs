//! The service's event loop: accepts connections, answers RPC lines and HTTP requests, doing the
//! configured CPU work and callee calls for each.
use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
};

use super::{
    SvcConfig,
    callee::Callee,
    work::{WorkingSet, spin_cpu},
};
use crate::scenario::Mode;

pub struct Shared {
    pub cfg: SvcConfig,
    pub callees: Vec<Arc<Callee>>,
    /// Blocking-bug fault: microseconds of synchronous sleep on the event loop per request.
    pub block_us: AtomicU64,
    /// Extra CPU microseconds per request (set through the control socket).
    pub extra_work_us: AtomicU64,
    pub served: AtomicU64,
    pub errors: AtomicU64,
    body: Vec<u8>,
    /// `work_kb`: the buffer requests walk (None when work_kb is 0).
    working_set: Option<WorkingSet>,
}

impl Shared {
    pub fn new(cfg: SvcConfig) -> Arc<Shared> {
        let callees = cfg
            .calls
            .iter()
            .cloned()
            .map(|c| Arc::new(Callee::new(c)))
            .collect();
        let body = vec![b'x'; cfg.reply_bytes];
        let working_set =
            (cfg.work_kb > 0).then(|| WorkingSet::new(cfg.buffer_kb.max(cfg.work_kb)));
        Arc::new(Shared {
            cfg,
            callees,
            block_us: AtomicU64::new(0),
            extra_work_us: AtomicU64::new(0),
            served: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            body,
            working_set,
        })
    }
}

/// Accepts connections for ever.
pub async fn serve(sh: Arc<Shared>, listener: TcpListener) -> io::Result<()> {
    loop {
        let (s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        let sh = sh.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(&sh, s).await
                && e.kind() != io::ErrorKind::UnexpectedEof
                && e.kind() != io::ErrorKind::ConnectionReset
            {
                eprintln!("{}: connection: {e}", sh.cfg.name);
            }
        });
    }
}

fn is_http(line: &str) -> bool {
    ["GET ", "POST ", "PUT ", "HEAD "]
        .iter()
        .any(|m| line.starts_with(m))
}

async fn connection(sh: &Shared, s: TcpStream) -> io::Result<()> {
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let http = is_http(&line);
        if http {
            skip_http_head_and_body(&mut r).await?;
        }
        let res = handle(sh).await;
        sh.served.fetch_add(1, Ordering::Relaxed);
        let out = match (&res, http) {
            (Ok(()), false) => {
                let mut o = b"OK ".to_vec();
                o.extend_from_slice(&sh.body);
                o.push(b'\n');
                o
            }
            (Err(e), false) => format!("ERR {e}\n").into_bytes(),
            (Ok(()), true) => http_reply("200 OK", &sh.body),
            (Err(e), true) => http_reply("502 Bad Gateway", e.to_string().as_bytes()),
        };
        if let Err(e) = &res {
            sh.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("{}: request failed: {e}", sh.cfg.name);
        }
        w.write_all(&out).await?;
    }
}

fn http_reply(status: &str, body: &[u8]) -> Vec<u8> {
    let mut o = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    o.extend_from_slice(body);
    o
}

async fn skip_http_head_and_body(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> io::Result<()> {
    let mut len = 0usize;
    let mut h = String::new();
    loop {
        h.clear();
        if r.read_line(&mut h).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "eof in HTTP head",
            ));
        }
        if h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(())
}

/// One request: the blocking bug (if injected), CPU work, then the callees.
async fn handle(sh: &Shared) -> io::Result<()> {
    let block = sh.block_us.load(Ordering::Relaxed);
    if block > 0 {
        // The injected bug: a synchronous call on the event loop stalls every other request.
        std::thread::sleep(Duration::from_micros(block));
    }
    spin_cpu(sh.cfg.work_us + sh.extra_work_us.load(Ordering::Relaxed));
    if let Some(ws) = &sh.working_set {
        let n = sh.served.load(Ordering::Relaxed);
        ws.touch(sh.cfg.work_kb, n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }
    match sh.cfg.mode {
        Mode::Sequential => {
            for c in &sh.callees {
                c.call().await?;
            }
            Ok(())
        }
        Mode::Parallel => {
            let tasks: Vec<_> = sh
                .callees
                .iter()
                .map(|c| {
                    let c = c.clone();
                    tokio::spawn(async move { c.call().await })
                })
                .collect();
            let mut first_err = None;
            for t in tasks {
                let r = t
                    .await
                    .map_err(|e| io::Error::other(format!("call task: {e}")))
                    .and_then(|r| r);
                if let Err(e) = r {
                    first_err.get_or_insert(e);
                }
            }
            first_err.map_or(Ok(()), Err)
        }
    }
}
