//! Ordering services along the call graph, back-end first, as the model expects.

use seer_common::sample::ServiceId;
use std::collections::{BTreeMap, BTreeSet};

/// `services` (plus any service named by an edge) ordered so that each one comes after every
/// service it calls: callees before callers, back-end first. Edges are (caller, callee). Ties
/// go to the lower id; a cycle is broken at its lowest id.
pub fn topo_order(services: &[ServiceId], edges: &[(ServiceId, ServiceId)]) -> Vec<ServiceId> {
    let mut callees: BTreeMap<ServiceId, BTreeSet<ServiceId>> = BTreeMap::new();
    let mut callers: BTreeMap<ServiceId, BTreeSet<ServiceId>> = BTreeMap::new();
    for &s in services {
        callees.entry(s).or_default();
    }
    for &(caller, callee) in edges {
        callees.entry(caller).or_default();
        callees.entry(callee).or_default();
        if caller != callee {
            callees.entry(caller).or_default().insert(callee);
            callers.entry(callee).or_default().insert(caller);
        }
    }
    let mut waiting: BTreeMap<ServiceId, usize> =
        callees.iter().map(|(&s, c)| (s, c.len())).collect();
    let mut ready: BTreeSet<ServiceId> = waiting
        .iter()
        .filter(|&(_, &n)| n == 0)
        .map(|(&s, _)| s)
        .collect();
    let mut out = Vec::with_capacity(waiting.len());
    while !waiting.is_empty() {
        let next = match ready.pop_first() {
            Some(s) => s,
            // Only cycles are left: break the one with the lowest id.
            None => match waiting.keys().next() {
                Some(&s) => s,
                None => break,
            },
        };
        if waiting.remove(&next).is_none() {
            continue;
        }
        out.push(next);
        for caller in callers.get(&next).into_iter().flatten() {
            if let Some(n) = waiting.get_mut(caller) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    ready.insert(*caller);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u32]) -> Vec<ServiceId> {
        v.iter().copied().map(ServiceId).collect()
    }

    #[test]
    fn back_end_first() {
        // 1 (front) -> 2 -> 3 (db), 1 -> 4 (cache)
        let e = [(1, 2), (2, 3), (1, 4)].map(|(a, b)| (ServiceId(a), ServiceId(b)));
        assert_eq!(
            topo_order(&ids(&[1, 2, 3, 4, 5]), &e),
            ids(&[3, 2, 4, 1, 5])
        );
    }

    #[test]
    fn cycles_and_unknown_services_are_kept() {
        let e = [(1, 2), (2, 1), (3, 1), (9, 3)].map(|(a, b)| (ServiceId(a), ServiceId(b)));
        let order = topo_order(&ids(&[1, 2, 3]), &e);
        assert_eq!(order, ids(&[1, 2, 3, 9]));
    }

    #[test]
    fn no_edges_is_id_order() {
        assert_eq!(topo_order(&ids(&[5, 1, 3]), &[]), ids(&[1, 3, 5]));
    }
}
