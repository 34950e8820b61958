//! tc HTB on an interface's egress, over rtnetlink: a root HTB qdisc (handle `5ee:`), one
//! parent class at the link rate, one class per service with rate/ceil/prio, a default class
//! for everything else, and u32 filters that send a service's packets (by TCP/UDP source port,
//! i.e. its replies) to its class. Deleting the root qdisc removes all of it and brings back
//! the kernel's default qdisc, so seer only replaces a default root qdisc (noqueue,
//! pfifo_fast, mq, fq_codel, fq), never one an administrator configured.
use std::io;

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::{
    RouteNetlinkMessage,
    tc::{
        TcAttribute, TcFilterU32Option, TcHandle, TcHeader, TcMessage, TcOption, TcU32Key,
        TcU32Selector, TcU32SelectorFlags,
    },
};

use super::journal::{Change, Journal, JournalError};
use crate::sys::netlink::request;

/// Major number of seer's root qdisc ("5ee" reads "see").
pub const HANDLE_MAJOR: u16 = 0x5ee;
/// Minor of the parent class (link rate) and of the default class.
pub const PARENT_MINOR: u16 = 1;
pub const DEFAULT_MINOR: u16 = 0xfff;
/// Root qdiscs the kernel installs by itself (deleting ours brings one of them back).
const DEFAULT_QDISCS: &[&str] = &["noqueue", "pfifo_fast", "mq", "fq_codel", "fq"];

const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
const TC_HTB_PROTOVER: u32 = 3;
const TC_LINKLAYER_ETHERNET: u8 = 1;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// psched ticks are 64 ns (PSCHED_SHIFT 6).
const PSCHED_NS_PER_TICK: u64 = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtbClass {
    pub service: String,
    /// Class minor (2 ..= 0xffe); the class id is `5ee:minor`.
    pub minor: u16,
    /// Guaranteed rate, bits per second.
    pub rate_bps: u64,
    /// Borrowing ceiling, bits per second (>= rate).
    pub ceil_bps: u64,
    /// Lower is served first when borrowing spare bandwidth.
    pub prio: u32,
    /// Packets with one of these source ports (the service's replies) go to this class.
    pub sports: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtbPlan {
    pub iface: String,
    /// The bottleneck rate HTB shapes to (the NIC's or the uplink's), bits per second.
    pub link_bps: u64,
    pub classes: Vec<HtbClass>,
}

#[derive(Debug, thiserror::Error)]
pub enum HtbError {
    #[error(
        "interface {iface} does not exist (check `ip link`; inside a namespace, run seer there)"
    )]
    NoInterface { iface: String },
    #[error(
        "{iface} already has a {kind} root qdisc that seer did not install: seer leaves it alone (remove it, or shape with it)"
    )]
    ForeignQdisc { iface: String, kind: String },
    #[error("permission denied on {iface}: tc changes need CAP_NET_ADMIN")]
    PermissionDenied { iface: String },
    #[error("bad HTB plan for {iface}: {why}")]
    BadPlan { iface: String, why: String },
    #[error("{op} on {iface}: {source}")]
    Netlink {
        op: String,
        iface: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

fn handle(minor: u16) -> TcHandle {
    TcHandle {
        major: HANDLE_MAJOR,
        minor,
    }
}

pub fn ifindex(iface: &str) -> Result<u32, HtbError> {
    nix::net::if_::if_nametoindex(iface).map_err(|_| HtbError::NoInterface {
        iface: iface.into(),
    })
}

fn nl_err(op: impl Into<String>, iface: &str, e: io::Error) -> HtbError {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => HtbError::PermissionDenied {
            iface: iface.into(),
        },
        Some(libc::ENODEV) => HtbError::NoInterface {
            iface: iface.into(),
        },
        _ => HtbError::Netlink {
            op: op.into(),
            iface: iface.into(),
            source: e,
        },
    }
}

fn msg(
    ifindex: u32,
    handle: TcHandle,
    parent: TcHandle,
    info: u32,
    attrs: Vec<TcAttribute>,
) -> TcMessage {
    TcMessage::from_parts(
        TcHeader {
            index: ifindex as i32,
            handle,
            parent,
            info,
            ..Default::default()
        },
        attrs,
    )
}

