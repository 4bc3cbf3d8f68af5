//! The pair pool: which pairs are held, reserved or free, and an O(1),
//! uniformly random pick among the free ones.
//!
//! go-selinux (`uniqMcs`) and libvirt (`MCSFind`) draw random pairs until they
//! find one not in use. That costs `1/(1-occupancy)` draws on average and
//! never ends once every pair is taken. Here the free pairs are kept densely
//! in the first `len` slots of a permutation array, with the inverse
//! permutation beside it: picking is one random slot and one swap, at any
//! occupancy, and an empty pool is a plain error.
//!
//! Invariant, checked by the property tests: a pair is free exactly when it
//! is neither held nor covered by a reservation, so
//! `held + free + reserved == total` where `reserved` counts reserved pairs
//! that are not held.

use std::collections::HashSet;

use rand::Rng;

use crate::level::{CategoryRange, PairIndex, MAX_CATEGORY};
use crate::reservation::Reservation;

/// The set of free pair indices, with O(1) insert, remove and random pick.
#[derive(Debug, Clone)]
struct FreeSet {
    /// A permutation of all pair indices; `slots[..len]` are the free ones.
    slots: Vec<u32>,
    /// Inverse of `slots`: `pos[slots[k]] == k`.
    pos: Vec<u32>,
    len: u32,
}

impl FreeSet {
    fn full(pairs: u32) -> Self {
        Self {
            slots: (0..pairs).collect(),
            pos: (0..pairs).collect(),
            len: pairs,
        }
    }

    fn contains(&self, index: u32) -> bool {
        self.pos[index as usize] < self.len
    }

    fn swap(&mut self, a: u32, b: u32) {
        let (ia, ib) = (self.slots[a as usize], self.slots[b as usize]);
        self.slots.swap(a as usize, b as usize);
        self.pos[ia as usize] = b;
        self.pos[ib as usize] = a;
    }

    /// Moves `index` out of the free prefix; false if it was not free.
    fn remove(&mut self, index: u32) -> bool {
        let at = self.pos[index as usize];
        if at >= self.len {
            return false;
        }
        self.len -= 1;
        self.swap(at, self.len);
        true
    }

    /// Moves `index` into the free prefix; false if it was already free.
    fn insert(&mut self, index: u32) -> bool {
        let at = self.pos[index as usize];
        if at < self.len {
            return false;
        }
        self.swap(at, self.len);
        self.len += 1;
        true
    }

    /// Removes and returns a uniformly random free index.
    fn pick(&mut self, rng: &mut impl Rng) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let index = self.slots[rng.random_range(0..self.len) as usize];
        self.remove(index);
        Some(index)
    }
}

/// Why a specific pair could not be claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimError {
    /// Somebody holds it.
    Held,
    /// An operator reservation covers it.
    Reserved,
}

/// Occupancy of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Pairs in the range.
    pub total: u64,
    /// Pairs held by a container or group.
    pub held: u64,
    /// Pairs that can be handed out.
    pub free: u64,
    /// Pairs covered by a reservation and not held.
    pub reserved: u64,
}

/// The state of every pair of a [`CategoryRange`].
#[derive(Debug, Clone)]
pub struct PairPool {
    range: CategoryRange,
    free: FreeSet,
    held: Vec<u64>,
    held_count: u32,
    /// Whether a category reservation covers each category (by number).
    category_reservations: Vec<bool>,
    pair_reservations: HashSet<u32>,
}

impl PairPool {
    /// A pool where every pair of `range` is free.
    pub fn new(range: CategoryRange) -> Self {
        let pairs = range.pairs();
        Self {
            range,
            free: FreeSet::full(pairs),
            held: vec![0; (pairs as usize).div_ceil(64)],
            held_count: 0,
            category_reservations: vec![false; usize::from(MAX_CATEGORY) + 1],
            pair_reservations: HashSet::new(),
        }
    }

    /// The range this pool covers.
    pub fn range(&self) -> CategoryRange {
        self.range
    }

