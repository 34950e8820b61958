//! Calls to one callee over a pool of reused connections: rpc services (line protocol),
//! memcached (text protocol) and redis (RESP), cache-aside (get, then set on a miss).
use std::{io, sync::Mutex, time::Duration};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::TcpStream,
};

use super::CalleeConfig;
use crate::scenario::Kind;

const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections kept per callee; more are opened under bursts and closed after.
const POOL_MAX: usize = 64;

type Conn = BufReader<TcpStream>;

pub struct Callee {
    pub cfg: CalleeConfig,
    pool: Mutex<Vec<Conn>>,
    value: Vec<u8>,
}

impl Callee {
    pub fn new(cfg: CalleeConfig) -> Callee {
        let value = vec![b'v'; cfg.value_bytes];
        Callee {
            cfg,
            pool: Mutex::new(Vec::new()),
            value,
        }
    }

    fn take(&self) -> Option<Conn> {
        self.pool.lock().ok()?.pop()
    }

    fn put(&self, c: Conn) {
        if let Ok(mut p) = self.pool.lock()
            && p.len() < POOL_MAX
        {
            p.push(c);
        }
    }

    /// One call; the connection returns to the pool only after a complete, well-formed reply.
    pub async fn call(&self) -> io::Result<()> {
        let mut c = match self.take() {
            Some(c) => c,
            None => {
                let s = TcpStream::connect(self.cfg.addr).await?;
                s.set_nodelay(true)?;
                BufReader::new(s)
            }
        };
        let r = tokio::time::timeout(CALL_TIMEOUT, self.exchange(&mut c)).await;
        match r {
            Ok(Ok(())) => {
                self.put(c);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "callee timed out")),
        }
    }

    async fn exchange(&self, c: &mut Conn) -> io::Result<()> {
        match self.cfg.kind {
            Kind::Rpc => rpc(c).await,
            Kind::Memcached => {
                let key = format!("k{}", fastrand::u32(0..self.cfg.keys.max(1)));
                if !memcached_get(c, &key).await? {
                    memcached_set(c, &key, &self.value).await?;
                }
                Ok(())
            }
            Kind::Redis => {
                let key = format!("k{}", fastrand::u32(0..self.cfg.keys.max(1)));
                if !redis_get(c, &key).await? {
                    redis_set(c, &key, &self.value).await?;
                }
                Ok(())
            }
            Kind::Nginx => Err(bad("nginx is not a callee")),
        }
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

async fn line(c: &mut Conn) -> io::Result<String> {
    let mut l = String::new();
    if c.read_line(&mut l).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "callee closed the connection",
        ));
    }
    Ok(l)
}

async fn rpc(c: &mut Conn) -> io::Result<()> {
    c.get_mut().write_all(b"REQ\n").await?;
    let l = line(c).await?;
    if l.starts_with("OK") {
        Ok(())
    } else {
        Err(bad(&format!("rpc callee answered {:?}", l.trim())))
    }
}

/// True on a hit.
async fn memcached_get(c: &mut Conn, key: &str) -> io::Result<bool> {
    c.get_mut()
        .write_all(format!("get {key}\r\n").as_bytes())
        .await?;
    let l = line(c).await?;
    if l.starts_with("END") {
        return Ok(false);
    }
    let n: usize = l
        .strip_prefix("VALUE ")
        .and_then(|r| r.split_whitespace().nth(2))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| bad(&format!("memcached answered {:?}", l.trim())))?;
    let mut data = vec![0u8; n + 2];
    c.read_exact(&mut data).await?;
    let end = line(c).await?;
    if end.starts_with("END") {
        Ok(true)
    } else {
        Err(bad("memcached value without END"))
    }
}

async fn memcached_set(c: &mut Conn, key: &str, v: &[u8]) -> io::Result<()> {
    let mut req = format!("set {key} 0 0 {}\r\n", v.len()).into_bytes();
    req.extend_from_slice(v);
    req.extend_from_slice(b"\r\n");
    c.get_mut().write_all(&req).await?;
    let l = line(c).await?;
    if l.starts_with("STORED") {
        Ok(())
    } else {
        Err(bad(&format!("memcached set answered {:?}", l.trim())))
    }
}

fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

async fn redis_get(c: &mut Conn, key: &str) -> io::Result<bool> {
    c.get_mut()
        .write_all(&resp(&[b"GET", key.as_bytes()]))
        .await?;
    let l = line(c).await?;
    let n: i64 = l
        .strip_prefix('$')
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| bad(&format!("redis answered {:?}", l.trim())))?;
    if n < 0 {
        return Ok(false);
    }
    let mut data = vec![0u8; n as usize + 2];
    c.read_exact(&mut data).await?;
    Ok(true)
}

async fn redis_set(c: &mut Conn, key: &str, v: &[u8]) -> io::Result<()> {
    c.get_mut()
        .write_all(&resp(&[b"SET", key.as_bytes(), v]))
        .await?;
    let l = line(c).await?;
    if l.starts_with("+OK") {
        Ok(())
    } else {
        Err(bad(&format!("redis set answered {:?}", l.trim())))
    }
}
