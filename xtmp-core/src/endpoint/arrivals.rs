//! Entries that expire a fixed time after they arrive (hellos being
//! reassembled, stream connections that have not joined a session yet),
//! found by key, counted by origin address and ordered by age, each in
//! O(log n): a turn of the endpoint's driver, and each new hello, cost the
//! same with a thousand half-open handshakes as with none.

use alloc::collections::{BTreeMap, BTreeSet};
use core::net::IpAddr;
use core::ops::RangeBounds;
use core::time::Duration;

use crate::time::Instant;

pub(super) struct Arrivals<K, V> {
    entries: BTreeMap<K, (Instant, IpAddr, V)>,
    by_time: BTreeSet<(Instant, K)>,
    by_origin: BTreeMap<IpAddr, usize>,
}

impl<K: Ord + Copy, V> Arrivals<K, V> {
    pub(super) fn new() -> Self {
        Arrivals { entries: BTreeMap::new(), by_time: BTreeSet::new(), by_origin: BTreeMap::new() }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn contains_key(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    pub(super) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.entries.get_mut(key).map(|(_, _, v)| v)
    }

    /// Adds `key`, arrived at `at` from `origin`, unless it is there
    /// already (it keeps its first arrival).
    pub(super) fn insert(&mut self, key: K, at: Instant, origin: IpAddr, value: V) {
        if self.entries.contains_key(&key) {
            return;
        }
        self.entries.insert(key, (at, origin, value));
        self.by_time.insert((at, key));
        *self.by_origin.entry(origin).or_default() += 1;
    }

    pub(super) fn remove(&mut self, key: &K) -> Option<V> {
        let (at, origin, value) = self.entries.remove(key)?;
        self.by_time.remove(&(at, *key));
        if let Some(n) = self.by_origin.get_mut(&origin) {
            *n -= 1;
            if *n == 0 {
                self.by_origin.remove(&origin);
            }
        }
        Some(value)
    }

    /// Removes every key in `range`.
    pub(super) fn remove_range(&mut self, range: impl RangeBounds<K>) {
        let keys: alloc::vec::Vec<K> = self.entries.range(range).map(|(k, _)| *k).collect();
        for k in keys {
            self.remove(&k);
        }
    }

    /// Entries from `origin`.
    pub(super) fn count_from(&self, origin: IpAddr) -> usize {
        self.by_origin.get(&origin).copied().unwrap_or(0)
    }

    /// The earliest arrival held.
    pub(super) fn earliest(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// The oldest key.
    pub(super) fn oldest(&self) -> Option<K> {
        self.by_time.first().map(|(_, k)| *k)
    }

    /// The oldest key, if it arrived `age` or more before `now`.
    pub(super) fn oldest_due(&self, now: Instant, age: Duration) -> Option<K> {
        self.by_time.first().filter(|(at, _)| at.saturating_add(age) <= now).map(|(_, k)| *k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_by_key_origin_and_age_stay_consistent() {
        let t0 = Instant::ZERO;
        let ms = |n| t0 + Duration::from_millis(n);
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        let mut arr: Arrivals<(u8, u64), &str> = Arrivals::new();
        arr.insert((1, 1), ms(10), a, "a1");
        arr.insert((1, 2), ms(20), a, "a2");
        arr.insert((2, 1), ms(5), b, "b1");
        // Present already: keeps its first arrival and value.
        arr.insert((1, 1), ms(30), a, "again");
        assert_eq!(arr.len(), 3);
        assert_eq!((arr.count_from(a), arr.count_from(b)), (2, 1));
        assert_eq!(arr.earliest(), Some(ms(5)));
        assert_eq!(arr.get_mut(&(1, 1)).copied(), Some("a1"));

        let age = Duration::from_millis(100);
        assert_eq!(arr.oldest(), Some((2, 1)));
        assert_eq!(arr.oldest_due(ms(104), age), None);
        assert_eq!(arr.oldest_due(ms(105), age), Some((2, 1)));
        assert_eq!(arr.remove(&(2, 1)), Some("b1"));
        assert_eq!((arr.count_from(b), arr.earliest()), (0, Some(ms(10))));

        arr.remove_range((1, 0)..=(1, u64::MAX));
        assert_eq!((arr.len(), arr.count_from(a), arr.earliest()), (0, 0, None));
        assert_eq!(arr.remove(&(1, 1)), None);
    }
}
