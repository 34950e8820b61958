//! What the query API asks: a query, its HTTP path on a running agent (`/api/query/...`) and
//! the times it takes. Pure parsing, apart from the agent (the fuzz package includes this file
//! by path): any local process can send the agent such a path.
use anyhow::{Context as _, bail};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// A query to the trace store: what `seer-agent query` asks (its clap form is
/// `cli::QueryCmd`) and what `/api/query/...` carries. Times are as given ("-1h", "now" or ms
/// since the epoch) until the asker makes them absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryWhat {
    Services,
    Service { name: String, n: usize },
    Top { channel: String, n: usize },
    Violations { from: String },
    Diagnoses { from: String },
    Predictions { from: String, n: usize },
    Actions,
    Alerts,
}

/// Bytes left as they are in a query value (RFC 3986 unreserved), everything else encoded.
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The most rows one API query may ask for (`n=`): a query walks the store on a blocking
/// thread; a huge `n` would walk a day of ticks into memory.
pub const MAX_ROWS: usize = 10_000;

/// "now", "-1h" / "-30m" / "-90s" / "-2d" (relative to now), or ms since the Unix epoch.
pub fn parse_time(s: &str, now: u64) -> anyhow::Result<u64> {
    if s == "now" {
        return Ok(now);
    }
    if let Some(rel) = s.strip_prefix('-') {
        // The unit is the last character, which need not be one byte.
        let unit_at = rel.char_indices().last().map_or(0, |(i, _)| i);
        let (num, unit) = rel.split_at(unit_at);
        let n: u64 = num
            .parse()
            .with_context(|| format!("bad relative time {s:?} (e.g. -30m)"))?;
        let unit_ms: u64 = match unit {
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => bail!("bad unit in {s:?}: use s, m, h or d (e.g. -30m)"),
        };
        // Further back than the epoch is the epoch.
        return Ok(now.saturating_sub(n.saturating_mul(unit_ms)));
    }
    s.parse()
        .with_context(|| format!("bad time {s:?}: use ms since the Unix epoch, \"now\" or -30m"))
}

/// The agent's HTTP path for a query (`/api/query/...`); [`parse_api`] reads it back.
pub fn api_path(what: &QueryWhat) -> String {
    let enc = |s: &str| utf8_percent_encode(s, VALUE).to_string();
    match what {
        QueryWhat::Services => "/api/query/services".into(),
        QueryWhat::Service { name, n } => format!("/api/query/service?name={}&n={n}", enc(name)),
        QueryWhat::Top { channel, n } => {
            format!("/api/query/top?channel={}&n={n}", enc(channel))
        }
        QueryWhat::Violations { from } => format!("/api/query/violations?from={}", enc(from)),
        QueryWhat::Diagnoses { from } => format!("/api/query/diagnoses?from={}", enc(from)),
        QueryWhat::Predictions { from, n } => {
            format!("/api/query/predictions?from={}&n={n}", enc(from))
        }
        QueryWhat::Actions => "/api/query/actions".into(),
        QueryWhat::Alerts => "/api/query/alerts".into(),
    }
}

/// The query an `/api/query/...` path asks for.
pub fn parse_api(path: &str) -> Result<QueryWhat, String> {
    let dec = |s: &str| -> String { percent_decode_str(s).decode_utf8_lossy().into_owned() };
    let rest = path
        .strip_prefix("/api/query/")
        .ok_or_else(|| format!("{path}: not under /api/query/"))?;
    let (kind, q) = rest.split_once('?').unwrap_or((rest, ""));
    let param = |k: &str| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(key, _)| *key == k)
            .map(|(_, v)| dec(v))
    };
    let n = |default: usize| -> Result<usize, String> {
        let n = param("n").map_or(Ok(default), |v| v.parse().map_err(|_| format!("bad n={v}")))?;
        if n > MAX_ROWS {
            return Err(format!("n={n}: at most {MAX_ROWS} rows per query"));
        }
        Ok(n)
    };
    Ok(match kind {
        "services" => QueryWhat::Services,
        "service" => QueryWhat::Service {
            name: param("name").ok_or("service needs name=")?,
            n: n(20)?,
        },
        "top" => QueryWhat::Top {
            channel: param("channel").unwrap_or_else(|| "outstanding".into()),
            n: n(10)?,
        },
        "violations" => QueryWhat::Violations {
            from: param("from").unwrap_or_else(|| "0".into()),
        },
        "diagnoses" => QueryWhat::Diagnoses {
            from: param("from").unwrap_or_else(|| "0".into()),
        },
        "predictions" => QueryWhat::Predictions {
            from: param("from").unwrap_or_else(|| "0".into()),
            n: n(50)?,
        },
        "actions" => QueryWhat::Actions,
        "alerts" => QueryWhat::Alerts,
        other => return Err(format!("unknown query {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_round_trip() {
        for w in [
            QueryWhat::Services,
            QueryWhat::Service {
                name: "post store/#1 & co".into(),
                n: 7,
            },
            QueryWhat::Top {
                channel: "rx_queue_bytes".into(),
                n: 3,
            },
            QueryWhat::Violations {
                from: "1795716765777".into(),
            },
            QueryWhat::Diagnoses { from: "0".into() },
            QueryWhat::Predictions {
                from: "-5m".into(),
                n: 12,
            },
            QueryWhat::Actions,
            QueryWhat::Alerts,
        ] {
            let p = api_path(&w);
            assert_eq!(parse_api(&p).unwrap(), w, "{p}");
        }
        assert!(parse_api("/api/query/nope").unwrap_err().contains("nope"));
        assert!(parse_api("/metrics").is_err());
    }

    #[test]
    fn times() {
        let now = 10_000_000;
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(parse_time("-30m", now).unwrap(), now - 1_800_000);
        assert_eq!(parse_time("-2s", now).unwrap(), now - 2000);
        assert_eq!(parse_time("1234", now).unwrap(), 1234);
        assert!(
            parse_time("-3w", now)
                .unwrap_err()
                .to_string()
                .contains("use s, m, h or d")
        );
        assert!(parse_time("yesterday", now).is_err());
    }

    /// Found by the fuzz target api_query: a relative time whose last character is not ASCII
    /// panicked (a byte slice inside the character), also when asked over HTTP.
    #[test]
    fn relative_time_ending_in_multibyte_char_is_an_error() {
        let now = 10_000_000;
        assert!(parse_time("-h\0h\u{657}", now).is_err());
        assert!(
            parse_time("-1é", now)
                .unwrap_err()
                .to_string()
                .contains("bad unit")
        );
        assert!(parse_time("-é", now).is_err());
        let w = parse_api("/api/query/violations?from=-1%C3%A9").unwrap();
        let QueryWhat::Violations { from } = w else {
            panic!("{w:?}");
        };
        assert!(parse_time(&from, now).is_err());
    }

    /// Found by the fuzz target api_query: a relative time of more than u64::MAX ms overflowed
    /// (a panic in debug builds; in release it wrapped to a recent time).
    #[test]
    fn relative_time_before_the_epoch_is_the_epoch() {
        let now = 10_000_000;
        assert_eq!(parse_time("-184467440737095523s", now).unwrap(), 0);
        assert_eq!(parse_time("-18446744073709551615d", now).unwrap(), 0);
        assert_eq!(parse_time("-10001s", now).unwrap(), 0);
        assert_eq!(parse_time("-10000s", now).unwrap(), 0);
        assert_eq!(parse_time("-9999s", now).unwrap(), 1000);
    }
}
