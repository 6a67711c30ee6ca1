//! The workers the engine knows, by a small index, and the choice of whom to hand a run.
//!
//! A node id is interned once into a [`Slot`] so that per-check state stores a `u32` instead of
//! a `String`; an index is never reused, so a worker that comes back keeps its votes (gobearmon
//! counted a reconnect as a new worker, [BUG] 6).

use std::collections::{HashMap, HashSet};

use crate::model::{CheckId, NodeId};

/// A worker's index in [`Workers`].
pub(super) type Slot = u32;

#[derive(Debug)]
struct Worker {
    node: NodeId,
    /// Where it runs (`[worker] location`); empty when unknown, and then distinct from every
    /// other worker's.
    location: Box<str>,
    live: bool,
    /// Its canaries say it cannot judge: it is handed nothing and never votes, and it does
    /// not count among the live workers.
    impaired: bool,
    /// Checks it holds an assignment for (at most one per check).
    holding: HashSet<CheckId>,
    /// Assignments handed to it so far: the tie-break that spreads runs when loads are equal.
    handed: u64,
}

#[derive(Debug, Default)]
pub(super) struct Workers {
    slots: Vec<Worker>,
    by_node: HashMap<NodeId, Slot>,
    live: usize,
}

impl Workers {
    pub(super) fn live_count(&self) -> usize {
        self.live
    }

    pub(super) fn slot(&self, node: &NodeId) -> Option<Slot> {
        self.by_node.get(node).copied()
    }

    pub(super) fn node(&self, slot: Slot) -> &NodeId {
        &self.slots[slot as usize].node
    }

    pub(super) fn is_live(&self, slot: Slot) -> bool {
        self.slots[slot as usize].live
    }

    pub(super) fn is_impaired(&self, slot: Slot) -> bool {
        self.slots[slot as usize].impaired
    }

    /// The slot of `node`, registering it (not live) the first time.
    pub(super) fn register(&mut self, node: &NodeId) -> Slot {
        if let Some(&slot) = self.by_node.get(node) {
            return slot;
        }
        // One slot per distinct node id ever seen; each holds at least a String and a
        // HashSet (> 64 bytes), so 2^32 of them cannot fit in memory first.
        let slot = Slot::try_from(self.slots.len()).expect("fewer than 2^32 workers");
        self.slots.push(Worker {
            node: node.clone(),
            location: Box::from(""),
            live: false,
            impaired: false,
            holding: HashSet::new(),
            handed: 0,
        });
        self.by_node.insert(node.clone(), slot);
        slot
    }

    /// Marks a worker impaired or not. Returns `None` when nothing changed; else whether the
    /// count of live (usable) workers changed, and the checks it held when it turned impaired
    /// (its holdings are emptied; the caller releases them on the checks' side).
    pub(super) fn set_impaired(&mut self, slot: Slot, on: bool) -> Option<(bool, Vec<CheckId>)> {
        let worker = &mut self.slots[slot as usize];
        if worker.impaired == on {
            return None;
        }
        worker.impaired = on;
        let counted = worker.live;
        let held = if on {
            worker.holding.drain().collect()
        } else {
            Vec::new()
        };
        if counted {
            if on {
                self.live -= 1;
            } else {
                self.live += 1;
            }
        }
        Some((counted, held))
    }

    /// Marks a worker live, registering it the first time. Returns its slot and whether it
    /// was down before.
    /// An impaired worker is live but not counted, until it recovers.
    pub(super) fn up(&mut self, node: &NodeId) -> (Slot, bool) {
        let slot = self.register(node);
        let worker = &mut self.slots[slot as usize];
        let was_down = !worker.live;
        if was_down {
            worker.live = true;
            if !worker.impaired {
                self.live += 1;
            }
        }
        (slot, was_down && !worker.impaired)
    }

    /// Marks a worker down and returns the checks it held (its holdings are emptied; the
    /// caller releases them on the checks' side).
    pub(super) fn down(&mut self, slot: Slot) -> Vec<CheckId> {
        let worker = &mut self.slots[slot as usize];
        if worker.live {
            worker.live = false;
            if !worker.impaired {
                self.live -= 1;
            }
        }
        worker.holding.drain().collect()
    }

