//! What `seer-agent query` shows: plain data (serde-serialisable, for `--json`) and aligned text
//! tables for people.

use crate::{Store, StoreError};
use seer_common::sample::{CHANNEL_NAMES, CHANNELS, Channel, ServiceId};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// Every channel, in model order (`ALL_CHANNELS[i] as usize == i`).
pub const ALL_CHANNELS: [Channel; CHANNELS] = [
    Channel::NicRxPkts,
    Channel::NicRxBytes,
    Channel::RxQueueBytes,
    Channel::AcceptBacklog,
    Channel::EpollCalls,
    Channel::EpollEvents,
    Channel::EpollWaitMs,
    Channel::Outstanding,
    Channel::Requests,
    Channel::LatencyP50Us,
    Channel::LatencyP99Us,
    Channel::Connections,
    Channel::TxQueueBytes,
    Channel::CpuRunMs,
    Channel::CpuWaitMs,
    Channel::CpuThrottled,
];

/// The channel called `name` in `CHANNEL_NAMES` (e.g. "outstanding").
pub fn channel_by_name(name: &str) -> Option<Channel> {
    CHANNEL_NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| ALL_CHANNELS[i])
}

/// One service, as listed by `query services`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceRow {
    pub id: u32,
    pub name: String,
    pub identity: String,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
}

impl From<crate::ServiceInfo> for ServiceRow {
    fn from(s: crate::ServiceInfo) -> Self {
        Self {
            id: s.id.0,
            name: s.name,
            identity: s.identity,
            first_seen_ms: s.first_seen_ms,
            last_seen_ms: s.last_seen_ms,
        }
    }
}

/// All services, by id.
pub fn list_services(store: &Store) -> Result<Vec<ServiceRow>, StoreError> {
    Ok(store
        .services()?
        .into_iter()
        .map(ServiceRow::from)
        .collect())
}

/// The service whose id (a number) or name is `query`.
pub fn find_service(store: &Store, query: &str) -> Result<Option<ServiceRow>, StoreError> {
    let id = query.parse::<u32>().ok();
    Ok(list_services(store)?
        .into_iter()
        .find(|s| Some(s.id) == id || s.name == query))
}

/// One tick of one service; serialises as `{"ts_ms": .., "<channel>": .., ...}`.
#[derive(Clone, Debug, PartialEq)]
pub struct RecentTick {
    pub ts_ms: u64,
    pub values: [f32; CHANNELS],
}

impl Serialize for RecentTick {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(CHANNELS + 1))?;
        m.serialize_entry("ts_ms", &self.ts_ms)?;
        for (name, v) in CHANNEL_NAMES.iter().zip(self.values) {
            m.serialize_entry(name, &v)?;
        }
        m.end()
    }
}

/// One service's newest ticks, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceRecent {
    pub service: ServiceRow,
    pub ticks: Vec<RecentTick>,
}

/// The newest `ticks` ticks of `service`.
pub fn service_recent(
    store: &Store,
    service: ServiceId,
    ticks: usize,
) -> Result<ServiceRecent, StoreError> {
    let row = list_services(store)?
        .into_iter()
        .find(|s| s.id == service.0)
        .unwrap_or(ServiceRow {
            id: service.0,
            name: String::new(),
            identity: String::new(),
            first_seen_ms: 0,
            last_seen_ms: 0,
        });
    let ticks = store
        .recent(service, ticks)?
        .into_iter()
        .map(|s| RecentTick {
            ts_ms: s.ts_ms,
            values: s.values,
        })
        .collect();
    Ok(ServiceRecent {
        service: row,
        ticks,
    })
}

/// One line of `query top`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TopRow {
    pub id: u32,
    pub name: String,
    pub value: f32,
}

/// Services ranked by one channel at the newest tick.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TopReport {
    /// The tick ranked; None when the store has no samples.
    pub ts_ms: Option<u64>,
    pub channel: &'static str,
    pub rows: Vec<TopRow>,
}

