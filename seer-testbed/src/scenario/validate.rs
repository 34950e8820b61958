//! Checks that a parsed scenario makes sense; each error carries the byte offset it is about.
use std::collections::{HashMap, HashSet};

use toml::Spanned;

use super::{FaultKind, Kind, Onset, Profile, Scenario};

type Check = Result<(), (usize, String)>;

/// True for a finite number > 0 (false for NaN).
fn pos(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

fn nonneg(x: f64) -> bool {
    x.is_finite() && x >= 0.0
}

fn at<T>(s: &Spanned<T>) -> usize {
    s.span().start
}

pub(super) fn check(sc: &Scenario) -> Check {
    services(sc)?;
    requests(sc)?;
    load(sc)?;
    faults(sc)?;
    if !pos(sc.qos.target_p99_ms) || sc.qos.window_ms == 0 || sc.qos.step_ms == 0 {
        return Err((
            0,
            "[qos]: target_p99_ms, window_ms and step_ms must be > 0".into(),
        ));
    }
    if sc.qos.auto_x.is_some_and(|x| !(x > 1.0 && x.is_finite())) {
        return Err((
            0,
            "[qos]: auto_x must be a number > 1 (the target as a multiple of the healthy p99)"
                .into(),
        ));
    }
    Ok(())
}

fn services(sc: &Scenario) -> Check {
    let mut seen = HashSet::new();
    let mut ports = HashSet::new();
    for s in &sc.services {
        let name = s.name.get_ref();
        let ok = !name.is_empty()
            && name.len() <= 40
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err((
                at(&s.name),
                format!("service name {name:?}: use 1-40 characters from [A-Za-z0-9_-]"),
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err((at(&s.name), format!("service {name:?} is defined twice")));
        }
        let h = s.host.get_ref();
        if h.is_empty() || h.len() > 20 || !h.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err((
                at(&s.host),
                format!("host {h:?}: use 1-20 characters from [A-Za-z0-9]"),
            ));
        }
        if let Some(p) = s.port
            && (p < 1024 || !ports.insert(p))
        {
            return Err((
                at(&s.name),
                format!("service {name:?}: port {p} is below 1024 or used twice"),
            ));
        }
        if s.kind != Kind::Rpc && (!s.calls.is_empty() || s.work_us > 0) {
            return Err((
                at(&s.name),
                format!("service {name:?}: only rpc services take `calls` and `work_us`"),
            ));
        }
        if s.threads == 0 || s.threads > 64 {
            return Err((
                at(&s.name),
                format!("service {name:?}: threads must be 1..=64"),
            ));
        }
        if s.kind != Kind::Rpc && (s.work_kb > 0 || s.buffer_kb > 0) {
            return Err((
                at(&s.name),
                format!("service {name:?}: only rpc services take `work_kb` and `buffer_kb`"),
            ));
        }
        if s.work_kb > 64 * 1024 || s.buffer_kb > 4 * 1024 * 1024 {
            return Err((
                at(&s.name),
                format!(
                    "service {name:?}: work_kb is at most 65536 (64 MiB per request), buffer_kb at most 4194304 (4 GiB)"
                ),
            ));
        }
        if s.buffer_kb > 0 && s.buffer_kb < s.work_kb {
            return Err((
                at(&s.name),
                format!(
                    "service {name:?}: buffer_kb ({}) is smaller than work_kb ({})",
                    s.buffer_kb, s.work_kb
                ),
            ));
        }
        if let Some(c) = &s.cpus
            && c.get_ref() != "all"
            && let Err(e) = super::parse_cpu_list(c.get_ref())
        {
            return Err((at(c), format!("service {name:?}: {e}")));
        }
        if s.work_us > 1_000_000 {
            return Err((
                at(&s.name),
                format!("service {name:?}: work_us above 1 s per request is not a service"),
            ));
        }
    }
    let fronts = sc.services.iter().filter(|s| s.kind == Kind::Nginx).count();
    if fronts != 1 {
        let off = sc.services.first().map(|s| at(&s.name)).unwrap_or(0);
        return Err((
            off,
            format!("a scenario needs exactly one nginx front end, found {fronts}"),
        ));
    }
    let kinds: HashMap<&str, Kind> = sc
        .services
        .iter()
        .map(|s| (s.name.get_ref().as_str(), s.kind))
        .collect();
    for s in &sc.services {
        for c in &s.calls {
            match kinds.get(c.get_ref().as_str()) {
                None => {
                    return Err((
                        at(c),
                        format!(
                            "{:?} calls unknown service {:?}",
                            s.name.get_ref(),
                            c.get_ref()
                        ),
                    ));
                }
                Some(Kind::Nginx) => {
                    return Err((at(c), "the nginx front end cannot be a callee".into()));
                }
                Some(_) => {}
            }
        }
    }
    acyclic(sc)
}

/// Calls must form a DAG: a cycle would recurse for ever.
fn acyclic(sc: &Scenario) -> Check {
    fn visit<'a>(
        sc: &'a Scenario,
        name: &'a str,
        stack: &mut Vec<&'a str>,
        done: &mut HashSet<&'a str>,
    ) -> Check {
        if done.contains(name) {
            return Ok(());
        }
        let Some(s) = sc.service(name) else {
            return Ok(());
        };
        stack.push(name);
        for c in &s.calls {
            let c_name = c.get_ref().as_str();
            if stack.contains(&c_name) {
                return Err((
                    at(c),
                    format!("call cycle: {} -> {c_name}", stack.join(" -> ")),
                ));
            }
            visit(sc, c_name, stack, done)?;
        }
        stack.pop();
        done.insert(name);
        Ok(())
    }
    let mut done = HashSet::new();
    for s in &sc.services {
        visit(sc, s.name.get_ref(), &mut Vec::new(), &mut done)?;
    }
    Ok(())
}