/// The root qdisc on `ifindex`: (kind, handle).
pub fn root_qdisc(iface: &str, ifindex: u32) -> Result<Option<(String, TcHandle)>, HtbError> {
    let all = request(
        RouteNetlinkMessage::GetQueueDiscipline(TcMessage::with_index(ifindex as i32)),
        NLM_F_DUMP,
    )
    .map_err(|e| nl_err("list qdiscs", iface, e))?;
    Ok(all.into_iter().find_map(|m| match m {
        RouteNetlinkMessage::NewQueueDiscipline(q)
            if q.header.index == ifindex as i32 && q.header.parent == TcHandle::ROOT =>
        {
            let kind = q.attributes.iter().find_map(|a| match a {
                TcAttribute::Kind(k) => Some(k.clone()),
                _ => None,
            })?;
            Some((kind, q.header.handle))
        }
        _ => None,
    }))
}

/// `struct tc_ratespec` + `struct tc_htb_opt` (44 bytes, native endian), rates in bytes/s.
fn htb_opt(rate_bps: u64, ceil_bps: u64, prio: u32, quantum: u32) -> Vec<u8> {
    let spec = |bps: u64| -> Vec<u8> {
        let bytes_s = bps / 8;
        let mut v = vec![0u8, TC_LINKLAYER_ETHERNET];
        v.extend_from_slice(&0u16.to_ne_bytes()); // overhead
        v.extend_from_slice(&(-1i16).to_ne_bytes()); // cell_align
        v.extend_from_slice(&0u16.to_ne_bytes()); // mpu
        v.extend_from_slice(&(bytes_s.min(u64::from(u32::MAX)) as u32).to_ne_bytes());
        v
    };
    // Burst as tc computes it by default: one ms at the rate plus one MTU, in psched ticks.
    let buffer = |bps: u64| -> u32 {
        let bytes_s = (bps / 8).max(1);
        let burst = bytes_s / 1000 + 1600;
        (burst * 1_000_000_000 / bytes_s / PSCHED_NS_PER_TICK).min(u64::from(u32::MAX)) as u32
    };
    let mut v = spec(rate_bps);
    v.extend(spec(ceil_bps));
    for x in [buffer(rate_bps), buffer(ceil_bps), quantum, 0, prio] {
        v.extend_from_slice(&x.to_ne_bytes());
    }
    v
}

fn class_attrs(rate_bps: u64, ceil_bps: u64, prio: u32) -> Vec<TcAttribute> {
    // Quantum: bytes a class may send per round when borrowing; rate/10 like r2q=10, clamped
    // to what the kernel accepts without a warning.
    let quantum = ((rate_bps / 8) / 10).clamp(1600, 200_000) as u32;
    let mut opts = vec![TcOption::Other(DefaultNla::new(
        TCA_HTB_PARMS,
        htb_opt(rate_bps, ceil_bps, prio, quantum),
    ))];
    if rate_bps / 8 > u64::from(u32::MAX) {
        opts.push(TcOption::Other(DefaultNla::new(
            TCA_HTB_RATE64,
            (rate_bps / 8).to_ne_bytes().to_vec(),
        )));
    }
    if ceil_bps / 8 > u64::from(u32::MAX) {
        opts.push(TcOption::Other(DefaultNla::new(
            TCA_HTB_CEIL64,
            (ceil_bps / 8).to_ne_bytes().to_vec(),
        )));
    }
    vec![TcAttribute::Kind("htb".into()), TcAttribute::Options(opts)]
}

impl HtbPlan {
    pub fn validate(&self) -> Result<(), HtbError> {
        let bad = |why: String| HtbError::BadPlan {
            iface: self.iface.clone(),
            why,
        };
        if self.link_bps < 8_000 {
            return Err(bad(format!(
                "link rate {} bit/s is below 8 kbit/s",
                self.link_bps
            )));
        }
        let mut sum = 0u64;
        for c in &self.classes {
            if c.minor <= PARENT_MINOR || c.minor >= DEFAULT_MINOR {
                return Err(bad(format!(
                    "class minor {:#x} of {} is reserved",
                    c.minor, c.service
                )));
            }
            if c.rate_bps == 0 || c.rate_bps > c.ceil_bps || c.ceil_bps > self.link_bps {
                return Err(bad(format!(
                    "{}: need 0 < rate ({}) <= ceil ({}) <= link ({})",
                    c.service, c.rate_bps, c.ceil_bps, self.link_bps
                )));
            }
            if self.classes.iter().filter(|o| o.minor == c.minor).count() > 1 {
                return Err(bad(format!("class minor {:#x} used twice", c.minor)));
            }
            sum += c.rate_bps;
        }
        if sum >= self.link_bps {
            return Err(bad(format!(
                "guaranteed rates add up to {sum} bit/s, not below the link's {} (the default class needs some)",
                self.link_bps
            )));
        }
        Ok(())
    }
}

