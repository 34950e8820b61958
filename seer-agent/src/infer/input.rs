//! The model's input: the last ticks of every service, kept in memory, shaped [T, N, C] in the
//! discovery's order (back end first), and normalised as the card says.
use std::collections::{BTreeSet, HashMap, VecDeque};

use seer_common::sample::{CHANNELS, Sample, ServiceId};

use super::{
    Request,
    card::{Card, MAX_T},
};

/// The last MAX_T ticks of each service's channels.
#[derive(Default)]
pub struct Window {
    ticks: HashMap<ServiceId, VecDeque<[f32; CHANNELS]>>,
}

impl Window {
    /// Appends this tick's samples; services gone from discovery are forgotten.
    pub fn push(&mut self, services: &[crate::discovery::Service], samples: &[Sample]) {
        if self.ticks.len() > services.len() {
            let live: BTreeSet<ServiceId> = services.iter().map(|s| s.id).collect();
            self.ticks.retain(|id, _| live.contains(id));
        }
        for (s, smp) in services.iter().zip(samples) {
            let q = self.ticks.entry(s.id).or_default();
            if q.len() == MAX_T {
                q.pop_front();
            }
            q.push_back(smp.values);
        }
    }

    /// Ticks held for a service.
    #[cfg(test)]
    pub fn len_of(&self, id: ServiceId) -> usize {
        self.ticks.get(&id).map_or(0, VecDeque::len)
    }

    /// The request for the last `t` ticks: a service seen for fewer ticks gets zeros before its
    /// first (as the training datasets do).
    pub fn request(
        &self,
        ts_ms: u64,
        services: &[crate::discovery::Service],
        edges: &BTreeSet<(ServiceId, ServiceId)>,
        t: usize,
        version: u64,
    ) -> Request {
        let n = services.len();
        let mut raw = vec![0f32; t * n * CHANNELS];
        for (j, s) in services.iter().enumerate() {
            let Some(q) = self.ticks.get(&s.id) else {
                continue;
            };
            let have = q.len().min(t);
            for (k, v) in q.iter().skip(q.len() - have).enumerate() {
                let ti = t - have + k;
                let at = (ti * n + j) * CHANNELS;
                raw[at..at + CHANNELS].copy_from_slice(v);
            }
        }
        let index: HashMap<ServiceId, usize> = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id, i))
            .collect();
        let edges = edges
            .iter()
            .filter_map(|(a, b)| Some((*index.get(a)?, *index.get(b)?)))
            .filter(|(i, j)| i != j)
            .map(|(i, j)| [i as i64, j as i64])
            .collect();
        Request {
            ts_ms,
            ids: services.iter().map(|s| s.id).collect(),
            t,
            raw,
            edges,
            version,
        }
    }
}

/// `adj` [n, n] (adj[i * n + j] = 1: i calls j) from an edge list, for models that take it.
pub fn dense_adj(n: usize, edges: &[[i64; 2]]) -> Vec<f32> {
    let mut adj = vec![0f32; n * n];
    for &[i, j] in edges {
        if let (Ok(i), Ok(j)) = (usize::try_from(i), usize::try_from(j))
            && i < n
            && j < n
        {
            adj[i * n + j] = 1.0;
        }
    }
    adj
}

/// The edge list of a dense `adj` [n, n] (non-zero off the diagonal), row by row (fixtures
/// written with `adj`).
#[cfg(test)]
pub fn edges_of_dense(n: usize, adj: &[f32]) -> Vec<[i64; 2]> {
    (0..n)
        .flat_map(|i| (0..n).map(move |j| (i, j)))
        .filter(|&(i, j)| i != j && adj.get(i * n + j).is_some_and(|&v| v != 0.0))
        .map(|(i, j)| [i as i64, j as i64])
        .collect()
}