    /// Records where a worker runs.
    pub(super) fn set_location(&mut self, slot: Slot, location: &str) {
        let worker = &mut self.slots[slot as usize];
        if *worker.location != *location {
            worker.location = Box::from(location);
        }
    }

    /// Whether two workers are known to run in the same location.
    pub(super) fn same_location(&self, a: Slot, b: Slot) -> bool {
        let (a, b) = (
            &self.slots[a as usize].location,
            &self.slots[b as usize].location,
        );
        !a.is_empty() && a == b
    }

    pub(super) fn hold(&mut self, slot: Slot, check: CheckId) {
        let worker = &mut self.slots[slot as usize];
        worker.holding.insert(check);
        worker.handed += 1;
    }

    pub(super) fn release(&mut self, slot: Slot, check: CheckId) {
        self.slots[slot as usize].holding.remove(&check);
    }

    /// Load order: fewest runs in flight, then fewest handed so far, then the lowest slot
    /// (so ties are broken the same way every time).
    fn load_key(&self, slot: Slot) -> (usize, u64, Slot) {
        let worker = &self.slots[slot as usize];
        (worker.holding.len(), worker.handed, slot)
    }

    fn live_slots(&self) -> impl Iterator<Item = Slot> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, w)| w.live && !w.impaired)
            .map(|(i, _)| i as Slot)
    }

    /// The worker for a regular run: a live worker that has not just failed this check
    /// (`avoid`) when there is one, else any live worker; among those, not the one that ran
    /// it last when another is available; then the least loaded.
    pub(super) fn pick_regular(&self, last: Option<Slot>, avoid: &[Slot]) -> Option<Slot> {
        let fresh = self.live_slots().any(|s| !avoid.contains(&s));
        self.live_slots()
            .filter(|s| !fresh || !avoid.contains(s))
            .min_by_key(|&s| (Some(s) == last, self.load_key(s)))
    }

    /// Up to `n` distinct live workers for which `eligible` holds, least loaded first.
    pub(super) fn pick_many(&self, n: usize, eligible: impl Fn(Slot) -> bool) -> Vec<Slot> {
        let mut picks: Vec<Slot> = self.live_slots().filter(|&s| eligible(s)).collect();
        picks.sort_by_key(|&s| self.load_key(s));
        picks.truncate(n);
        picks
    }

    /// Like [`Workers::pick_many`], but each pick from a location none of `taken` and none of
    /// the other picks share, as long as such workers exist; the rest from anywhere.
    pub(super) fn pick_many_apart(
        &self,
        n: usize,
        taken: &[Slot],
        eligible: impl Fn(Slot) -> bool,
    ) -> Vec<Slot> {
        let mut candidates: Vec<Slot> = self.live_slots().filter(|&s| eligible(s)).collect();
        candidates.sort_by_key(|&s| self.load_key(s));
        let mut picks: Vec<Slot> = Vec::with_capacity(n);
        for &s in &candidates {
            if picks.len() == n {
                return picks;
            }
            let apart = taken
                .iter()
                .chain(picks.iter())
                .all(|&t| !self.same_location(s, t));
            if apart {
                picks.push(s);
            }
        }
        for &s in &candidates {
            if picks.len() == n {
                break;
            }
            if !picks.contains(&s) {
                picks.push(s);
            }
        }
        picks
    }

    /// Whether some live worker is not in `avoid`.
    pub(super) fn any_live_except(&self, avoid: &[Slot]) -> bool {
        self.live_slots().any(|s| !avoid.contains(&s))
    }

    pub(super) fn views(
        &self,
    ) -> impl Iterator<Item = (&NodeId, bool, bool, &HashSet<CheckId>, u64)> {
        self.slots
            .iter()
            .map(|w| (&w.node, w.live, w.impaired, &w.holding, w.handed))
    }
}