    /// Whether the pair is held.
    pub fn is_held(&self, index: PairIndex) -> bool {
        self.held[index.0 as usize / 64] & (1 << (index.0 % 64)) != 0
    }

    fn set_held(&mut self, index: PairIndex, held: bool) {
        let word = &mut self.held[index.0 as usize / 64];
        let bit = 1u64 << (index.0 % 64);
        if held && *word & bit == 0 {
            *word |= bit;
            self.held_count += 1;
        } else if !held && *word & bit != 0 {
            *word &= !bit;
            self.held_count -= 1;
        }
    }

    /// Whether a reservation covers the pair.
    pub fn is_reserved(&self, index: PairIndex) -> bool {
        if self.pair_reservations.contains(&index.0) {
            return true;
        }
        let level = self.range.level_at(index);
        self.category_reservations[usize::from(level.low().number())]
            || self.category_reservations[usize::from(level.high().number())]
    }

    /// Whether the pair can be handed out now.
    pub fn is_free(&self, index: PairIndex) -> bool {
        self.free.contains(index.0)
    }

    /// Puts the pair where the invariant says it belongs: free exactly when
    /// neither held nor reserved. Every state change ends here, so the free
    /// set cannot drift from the held bits and the reservations.
    fn settle(&mut self, index: PairIndex) {
        if self.is_held(index) || self.is_reserved(index) {
            self.free.remove(index.0);
        } else {
            self.free.insert(index.0);
        }
    }

    /// Takes a uniformly random free pair and marks it held; `None` when no
    /// pair is free. O(1) whatever the occupancy.
    pub fn pick(&mut self, rng: &mut impl Rng) -> Option<PairIndex> {
        let index = PairIndex(self.free.pick(rng)?);
        self.set_held(index, true);
        Some(index)
    }

    /// Marks a specific pair held, if it is free.
    pub fn claim(&mut self, index: PairIndex) -> Result<(), ClaimError> {
        if self.is_held(index) {
            return Err(ClaimError::Held);
        }
        if self.is_reserved(index) {
            return Err(ClaimError::Reserved);
        }
        self.set_held(index, true);
        self.settle(index);
        Ok(())
    }

    /// Marks a pair held whatever its reservations: for pairs the store says
    /// are held (a pair reserved after it was handed out stays with its
    /// holder). Returns false if it was already held.
    pub fn mark_held(&mut self, index: PairIndex) -> bool {
        let was_held = self.is_held(index);
        self.set_held(index, true);
        self.settle(index);
        !was_held
    }

    /// Clears the held mark. Returns true if the pair became free (it stays
    /// out of the free set while a reservation covers it).
    pub fn release(&mut self, index: PairIndex) -> bool {
        self.set_held(index, false);
        self.settle(index);
        self.is_free(index)
    }

    /// Adds a reservation and takes the pairs it covers out of the free set.
    /// Returns how many pairs of the range it covers and how many of those
    /// are held. The caller keeps reservations unique.
    pub fn reserve(&mut self, reservation: Reservation) -> (u64, u64) {
        match reservation {
            Reservation::Category(c) => self.category_reservations[usize::from(c.number())] = true,
            Reservation::Pair(level) => {
                if let Some(index) = self.range.index_of(level) {
                    self.pair_reservations.insert(index.0);
                }
            }
        }
        let covered = reservation.covered(self.range);
        let mut held = 0;
        for &index in &covered {
            self.settle(index);
            held += u64::from(self.is_held(index));
        }
        (covered.len() as u64, held)
    }

    /// Removes a reservation; returns how many pairs became free.
    pub fn unreserve(&mut self, reservation: Reservation) -> u64 {
        match reservation {
            Reservation::Category(c) => self.category_reservations[usize::from(c.number())] = false,
            Reservation::Pair(level) => {
                if let Some(index) = self.range.index_of(level) {
                    self.pair_reservations.remove(&index.0);
                }
            }
        }
        let mut freed = 0;
        for index in reservation.covered(self.range) {
            let was_free = self.is_free(index);
            self.settle(index);
            freed += u64::from(!was_free && self.is_free(index));
        }
        freed
    }