fn requests(sc: &Scenario) -> Check {
    if sc.requests.is_empty() {
        return Err((0, "a scenario needs at least one [[request]]".into()));
    }
    let mut seen = HashSet::new();
    for r in &sc.requests {
        let n = r.name.get_ref();
        if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err((at(&r.name), format!("request name {n:?}: use [A-Za-z0-9-]")));
        }
        if !seen.insert(n.as_str()) {
            return Err((at(&r.name), format!("request {n:?} is defined twice")));
        }
        match sc.service(r.entry.get_ref()) {
            Some(s) if s.kind == Kind::Rpc => {}
            Some(_) => {
                return Err((
                    at(&r.entry),
                    "a request's entry must be an rpc service".into(),
                ));
            }
            None => {
                return Err((
                    at(&r.entry),
                    format!("unknown entry service {:?}", r.entry.get_ref()),
                ));
            }
        }
        if !pos(r.weight) {
            return Err((at(&r.name), "weight must be > 0".into()));
        }
    }
    Ok(())
}

fn load(sc: &Scenario) -> Check {
    let l = &sc.load;
    let off = at(&l.profile);
    if !pos(l.rps) || l.rps > 100_000.0 {
        return Err((off, "[load] rps must be in (0, 100000]".into()));
    }
    if !pos(l.timeout_s) || !nonneg(l.warmup_s) || l.max_conns == 0 {
        return Err((
            off,
            "[load] timeout_s > 0, warmup_s >= 0, max_conns >= 1".into(),
        ));
    }
    match l.profile.get_ref() {
        Profile::Constant => Ok(()),
        Profile::Diurnal => match (l.amplitude, l.period_s) {
            (Some(a), Some(p)) if (0.0..1.0).contains(&a) && p > 0.0 => Ok(()),
            _ => Err((
                off,
                "diurnal needs amplitude in [0, 1) and period_s > 0".into(),
            )),
        },
        Profile::Spike => match (l.peak_rps, l.at_s, l.duration_s) {
            (Some(p), Some(a), Some(d)) if p > 0.0 && a >= 0.0 && d > 0.0 => Ok(()),
            _ => Err((
                off,
                "spike needs peak_rps > 0, at_s >= 0 and duration_s > 0".into(),
            )),
        },
    }
}

fn faults(sc: &Scenario) -> Check {
    for f in &sc.faults {
        let off = at(&f.kind);
        let kind = *f.kind.get_ref();
        if !nonneg(f.start_s) || !pos(f.duration_s) || !pos(f.intensity) {
            return Err((off, "start_s >= 0, duration_s > 0, intensity > 0".into()));
        }
        if kind == FaultKind::CpuQuota && f.intensity < 0.01 {
            return Err((
                off,
                "cpu_quota intensity below 0.01 cores: the kernel's minimum quota is 1 ms per 100 ms period".into(),
            ));
        }
        match (&f.service, kind) {
            (None, FaultKind::LoadSpike) => {}
            (None, _) => return Err((off, "this fault needs `service`".into())),
            (Some(s), _) => match sc.service(s.get_ref()) {
                None => {
                    return Err((at(s), format!("unknown service {:?}", s.get_ref())));
                }
                Some(svc) if kind == FaultKind::Blocking && svc.kind != Kind::Rpc => {
                    return Err((at(s), "a blocking fault needs an rpc service".into()));
                }
                Some(_) => {}
            },
        }
        match f.onset {
            Onset::Step => {}
            Onset::Ramp => match f.ramp_s {
                Some(r) if (0.5..=10.0).contains(&r) && r <= f.duration_s => {}
                _ => {
                    return Err((
                        off,
                        "a ramp needs ramp_s in [0.5, 10] and no longer than duration_s".into(),
                    ));
                }
            },
            Onset::Bursts => match (f.burst_on_s, f.burst_period_s) {
                (Some(on), Some(p)) if on > 0.0 && p > on => {}
                _ => {
                    return Err((
                        off,
                        "bursts need burst_on_s > 0 and burst_period_s > burst_on_s".into(),
                    ));
                }
            },
        }
        if kind == FaultKind::NetBw {
            if f.random {
                return Err((
                    off,
                    "net_bw faults cannot be random: two caps on one host must not overlap".into(),
                ));
            }
            net_overlap(sc, f, off)?;
        }
    }
    Ok(())
}

/// Two bandwidth caps on one host at once would fight over its root qdisc.
fn net_overlap(sc: &Scenario, f: &super::Fault, off: usize) -> Check {
    let host = |f: &super::Fault| {
        f.service
            .as_ref()
            .and_then(|s| sc.service(s.get_ref()))
            .map(|s| s.host.get_ref().clone())
    };
    for g in &sc.faults {
        if std::ptr::eq(f, g) || *g.kind.get_ref() != FaultKind::NetBw || host(f) != host(g) {
            continue;
        }
        if f.start_s < g.start_s + g.duration_s && g.start_s < f.start_s + f.duration_s {
            return Err((
                off,
                "net_bw faults on one host must not overlap in time".into(),
            ));
        }
    }
    Ok(())
}