/// The `n` services with the highest `channel` at the newest tick (queue depth: use
/// `Channel::Outstanding`, `RxQueueBytes` or `AcceptBacklog`).
pub fn top_services(store: &Store, channel: Channel, n: usize) -> Result<TopReport, StoreError> {
    let samples = store.top_by(channel, n)?;
    let services = store.services()?;
    let name = |id: ServiceId| {
        services
            .iter()
            .find(|s| s.id == id)
            .map_or_else(String::new, |s| s.name.clone())
    };
    Ok(TopReport {
        ts_ms: samples.first().map(|s| s.ts_ms),
        channel: CHANNEL_NAMES[channel as usize],
        rows: samples
            .iter()
            .map(|s| TopRow {
                id: s.service.0,
                name: name(s.service),
                value: s.values[channel as usize],
            })
            .collect(),
    })
}

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
pub fn format_ts(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// A value as people read it: integers without decimals, others with two.
pub fn format_value(v: f32) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Formats `rows` under `headers` as an aligned text table; numeric columns align right.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cols = headers.len();
    let mut width: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    let mut numeric = vec![true; cols];
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            width[i] = width[i].max(cell.chars().count());
            numeric[i] &= cell.parse::<f64>().is_ok();
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, cell) in cells.enumerate().take(cols) {
            if i > 0 {
                l.push_str("  ");
            }
            let pad = width[i].saturating_sub(cell.chars().count());
            if numeric[i] && !rows.is_empty() {
                l.extend(std::iter::repeat_n(' ', pad));
                l.push_str(cell);
            } else {
                l.push_str(cell);
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut rule.iter().map(String::as_str));
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// `query services` as a table.
pub fn services_table(rows: &[ServiceRow]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                s.name.clone(),
                format_ts(s.first_seen_ms),
                format_ts(s.last_seen_ms),
                s.identity.clone(),
            ]
        })
        .collect();
    render_table(
        &[
            "id",
            "name",
            "first seen (UTC)",
            "last seen (UTC)",
            "identity",
        ],
        &body,
    )
}

/// `query service` as a table: one row per channel, one column per tick (oldest left).
pub fn recent_table(r: &ServiceRecent) -> String {
    let times: Vec<String> = r
        .ticks
        .iter()
        .map(|t| format_ts(t.ts_ms)[11..].to_owned())
        .collect();
    let mut headers = vec!["channel"];
    headers.extend(times.iter().map(String::as_str));
    let body: Vec<Vec<String>> = CHANNEL_NAMES
        .iter()
        .enumerate()
        .map(|(c, name)| {
            std::iter::once((*name).to_owned())
                .chain(r.ticks.iter().map(|t| format_value(t.values[c])))
                .collect()
        })
        .collect();
    format!(
        "service {} {}\n{}",
        r.service.id,
        r.service.name,
        render_table(&headers, &body)
    )
}

/// `query top` as a table.
pub fn top_table(r: &TopReport) -> String {
    let body: Vec<Vec<String>> = r
        .rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            vec![
                (i + 1).to_string(),
                row.id.to_string(),
                row.name.clone(),
                format_value(row.value),
            ]
        })
        .collect();
    let when = r.ts_ms.map_or_else(|| "no samples".to_owned(), format_ts);
    format!(
        "top services by {} at {when} UTC\n{}",
        r.channel,
        render_table(&["rank", "id", "name", r.channel], &body)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_by_name_match_the_enum() {
        for (i, name) in CHANNEL_NAMES.iter().enumerate() {
            assert_eq!(channel_by_name(name).map(|c| c as usize), Some(i));
        }
        assert_eq!(channel_by_name("nope"), None);
    }

    #[test]
    fn timestamps_are_utc_civil_time() {
        assert_eq!(format_ts(0), "1970-01-01 00:00:00.000");
        assert_eq!(format_ts(951_782_400_123), "2000-02-29 00:00:00.123");
        assert_eq!(format_ts(1_767_225_599_999), "2025-12-31 23:59:59.999");
    }

    #[test]
    fn table_aligns_numbers_right_and_text_left() {
        let t = render_table(
            &["id", "name", "value"],
            &[
                vec!["1".into(), "frontend".into(), "12".into()],
                vec!["200".into(), "db".into(), "3.50".into()],
            ],
        );
        let expected = concat!(
            " id  name      value\n",
            "---  --------  -----\n",
            "  1  frontend     12\n",
            "200  db         3.50\n",
        );
        assert_eq!(t, expected);
    }
}