    /// Current occupancy.
    pub fn stats(&self) -> PoolStats {
        let total = u64::from(self.range.pairs());
        let held = u64::from(self.held_count);
        let free = u64::from(self.free.len);
        PoolStats {
            total,
            held,
            free,
            reserved: total - held - free,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::level::{Category, Level};

    fn range(s: &str) -> CategoryRange {
        s.parse().unwrap()
    }

    #[test]
    fn picks_every_pair_once_then_reports_exhaustion() {
        let mut pool = PairPool::new(range("c0.c9"));
        let mut rng = StdRng::seed_from_u64(7);
        let picked: BTreeSet<u32> = (0..45).map(|_| pool.pick(&mut rng).unwrap().0).collect();
        assert_eq!(picked.len(), 45);
        assert_eq!(pool.pick(&mut rng), None);
        assert_eq!(
            pool.stats(),
            PoolStats {
                total: 45,
                held: 45,
                free: 0,
                reserved: 0
            }
        );
    }

    #[test]
    fn picks_are_spread_over_all_free_pairs() {
        // 45 pairs, 45,000 picks with immediate release: each pair should be
        // picked close to 1,000 times. A chi-square bound with 44 degrees of
        // freedom (p = 1e-6 is about 103) catches a biased pick.
        let mut pool = PairPool::new(range("c0.c9"));
        let mut rng = StdRng::seed_from_u64(42);
        let mut counts = [0u32; 45];
        for _ in 0..45_000 {
            let p = pool.pick(&mut rng).unwrap();
            counts[p.0 as usize] += 1;
            pool.release(p);
        }
        let chi2: f64 = counts
            .iter()
            .map(|&c| (f64::from(c) - 1000.0).powi(2) / 1000.0)
            .sum();
        assert!(chi2 < 103.0, "chi-square {chi2} too high: {counts:?}");
    }

    #[test]
    fn reserved_pairs_are_never_picked_and_held_ones_stay_held() {
        let r = range("c0.c4");
        let mut pool = PairPool::new(r);
        let held = r.index_of("s0:c0,c1".parse().unwrap()).unwrap();
        pool.claim(held).unwrap();
        let (covered, covered_held) =
            pool.reserve(Reservation::Category(Category::new(0).unwrap()));
        assert_eq!((covered, covered_held), (4, 1));
        assert!(pool.is_held(held));
        // Releasing a held pair under a reservation does not free it.
        assert!(!pool.release(held));
        let mut rng = StdRng::seed_from_u64(1);
        while let Some(p) = pool.pick(&mut rng) {
            assert!(!r.level_at(p).contains(Category::new(0).unwrap()));
        }
        assert_eq!(pool.stats().reserved, 4);
        assert_eq!(pool.claim(held), Err(ClaimError::Reserved));
        assert_eq!(
            pool.unreserve(Reservation::Category(Category::new(0).unwrap())),
            4
        );
    }

    #[test]
    fn overlapping_reservations_keep_a_pair_out_until_both_go() {
        let r = range("c0.c4");
        let mut pool = PairPool::new(r);
        let lvl: Level = "s0:c1,c2".parse().unwrap();
        pool.reserve(Reservation::Pair(lvl));
        pool.reserve(Reservation::Category(Category::new(1).unwrap()));
        // c1 covers 4 pairs; (c1,c2) is still reserved by the pair reservation.
        assert_eq!(
            pool.unreserve(Reservation::Category(Category::new(1).unwrap())),
            3
        );
        assert!(!pool.is_free(r.index_of(lvl).unwrap()));
        assert_eq!(pool.unreserve(Reservation::Pair(lvl)), 1);
        assert_eq!(pool.stats().free, 10);
    }

    /// One step of the property test.
    #[derive(Debug, Clone)]
    enum Op {
        Pick,
        Claim(u32),
        Release(u32),
        MarkHeld(u32),
        ReserveCategory(u16),
        UnreserveCategory(u16),
        ReservePair(u32),
        UnreservePair(u32),
    }

    fn op(pairs: u32, categories: u16) -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Pick),
            2 => (0..pairs).prop_map(Op::Claim),
            3 => (0..pairs).prop_map(Op::Release),
            1 => (0..pairs).prop_map(Op::MarkHeld),
            1 => (0..categories).prop_map(Op::ReserveCategory),
            1 => (0..categories).prop_map(Op::UnreserveCategory),
            1 => (0..pairs).prop_map(Op::ReservePair),
            1 => (0..pairs).prop_map(Op::UnreservePair),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any sequence of operations keeps the pool equal to a naive model:
        /// a pair is free iff neither held nor reserved; picks return only
        /// free pairs; counts add up to the range size.
        #[test]
        fn pool_matches_a_naive_model(seed: u64, ops in proptest::collection::vec(op(28, 8), 1..300)) {
            let r = range("c10.c17"); // 8 categories, 28 pairs
            let mut pool = PairPool::new(r);
            let mut rng = StdRng::seed_from_u64(seed);
            let mut held = BTreeSet::new();
            let mut cats = BTreeSet::new();
            let mut pairs = BTreeSet::new();
            let reserved = |cats: &BTreeSet<u16>, pairs: &BTreeSet<u32>, i: u32| {
                let l = r.level_at(PairIndex(i));
                pairs.contains(&i) || cats.contains(&l.low().number()) || cats.contains(&l.high().number())
            };
            for op in ops {
                match op {
                    Op::Pick => match pool.pick(&mut rng) {
                        Some(p) => {
                            prop_assert!(!held.contains(&p.0), "picked a held pair");
                            prop_assert!(!reserved(&cats, &pairs, p.0), "picked a reserved pair");
                            held.insert(p.0);
                        }
                        None => prop_assert!((0..28).all(|i| held.contains(&i) || reserved(&cats, &pairs, i))),
                    },
                    Op::Claim(i) => {
                        let expect = if held.contains(&i) { Err(ClaimError::Held) }
                            else if reserved(&cats, &pairs, i) { Err(ClaimError::Reserved) }
                            else { Ok(()) };
                        prop_assert_eq!(pool.claim(PairIndex(i)), expect);
                        if expect.is_ok() { held.insert(i); }
                    }
                    Op::Release(i) => { pool.release(PairIndex(i)); held.remove(&i); }
                    Op::MarkHeld(i) => { pool.mark_held(PairIndex(i)); held.insert(i); }
                    Op::ReserveCategory(c) => {
                        let cat = Category::new(10 + c).unwrap();
                        if cats.insert(cat.number()) { pool.reserve(Reservation::Category(cat)); }
                    }
                    Op::UnreserveCategory(c) => {
                        let cat = Category::new(10 + c).unwrap();
                        if cats.remove(&cat.number()) { pool.unreserve(Reservation::Category(cat)); }
                    }
                    Op::ReservePair(i) => {
                        if pairs.insert(i) { pool.reserve(Reservation::Pair(r.level_at(PairIndex(i)))); }
                    }
                    Op::UnreservePair(i) => {
                        if pairs.remove(&i) { pool.unreserve(Reservation::Pair(r.level_at(PairIndex(i)))); }
                    }
                }
                let s = pool.stats();
                prop_assert_eq!(s.held + s.free + s.reserved, s.total);
                prop_assert_eq!(s.held, held.len() as u64);
                for i in 0..28 {
                    let free = !held.contains(&i) && !reserved(&cats, &pairs, i);
                    prop_assert_eq!(pool.is_free(PairIndex(i)), free, "pair {}", i);
                    prop_assert_eq!(pool.is_held(PairIndex(i)), held.contains(&i));
                }
            }
        }
    }
}
