//! Copies of rows that the streaming endpoints read before every first token, kept for a short
//! while. A change made through this process drops the copy at once (the writer calls
//! [`Recent::forget`] or [`Recent::clear`]); a change through another instance sharing the
//! database is seen within the copy's lifetime.
use std::{
    collections::HashMap,
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

pub struct Recent<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
    keep_for: Duration,
    capacity: usize,
}

impl<K: Eq + Hash, V: Clone> Recent<K, V> {
    pub fn new(keep_for: Duration, capacity: usize) -> Self {
        Self { entries: Mutex::new(HashMap::new()), keep_for, capacity }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().expect("cache lock");
        entries.get(key).filter(|(at, _)| at.elapsed() < self.keep_for).map(|(_, value)| value.clone())
    }

    /// Keeps `value` under `key`. Past the capacity, expired copies go first, then all of them:
    /// the cache only saves reads, so losing it costs one round trip each.
    pub fn put(&self, key: K, value: V) {
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() >= self.capacity {
            entries.retain(|_, (at, _)| at.elapsed() < self.keep_for);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }

    pub fn forget(&self, key: &K) {
        self.entries.lock().expect("cache lock").remove(key);
    }

    pub fn clear(&self) {
        self.entries.lock().expect("cache lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_expire_and_can_be_dropped() {
        let cache = Recent::new(Duration::from_millis(50), 8);
        cache.put(1, "one");
        cache.put(2, "two");
        assert_eq!(cache.get(&1), Some("one"));
        cache.forget(&1);
        assert_eq!(cache.get(&1), None);
        assert_eq!(cache.get(&2), Some("two"));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&2), None, "expired");
        cache.put(3, "three");
        cache.clear();
        assert_eq!(cache.get(&3), None);
    }

    #[test]
    fn a_full_cache_makes_room() {
        let cache = Recent::new(Duration::from_secs(60), 2);
        cache.put(1, 1);
        cache.put(2, 2);
        cache.put(3, 3);
        assert_eq!(cache.get(&3), Some(3));
        assert!(cache.entries.lock().unwrap().len() <= 2);
    }
}
