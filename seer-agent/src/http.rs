//! Receivers' URLs (`http://` or `https://`), checked when the config is read; the requests
//! themselves go through ureq (`http_client.rs`).
/// `http[s]://host[:port][/path]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// `https://`: TLS (rustls, the webpki roots).
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(r), _) => (true, r),
            (None, Some(r)) => (false, r),
            _ => return Err(format!("{url:?} must start with http:// or https://")),
        };
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
            _ => (hostport, if tls { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        Ok(HttpUrl {
            tls,
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
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "{scheme}://{}:{}{}", self.host, self.port, self.path)
        }
    }
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
        let u = HttpUrl::parse("https://am.example/api").unwrap();
        assert_eq!((u.tls, u.port), (true, 443));
        assert_eq!(u.to_string(), "https://am.example:443/api");
        assert_eq!(
            HttpUrl::parse("http://[::1]:8080/x").unwrap().to_string(),
            "http://[::1]:8080/x"
        );
        assert!(HttpUrl::parse("x:1").unwrap_err().contains("http://"));
        assert!(
            HttpUrl::parse("http://h:99999")
                .unwrap_err()
                .contains("port")
        );
    }
}
