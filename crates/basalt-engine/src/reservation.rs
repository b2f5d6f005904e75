//! Capacity reservations: decode slots of one text model held back for named
//! holders (provisioned throughput), so that shared (on-demand) traffic cannot
//! take them. The table is shared by whoever grants reservations and by the
//! model's worker, which reads it before every admission; a change applies to
//! the next request admitted.
//!
//! The admission rule itself ([`place`] and [`protected_cells`]) is pure, so it is
//! unit tested here rather than through a loaded model.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::EngineError;

/// Which share of the engine a generation runs in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Lane {
    /// The slots no reservation holds, first come first served.
    #[default]
    Shared,
    /// The slots reserved under this name. When the name holds no reservation (it was
    /// released), the request runs as shared.
    Reserved(Arc<str>),
}

/// Reserved decode slots per holder, for one model.
#[derive(Debug)]
pub struct Reservations {
    slots: usize,
    table: Mutex<BTreeMap<Arc<str>, usize>>,
}

impl Reservations {
    /// A table for a model that decodes `slots` sequences together (clamped as the
    /// scheduler clamps them).
    pub fn new(slots: usize) -> Arc<Self> {
        Arc::new(Self {
            slots: slots.clamp(1, crate::scheduler::MAX_SLOTS),
            table: Mutex::new(BTreeMap::new()),
        })
    }

    /// Slots that may be reserved in all: one always stays shared, so on-demand
    /// traffic is never locked out entirely.
    pub fn reservable(&self) -> usize {
        self.slots - 1
    }

    /// Replaces the whole table (holder → slots). Refused, with nothing changed, when
    /// the total exceeds [`Self::reservable`].
    pub fn replace(&self, holders: BTreeMap<Arc<str>, usize>) -> Result<(), EngineError> {
        let wanted: usize = holders.values().sum();
        if wanted > self.reservable() {
            return Err(EngineError::NoCapacity {
                wanted,
                reservable: self.reservable(),
            });
        }
        *self.lock() = holders.into_iter().filter(|(_, n)| *n > 0).collect();
        Ok(())
    }

    /// Whether `holders` would fit, without changing anything.
    pub fn fits(&self, holders: &BTreeMap<Arc<str>, usize>) -> bool {
        holders.values().sum::<usize>() <= self.reservable()
    }

