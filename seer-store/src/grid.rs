//! The tick grid that joins traces recorded on different clocks: one implementation for the
//! testbed's training datasets (every host's trace joined after a run) and the central
//! predictor of cluster mode (every host's samples joined live), so a model sees the same
//! rows in training and in production.
//!
//! - **Slots**: time is cut into `tick_ms` slots, `slot = ts_ms / tick_ms`; a sample belongs
//!   to the slot its timestamp falls in, whatever the phase of its sender's tick.
//! - **Lanes**: one per sender (a host in cluster mode, a service in a dataset). Two samples
//!   of one lane in one slot (a tick that drifted): the newer one wins.
//! - **Closing** a slot gives each lane's sample for it, or, when the lane sent none, its
//!   latest earlier one, flagged `repeated` (a late host, a missed tick). A lane silent for
//!   more than `forget_slots` slots is left out until it speaks again (never, with `None`).
//! - **Late** samples (their slot is closed already) are refused, but still become the lane's
//!   latest when they are newer than what it had, so the next slot repeats the freshest data.
use std::collections::BTreeMap;

/// A sample whose slot was closed already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Late;

struct Lane<V> {
    /// The latest sample at or before the last closed slot, and its slot.
    last: Option<(u64, V)>,
    /// Samples for slots not closed yet.
    pending: BTreeMap<u64, V>,
}

impl<V> Lane<V> {
    /// Every pending sample up to slot `upto` becomes the lane's latest, in slot order.
    fn settle(&mut self, upto: u64) {
        while let Some(e) = self.pending.first_entry() {
            if *e.key() > upto {
                break;
            }
            self.last = Some(e.remove_entry());
        }
    }
}

/// One lane's value in a closed slot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell<'a, K, V> {
    pub key: &'a K,
    pub value: &'a V,
    /// The slot the value was sent for.
    pub from_slot: u64,
    /// No sample for this slot: `value` is the lane's latest earlier one.
    pub repeated: bool,
}

/// See the module's documentation.
pub struct Grid<K, V> {
    tick_ms: u64,
    forget_slots: Option<u64>,
    lanes: BTreeMap<K, Lane<V>>,
    /// The next slot to close (None: the grid has not started).
    next: Option<u64>,
}

impl<K: Ord + Clone, V> Grid<K, V> {
    /// `forget_slots`: how long a silent lane is still repeated (None: for ever).
    pub fn new(tick_ms: u64, forget_slots: Option<u64>) -> Self {
        Grid {
            tick_ms: tick_ms.max(1),
            forget_slots: forget_slots.map(|f| f.max(1)),
            lanes: BTreeMap::new(),
            next: None,
        }
    }

    pub fn tick_ms(&self) -> u64 {
        self.tick_ms
    }

    pub fn slot_of(&self, ts_ms: u64) -> u64 {
        ts_ms / self.tick_ms
    }

    /// The last slot closed (None: the grid has not started).
    pub fn closed(&self) -> Option<u64> {
        self.next?.checked_sub(1)
    }

    /// The next slot [`Grid::close_next`] closes (None: the grid has not started).
    pub fn next_slot(&self) -> Option<u64> {
        self.next
    }

    /// Lanes heard from (forgotten ones included).
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    pub fn has_lane(&self, key: &K) -> bool {
        self.lanes.contains_key(key)
    }

    /// Starts the grid so that `slot` is the first one closed; no effect once started.
    pub fn start_at(&mut self, slot: u64) {
        self.next.get_or_insert(slot);
    }

    /// Places `value`, sampled at `ts_ms`, on `key`'s lane. The first sample on a grid not
    /// started starts it at its own slot.
    pub fn insert(&mut self, key: K, ts_ms: u64, value: V) -> Result<(), Late> {
        let slot = self.slot_of(ts_ms);
        let next = *self.next.get_or_insert(slot);
        let lane = self.lanes.entry(key).or_insert(Lane {
            last: None,
            pending: BTreeMap::new(),
        });
        if slot < next {
            if lane.last.as_ref().is_none_or(|(s, _)| *s < slot) {
                lane.last = Some((slot, value));
            }
            return Err(Late);
        }
        lane.pending.insert(slot, value);
        Ok(())
    }

    /// Closes the slot after the last closed one and gives every lane's cell for it (lanes in
    /// key order; forgotten and never-heard lanes left out). Nothing before the grid starts.
    pub fn close_next(&mut self) -> Option<(u64, Vec<Cell<'_, K, V>>)> {
        let slot = self.next?;
        self.next = Some(slot + 1);
        for lane in self.lanes.values_mut() {
            lane.settle(slot);
        }
        let forget = self.forget_slots;
        let cells = self
            .lanes
            .iter()
            .filter_map(|(key, lane)| {
                let (from, value) = lane.last.as_ref()?;
                let repeated = *from != slot;
                if repeated && forget.is_some_and(|f| slot - from > f) {
                    return None;
                }
                Some(Cell {
                    key,
                    value,
                    from_slot: *from,
                    repeated,
                })
            })
            .collect();
        Some((slot, cells))
    }