/// `x` [t, n_in, C] from the request's raw [t, n, C]: v' = (ln(1 + max(v, 0)) - mean) / std per
/// channel (channels the model never saw are zeroed first); services past n (padding of a
/// fixed-N model) are zeros.
pub fn normalise(
    card: &Card,
    zeroed: &[bool; CHANNELS],
    req: &Request,
    n_in: usize,
    x: &mut Vec<f32>,
) {
    let n = req.ids.len();
    x.clear();
    x.resize(req.t * n_in * CHANNELS, 0.0);
    let mean = &card.normalisation.mean;
    let std = &card.normalisation.std;
    for ti in 0..req.t {
        for j in 0..n {
            let src = (ti * n + j) * CHANNELS;
            let dst = (ti * n_in + j) * CHANNELS;
            for c in 0..CHANNELS {
                let v = if zeroed[c] { 0.0 } else { req.raw[src + c] };
                let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
                x[dst + c] = (v.ln_1p() - mean[c]) / std[c];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(id: u32) -> crate::discovery::Service {
        crate::discovery::Service {
            id: ServiceId(id),
            name: format!("s{id}"),
            ..Default::default()
        }
    }

    fn sample(id: u32, v: f32) -> Sample {
        Sample {
            service: ServiceId(id),
            ts_ms: 0,
            values: [v; CHANNELS],
        }
    }

    #[test]
    fn the_window_is_t_by_n_by_c_with_zeros_before_a_services_first_tick() {
        let mut w = Window::default();
        let a = vec![svc(1)];
        w.push(&a, &[sample(1, 1.0)]);
        w.push(&a, &[sample(1, 2.0)]);
        let ab = vec![svc(1), svc(2)];
        w.push(&ab, &[sample(1, 3.0), sample(2, 30.0)]);
        let edges: BTreeSet<_> = [(ServiceId(2), ServiceId(1))].into();
        let r = w.request(7, &ab, &edges, 4, 1);
        assert_eq!(r.raw.len(), 4 * 2 * CHANNELS);
        let at = |t: usize, j: usize| r.raw[(t * 2 + j) * CHANNELS];
        // Service 1: 0, 1, 2, 3; service 2: 0, 0, 0, 30.
        assert_eq!(
            [at(0, 0), at(1, 0), at(2, 0), at(3, 0)],
            [0.0, 1.0, 2.0, 3.0]
        );
        assert_eq!(
            [at(0, 1), at(1, 1), at(2, 1), at(3, 1)],
            [0.0, 0.0, 0.0, 30.0]
        );
        // s2 (index 1) calls s1 (index 0); dense, adj[1][0].
        assert_eq!(r.edges, vec![[1, 0]]);
        assert_eq!(dense_adj(2, &r.edges), vec![0.0, 0.0, 1.0, 0.0]);
        assert_eq!(edges_of_dense(2, &dense_adj(2, &r.edges)), r.edges);
        // A service gone from discovery is forgotten.
        w.push(&[svc(2)], &[sample(2, 31.0)]);
        assert_eq!(w.len_of(ServiceId(1)), 0);
        assert_eq!(w.len_of(ServiceId(2)), 2);
    }

    #[test]
    fn the_window_keeps_at_most_max_t_ticks() {
        let mut w = Window::default();
        let a = vec![svc(1)];
        for i in 0..(MAX_T + 10) {
            w.push(&a, &[sample(1, i as f32)]);
        }
        assert_eq!(w.len_of(ServiceId(1)), MAX_T);
        let r = w.request(0, &a, &BTreeSet::new(), 2, 1);
        assert_eq!(r.raw[0], (MAX_T + 8) as f32);
        assert_eq!(r.raw[CHANNELS], (MAX_T + 9) as f32);
    }

    #[test]
    fn normalisation_is_log1p_standard_with_zeroed_channels_and_padding() {
        let text = super::super::card::tests_support::card_json();
        let mut card = Card::parse("m.json", &text).unwrap();
        card.normalisation.mean = vec![1.0; CHANNELS];
        card.normalisation.std = vec![2.0; CHANNELS];
        let mut zeroed = [false; CHANNELS];
        zeroed[3] = true;
        let req = Request {
            ts_ms: 0,
            ids: vec![ServiceId(1)],
            t: 1,
            raw: (0..CHANNELS)
                .map(|c| if c == 0 { -5.0 } else { 9.0 })
                .collect(),
            edges: Vec::new(),
            version: 1,
        };
        let mut x = Vec::new();
        normalise(&card, &zeroed, &req, 3, &mut x);
        assert_eq!(x.len(), 3 * CHANNELS);
        assert_eq!(x[0], -0.5); // max(-5, 0) = 0 -> (0 - 1) / 2
        assert!((x[1] - (10f32.ln() - 1.0) / 2.0).abs() < 1e-6);
        assert_eq!(x[3], -0.5); // zeroed
        // Padding services are zeros.
        assert!(x[CHANNELS..].iter().all(|&v| v == 0.0));
    }
}
