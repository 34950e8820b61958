//! The generator's HTTP/1.1 client side: one GET on a kept-alive connection.
use std::io;

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::TcpStream,
};

pub type Conn = BufReader<TcpStream>;

pub async fn connect(addr: std::net::SocketAddr) -> io::Result<Conn> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(BufReader::new(s))
}

/// Sends `GET path` and reads the whole response; returns the status code and whether the
/// connection may be reused.
pub async fn get(c: &mut Conn, path: &str) -> io::Result<(u16, bool)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: seer-testbed\r\n\r\n");
    c.get_mut().write_all(req.as_bytes()).await?;
    let mut line = String::new();
    if c.read_line(&mut line).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "server closed",
        ));
    }
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
    let mut len = 0usize;
    let mut keep = true;
    loop {
        line.clear();
        if c.read_line(&mut line).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "eof in headers",
            ));
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            } else if k.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close")
            {
                keep = false;
            }
        }
    }
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).await?;
    Ok((code, keep))
}