/// Installs `plan` (journaled first). A failure part-way removes what was installed.
pub fn apply(j: &mut Journal, plan: &HtbPlan) -> Result<(), HtbError> {
    plan.validate()?;
    let iface = plan.iface.as_str();
    let idx = ifindex(iface)?;
    match root_qdisc(iface, idx)? {
        Some((kind, h)) if kind == "htb" && h.major == HANDLE_MAJOR => {
            // Ours from an earlier plan: rebuild from scratch.
            remove_root(iface, idx)?;
        }
        Some((kind, _)) if !DEFAULT_QDISCS.contains(&kind.as_str()) => {
            return Err(HtbError::ForeignQdisc {
                iface: iface.into(),
                kind,
            });
        }
        _ => {}
    }
    let change = Change::HtbRoot {
        iface: iface.into(),
        ifindex: idx,
        handle: handle(0).into(),
    };
    let id = j.record(&format!("htb:{iface}"), change)?;
    let r = install(idx, plan);
    if r.is_err() {
        let _ = remove_root(iface, idx);
        if let Some(id) = id {
            j.forget(id)?;
        }
    }
    r
}

fn install(idx: u32, plan: &HtbPlan) -> Result<(), HtbError> {
    let iface = plan.iface.as_str();
    let mut glob = Vec::new();
    for x in [TC_HTB_PROTOVER, 10, u32::from(DEFAULT_MINOR), 0, 0] {
        glob.extend_from_slice(&x.to_ne_bytes());
    }
    let q = msg(
        idx,
        handle(0),
        TcHandle::ROOT,
        0,
        vec![
            TcAttribute::Kind("htb".into()),
            TcAttribute::Options(vec![TcOption::Other(DefaultNla::new(TCA_HTB_INIT, glob))]),
        ],
    );
    request(
        RouteNetlinkMessage::NewQueueDiscipline(q),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
    .map_err(|e| nl_err("add root htb qdisc 5ee:", iface, e))?;
    let add_class = |minor: u16, parent: u16, rate: u64, ceil: u64, prio: u32| {
        let m = msg(
            idx,
            handle(minor),
            handle(parent),
            0,
            class_attrs(rate, ceil, prio),
        );
        request(
            RouteNetlinkMessage::NewTrafficClass(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
        .map_err(|e| nl_err(format!("add htb class 5ee:{minor:x}"), iface, e))
    };
    add_class(PARENT_MINOR, 0, plan.link_bps, plan.link_bps, 0)?;
    let guaranteed: u64 = plan.classes.iter().map(|c| c.rate_bps).sum();
    add_class(
        DEFAULT_MINOR,
        PARENT_MINOR,
        plan.link_bps - guaranteed,
        plan.link_bps,
        7,
    )?;
    for c in &plan.classes {
        add_class(c.minor, PARENT_MINOR, c.rate_bps, c.ceil_bps, c.prio)?;
        for &port in &c.sports {
            add_sport_filter(idx, iface, port, c.minor, false)?;
            add_sport_filter(idx, iface, port, c.minor, true)?;
        }
        log::info!(
            "htb: {} on {iface}: class 5ee:{:x} rate {} ceil {} bit/s prio {}, source ports {:?}",
            c.service,
            c.minor,
            c.rate_bps,
            c.ceil_bps,
            c.prio,
            c.sports
        );
    }
    Ok(())
}

/// Changes one existing class of seer's HTB on `iface` in place (rate, ceil, prio), without
/// touching its queue or filters. The root qdisc's journal entry covers its undo.
pub fn change_class(iface: &str, class: &HtbClass) -> Result<(), HtbError> {
    let idx = ifindex(iface)?;
    if class.rate_bps == 0 || class.rate_bps > class.ceil_bps {
        return Err(HtbError::BadPlan {
            iface: iface.into(),
            why: format!("{}: need 0 < rate <= ceil", class.service),
        });
    }
    let m = msg(
        idx,
        handle(class.minor),
        handle(PARENT_MINOR),
        0,
        class_attrs(class.rate_bps, class.ceil_bps, class.prio),
    );
    request(RouteNetlinkMessage::NewTrafficClass(m), 0)
        .map(drop)
        .map_err(|e| nl_err(format!("change htb class 5ee:{:x}", class.minor), iface, e))?;
    log::info!(
        "htb: {} on {iface}: class 5ee:{:x} now rate {} ceil {} bit/s",
        class.service,
        class.minor,
        class.rate_bps,
        class.ceil_bps
    );
    Ok(())
}

/// u32 filter on the root: IPv4 (or IPv6) with transport source port `port` -> class
/// `5ee:minor`. Assumes the fixed header (20 bytes for IPv4, 40 for IPv6 without extension
/// headers), as tc's `match ip sport` / `match ip6 sport` do.
fn add_sport_filter(
    idx: u32,
    iface: &str,
    port: u16,
    minor: u16,
    v6: bool,
) -> Result<(), HtbError> {
    let mut key = TcU32Key::default();
    key.mask = 0xffff_0000;
    key.val = u32::from(port) << 16;
    key.off = if v6 { 40 } else { 20 };
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.nkeys = 1;
    sel.keys = vec![key];
    let (prio, proto): (u32, u16) = if v6 { (2, ETH_P_IPV6) } else { (1, ETH_P_IP) };
    let info = (prio << 16) | u32::from(proto.to_be());
    let m = msg(
        idx,
        TcHandle::UNSPEC,
        handle(0),
        info,
        vec![
            TcAttribute::Kind("u32".into()),
            TcAttribute::Options(vec![
                TcOption::U32(TcFilterU32Option::ClassId(handle(minor))),
                TcOption::U32(TcFilterU32Option::Selector(sel)),
            ]),
        ],
    );
    request(RouteNetlinkMessage::NewTrafficFilter(m), NLM_F_CREATE)
        .map(drop)
        .map_err(|e| {
            nl_err(
                format!(
                    "add u32 {} filter sport {port} -> 5ee:{minor:x}",
                    if v6 { "ipv6" } else { "ipv4" }
                ),
                iface,
                e,
            )
        })
}

/// Removes seer's root qdisc (and with it every class and filter) from `iface`, if it is
/// still there and still the interface seer changed. `Ok(false)`: nothing of seer's was left.
pub fn remove_root(iface: &str, expected_ifindex: u32) -> Result<bool, HtbError> {
    let idx = match ifindex(iface) {
        Ok(i) if i == expected_ifindex => i,
        _ => return Ok(false),
    };
    match root_qdisc(iface, idx)? {
        Some((kind, h)) if kind == "htb" && h.major == HANDLE_MAJOR => {}
        _ => return Ok(false),
    }
    let m = msg(idx, handle(0), TcHandle::ROOT, 0, vec![]);
    request(RouteNetlinkMessage::DelQueueDiscipline(m), 0)
        .map_err(|e| nl_err("delete root htb qdisc 5ee:", iface, e))?;
    log::info!("htb: removed seer's root qdisc from {iface}");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htb_opt_is_the_kernels_44_byte_layout() {
        let v = htb_opt(80_000_000, 100_000_000, 3, 5000);
        assert_eq!(v.len(), 44);
        assert_eq!(v[1], TC_LINKLAYER_ETHERNET);
        assert_eq!(
            u32::from_ne_bytes(v[8..12].try_into().expect("4")),
            10_000_000
        );
        assert_eq!(
            u32::from_ne_bytes(v[20..24].try_into().expect("4")),
            12_500_000
        );
        assert_eq!(u32::from_ne_bytes(v[40..44].try_into().expect("4")), 3);
    }

    #[test]
    fn plan_validation_names_the_problem() {
        let c = |minor, rate, ceil| HtbClass {
            service: "s".into(),
            minor,
            rate_bps: rate,
            ceil_bps: ceil,
            prio: 0,
            sports: vec![80],
        };
        let p = |classes| HtbPlan {
            iface: "x".into(),
            link_bps: 100_000_000,
            classes,
        };
        assert!(p(vec![c(2, 10_000_000, 20_000_000)]).validate().is_ok());
        let e = p(vec![c(2, 30_000_000, 20_000_000)])
            .validate()
            .expect_err("rate > ceil");
        assert!(e.to_string().contains("rate"), "{e}");
        let e = p(vec![c(1, 1, 2)]).validate().expect_err("reserved");
        assert!(e.to_string().contains("reserved"), "{e}");
        let e = p(vec![
            c(2, 60_000_000, 60_000_000),
            c(3, 60_000_000, 60_000_000),
        ])
        .validate()
        .expect_err("oversubscribed");
        assert!(e.to_string().contains("add up"), "{e}");
    }

    #[test]
    fn missing_interface_is_a_clear_error() {
        let d = crate::actuate::testutil::TempDir::new("htb-noif");
        let mut j = Journal::open(&d.path().join("j.json")).expect("journal");
        let plan = HtbPlan {
            iface: "seer-nope0".into(),
            link_bps: 10_000_000,
            classes: vec![],
        };
        let e = apply(&mut j, &plan).expect_err("no such interface");
        assert!(matches!(e, HtbError::NoInterface { .. }), "{e}");
        assert!(e.to_string().contains("seer-nope0"), "{e}");
        assert!(
            j.entries().is_empty(),
            "nothing journaled for a refused plan"
        );
    }
}
