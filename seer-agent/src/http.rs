//! A minimal HTTP/1.1 client (one request per connection, no TLS, no redirects): alerts to
//! Alertmanager or a webhook, and `seer-agent query` asking a running agent. The receivers
//! are local or on a trusted network; for TLS put a relay in front.
use std::{
    io::{Read as _, Write as _},
    net::{TcpStream, ToSocketAddrs as _},
    time::{Duration, Instant},
};

/// Largest answer read (a query of a big store stays far below).
const MAX_ANSWER: usize = 64 << 20;

/// `http://host[:port][/path]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        if url.starts_with("https://") {
            return Err(format!(
                "{url:?}: https is not supported; point seer at a plain-http receiver or a local relay"
            ));
        }
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?} must start with http://"))?;
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("{url:?}: bad port {p:?}"))?,
            ),
            _ => (hostport, 80),
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        Ok(HttpUrl {
            host: host.trim_start_matches('[').trim_end_matches(']').into(),
            port,
            path: path.trim_end_matches('/').into(),
        })
    }

    /// This URL with `suffix` appended to its path.
    pub fn join(&self, suffix: &str) -> HttpUrl {
        HttpUrl {
            path: format!("{}{suffix}", self.path),
            ..self.clone()
        }
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.path)
    }
}

/// Sends `body` as a JSON POST; `Ok(status)` for any HTTP answer, `Err` when there was none.
pub fn post_json(url: &HttpUrl, body: &str, timeout: Duration) -> Result<u16, String> {
    request(url, "POST", Some(body), timeout).map(|(status, _)| status)
}

/// GET; `Ok((status, body))` for any HTTP answer.
pub fn get(url: &HttpUrl, timeout: Duration) -> Result<(u16, String), String> {
    request(url, "GET", None, timeout)
}

fn request(
    url: &HttpUrl,
    method: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {}: {e}", url.host))?
        .next()
        .ok_or_else(|| format!("{} has no address", url.host))?;
    // `timeout` bounds the whole exchange, not each read: a peer that drips one byte a
    // second must not hold the caller (the alert sender, a shutdown) for longer.
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no complete answer within {:.1} s", timeout.as_secs_f64()))
    };
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(left()?))
        .map_err(|e| e.to_string())?;
    let path = if url.path.is_empty() { "/" } else { &url.path };
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: seer-agent\r\nConnection: close\r\n",
        url.host, url.port
    );
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    // Connection: close -> the answer ends at EOF (bounded, so a stuck peer cannot grow it).
    let mut resp = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        s.set_read_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                resp.extend_from_slice(&buf[..k]);
                if resp.len() > MAX_ANSWER {
                    return Err(format!("answer larger than {MAX_ANSWER} bytes"));
                }
                // A POST's caller needs only the status line.
                if body.is_some() && resp.windows(2).any(|w| w == b"\r\n") {
                    break;
                }
            }
            Err(e) if resp.is_empty() => return Err(e.to_string()),
            Err(_) => break,
        }
    }
    parse_answer(&resp)
}

/// The status code and the body (after the blank line; empty without one) of an HTTP answer
/// read to its end. The peer controls every byte: anything else is `Err`, never a panic.
pub fn parse_answer(resp: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(resp);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .filter(|_| text.starts_with("HTTP/"))
        .ok_or_else(|| {
            format!(
                "not an HTTP answer: {:?}",
                text.chars().take(40).collect::<String>()
            )
        })?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or_else(String::new, |(_, b)| b.to_string());
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://127.0.0.1:9093").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 9093, "")
        );
        assert_eq!(
            u.join("/api/v2/alerts").to_string(),
            "http://127.0.0.1:9093/api/v2/alerts"
        );
        let u = HttpUrl::parse("http://am.example/hook/").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/hook"));
        let u = HttpUrl::parse("http://[::1]:8080/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8080));
        assert!(HttpUrl::parse("https://x").unwrap_err().contains("https"));
        assert!(HttpUrl::parse("x:1").unwrap_err().contains("http://"));
        assert!(
            HttpUrl::parse("http://h:99999")
                .unwrap_err()
                .contains("port")
        );
    }

    #[test]
    fn answers() {
        assert_eq!(
            parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"),
            Ok((200, "{}".into()))
        );
        // A POST's caller stops reading after the status line: no body.
        assert_eq!(
            parse_answer(b"HTTP/1.0 404 Not Found\r\n"),
            Ok((404, String::new()))
        );
        assert!(
            parse_answer(b"")
                .unwrap_err()
                .contains("not an HTTP answer")
        );
        assert!(parse_answer(b"SSH-2.0-x 200\r\n").is_err());
        assert!(parse_answer(b"HTTP/1.1 99999 Big\r\n\r\n").is_err());
        // Not UTF-8: replaced, not refused.
        assert_eq!(
            parse_answer(b"HTTP/1.1 500 \xff\r\n\r\n\xfe"),
            Ok((500, "\u{fffd}".into()))
        );
    }
}