    /// Skips slots without closing them one by one: the next slot closed is `slot` (no effect
    /// if it is not ahead). Samples for skipped slots become their lanes' latest.
    pub fn skip_to(&mut self, slot: u64) {
        let Some(next) = self.next else { return };
        if slot <= next {
            return;
        }
        for lane in self.lanes.values_mut() {
            lane.settle(slot - 1);
        }
        self.next = Some(slot);
    }

    /// The newest slot up to which every slot after the last closed one has a sample from
    /// every lane still followed (not silent for longer than `forget_slots`): those can be
    /// closed now, with no one to wait for. None: nothing to close early.
    pub fn complete_through(&self) -> Option<u64> {
        let next = self.next?;
        let active: Vec<&Lane<V>> = self
            .lanes
            .values()
            .filter(|l| {
                let newest = l
                    .pending
                    .keys()
                    .next_back()
                    .copied()
                    .or(l.last.as_ref().map(|(s, _)| *s));
                newest.is_some_and(|n| self.forget_slots.is_none_or(|f| n + f >= next))
            })
            .collect();
        if active.is_empty() {
            return None;
        }
        let mut upto = None;
        let mut s = next;
        while active.iter().all(|l| l.pending.contains_key(&s)) {
            upto = Some(s);
            s += 1;
        }
        upto
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(cells: &[Cell<'a, &'static str, u32>]) -> Vec<(&'static str, u32, bool)> {
        cells
            .iter()
            .map(|c| (*c.key, *c.value, c.repeated))
            .collect()
    }

    #[test]
    fn samples_on_different_phases_land_in_their_slots() {
        let mut g = Grid::new(100, None);
        g.insert("a", 1_000, 1).unwrap();
        g.insert("b", 1_090, 2).unwrap();
        g.insert("a", 1_105, 3).unwrap();
        g.insert("b", 1_199, 4).unwrap();
        let (s, c) = g.close_next().unwrap();
        assert_eq!(
            (s, values(&c)),
            (10, vec![("a", 1, false), ("b", 2, false)])
        );
        let (s, c) = g.close_next().unwrap();
        assert_eq!(
            (s, values(&c)),
            (11, vec![("a", 3, false), ("b", 4, false)])
        );
    }

    #[test]
    fn a_missing_sample_repeats_the_latest_flagged_and_the_newer_of_two_wins() {
        let mut g = Grid::new(100, Some(2));
        g.insert("a", 1_000, 1).unwrap();
        g.insert("b", 1_000, 10).unwrap();
        g.insert("a", 1_100, 2).unwrap();
        g.insert("a", 1_150, 3).unwrap(); // same slot: the newer wins
        assert_eq!(values(&g.close_next().unwrap().1).len(), 2);
        let (_, c) = g.close_next().unwrap();
        assert_eq!(values(&c), vec![("a", 3, false), ("b", 10, true)]);
        assert_eq!(c[1].from_slot, 10);
        g.close_next();
        let (s, c) = g.close_next().unwrap();
        assert_eq!(s, 13);
        assert_eq!(
            values(&c),
            vec![("a", 3, true)],
            "b silent for 3 slots > 2: forgotten"
        );
    }

    #[test]
    fn a_late_sample_is_refused_but_becomes_the_latest() {
        let mut g = Grid::new(100, None);
        g.insert("a", 1_000, 1).unwrap();
        g.insert("b", 1_000, 10).unwrap();
        g.close_next();
        g.close_next();
        assert_eq!(g.insert("b", 1_100, 11), Err(Late));
        let (_, c) = g.close_next().unwrap();
        assert_eq!(values(&c), vec![("a", 1, true), ("b", 11, true)]);
        assert_eq!(c[1].from_slot, 11);
    }

    #[test]
    fn complete_through_waits_for_every_followed_lane() {
        let mut g = Grid::new(100, Some(3));
        g.insert("a", 1_000, 1).unwrap();
        g.insert("b", 1_000, 1).unwrap();
        assert_eq!(g.complete_through(), Some(10));
        g.close_next();
        g.insert("a", 1_100, 1).unwrap();
        g.insert("a", 1_200, 1).unwrap();
        assert_eq!(g.complete_through(), None, "b has not sent slot 11");
        g.skip_to(13);
        g.insert("a", 1_300, 1).unwrap();
        assert_eq!(
            g.complete_through(),
            None,
            "b (slot 10) still followed at slot 13"
        );
        g.skip_to(14);
        for ts in [1_400, 1_500] {
            g.insert("a", ts, 1).unwrap();
        }
        assert_eq!(
            g.complete_through(),
            Some(15),
            "b forgotten: silent for over 3 slots"
        );
        assert_eq!(g.close_next().unwrap().0, 14);
    }

    #[test]
    fn nothing_closes_before_the_grid_starts_and_start_at_sets_the_first_slot() {
        let mut g: Grid<&str, u32> = Grid::new(100, None);
        assert!(g.close_next().is_none());
        g.start_at(5);
        g.insert("a", 1_000, 1).unwrap();
        let (s, c) = g.close_next().unwrap();
        assert_eq!(s, 5);
        assert!(c.is_empty(), "nothing sent for slot 5 or before");
    }
}