    pub fn reserved(&self) -> usize {
        self.lock().values().sum()
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<Arc<str>, usize> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Arc<str>, usize>> {
        // The table is replaced whole, so a panicked writer cannot leave it half-written.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where an admitted sequence runs: its holder's reserved slots, or the shared ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pool {
    Shared,
    Own(Arc<str>),
}

/// What is running, per pool: sequences and the KV cells they reserve.
#[derive(Debug, Default)]
pub(crate) struct Occupancy {
    pub shared_sequences: usize,
    pub own: BTreeMap<Arc<str>, (usize, usize)>,
}

impl Occupancy {
    pub fn add(&mut self, pool: &Pool, cells: usize) {
        match pool {
            Pool::Shared => self.shared_sequences += 1,
            Pool::Own(name) => {
                let entry = self.own.entry(Arc::clone(name)).or_default();
                entry.0 += 1;
                entry.1 += cells;
            }
        }
    }

    fn own(&self, name: &str) -> (usize, usize) {
        self.own.get(name).copied().unwrap_or_default()
    }
}

/// The pool a request on `lane` may start in now, if any. A reserved request takes
/// its own slots; when those are busy it may borrow a free shared slot, but only while
/// no shared request is waiting for one.
pub(crate) fn place(
    lane: &Lane,
    table: &BTreeMap<Arc<str>, usize>,
    slots: usize,
    running: &Occupancy,
    shared_waiting: bool,
) -> Option<Pool> {
    let shared_slots = slots.saturating_sub(table.values().sum());
    let shared_free = running.shared_sequences < shared_slots;
    match lane {
        Lane::Reserved(name) if table.contains_key(name) => {
            if running.own(name).0 < table[name] {
                Some(Pool::Own(Arc::clone(name)))
            } else if shared_free && !shared_waiting {
                Some(Pool::Shared)
            } else {
                None
            }
        }
        _ => shared_free.then_some(Pool::Shared),
    }
}

/// KV cells a request in `pool` must leave free: each reservation's unused share
/// (its slots' part of the cache) except the pool's own.
pub(crate) fn protected_cells(
    pool: &Pool,
    table: &BTreeMap<Arc<str>, usize>,
    slots: usize,
    kv_cells: usize,
    running: &Occupancy,
) -> usize {
    let per_slot = kv_cells / slots.max(1);
    table
        .iter()
        .filter(|(name, _)| !matches!(pool, Pool::Own(own) if own == *name))
        .map(|(name, n)| (n * per_slot).saturating_sub(running.own(name).1))
        .sum()
}

/// Whether a request of `need` cells in `pool` may borrow other holders' reserved
/// cells: only when it could never fit beside their reservations and nothing else in
/// its pool runs, so a long request is delayed rather than left waiting forever.
pub(crate) fn may_borrow(
    pool: &Pool,
    need: usize,
    table: &BTreeMap<Arc<str>, usize>,
    slots: usize,
    kv_cells: usize,
    running: &Occupancy,
) -> bool {
    let per_slot = kv_cells / slots.max(1);
    let others: usize = table
        .iter()
        .filter(|(name, _)| !matches!(pool, Pool::Own(own) if own == *name))
        .map(|(_, n)| n * per_slot)
        .sum();
    let alone = match pool {
        Pool::Shared => running.shared_sequences == 0,
        Pool::Own(name) => running.own(name).0 == 0,
    };
    alone && need > kv_cells.saturating_sub(others)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, usize)]) -> BTreeMap<Arc<str>, usize> {
        entries.iter().map(|(n, s)| (Arc::from(*n), *s)).collect()
    }

    fn reserved(name: &str) -> Lane {
        Lane::Reserved(Arc::from(name))
    }

    #[test]
    fn one_slot_always_stays_shared() {
        let r = Reservations::new(8);
        assert_eq!(r.reservable(), 7);
        r.replace(table(&[("a", 3), ("b", 4)]))
            .expect("seven of eight slots fit");
        assert_eq!(r.reserved(), 7);
        let err = r
            .replace(table(&[("a", 4), ("b", 4)]))
            .expect_err("eight of eight slots do not fit");
        assert!(matches!(
            err,
            EngineError::NoCapacity {
                wanted: 8,
                reservable: 7
            }
        ));
        // A refused change leaves the table as it was.
        assert_eq!(r.reserved(), 7);
        assert!(!r.fits(&table(&[("c", 8)])));
        r.replace(BTreeMap::new()).expect("nothing fits");
        assert_eq!(r.reserved(), 0);
    }

    #[test]
    fn shared_traffic_cannot_take_reserved_slots() {
        let t = table(&[("pt", 2)]);
        let mut running = Occupancy::default();
        for _ in 0..6 {
            assert_eq!(
                place(&Lane::Shared, &t, 8, &running, false),
                Some(Pool::Shared)
            );
            running.add(&Pool::Shared, 100);
        }
        // Six shared slots are full; the two reserved ones stay free.
        assert_eq!(place(&Lane::Shared, &t, 8, &running, true), None);
        assert_eq!(
            place(&reserved("pt"), &t, 8, &running, true),
            Some(Pool::Own(Arc::from("pt")))
        );
    }

    #[test]
    fn reserved_overflow_borrows_only_idle_shared_slots() {
        let t = table(&[("pt", 1)]);
        let mut running = Occupancy::default();
        running.add(&Pool::Own(Arc::from("pt")), 100);
        // Its own slot is busy: a free shared slot may be borrowed, unless shared work waits.
        assert_eq!(
            place(&reserved("pt"), &t, 8, &running, false),
            Some(Pool::Shared)
        );
        assert_eq!(place(&reserved("pt"), &t, 8, &running, true), None);
        for _ in 0..7 {
            running.add(&Pool::Shared, 100);
        }
        assert_eq!(place(&reserved("pt"), &t, 8, &running, false), None);
    }

    #[test]
    fn a_released_reservation_runs_as_shared() {
        let t = table(&[]);
        let running = Occupancy::default();
        assert_eq!(
            place(&reserved("gone"), &t, 8, &running, false),
            Some(Pool::Shared)
        );
    }

    #[test]
    fn unused_reserved_cells_are_protected_from_others() {
        let t = table(&[("a", 1), ("b", 2)]);
        let mut running = Occupancy::default();
        // 8192 cells over 8 slots: 1024 per slot, so a holds 1024 and b 2048.
        assert_eq!(protected_cells(&Pool::Shared, &t, 8, 8192, &running), 3072);
        running.add(&Pool::Own(Arc::from("b")), 1500);
        assert_eq!(
            protected_cells(&Pool::Shared, &t, 8, 8192, &running),
            1024 + 548
        );
        // A holder is not protected from itself.
        assert_eq!(
            protected_cells(&Pool::Own(Arc::from("a")), &t, 8, 8192, &running),
            548
        );
        running.add(&Pool::Own(Arc::from("b")), 2000);
        assert_eq!(protected_cells(&Pool::Shared, &t, 8, 8192, &running), 1024);
    }

    #[test]
    fn only_a_lone_oversized_shared_request_borrows_cells() {
        let t = table(&[("a", 2)]);
        let mut running = Occupancy::default();
        // 6144 cells are shared; a 7000-cell request could never fit beside the reservation.
        assert!(may_borrow(&Pool::Shared, 7000, &t, 8, 8192, &running));
        assert!(!may_borrow(&Pool::Shared, 6000, &t, 8, 8192, &running));
        running.add(&Pool::Shared, 10);
        assert!(!may_borrow(&Pool::Shared, 7000, &t, 8, 8192, &running));
    }

    #[test]
    fn only_a_lone_oversized_reserved_request_borrows_others_cells() {
        // b's 6 slots protect 6144 cells; a's request of 4000 could never fit beside them.
        let t = table(&[("a", 1), ("b", 6)]);
        let a = Pool::Own(Arc::from("a"));
        let mut running = Occupancy::default();
        assert!(may_borrow(&a, 4000, &t, 8, 8192, &running));
        assert!(!may_borrow(&a, 2000, &t, 8, 8192, &running));
        running.add(&a, 10);
        assert!(!may_borrow(&a, 4000, &t, 8, 8192, &running));
    }
}
