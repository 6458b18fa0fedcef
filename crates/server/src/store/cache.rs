//! Read-through cache of whole lists, valid for one store generation.
//!
//! Every committed write bumps the store's generation, so a cached list is served
//! only while nothing has changed since it was read (the Kubernetes watch-cache
//! idea, reduced to "any write invalidates"). It is enabled only when this process
//! is the only writer (SQLite); with PostgreSQL another control-plane replica may
//! write, so lists are always read from the database.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Generation(AtomicU64);

impl Generation {
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

pub struct ListCache<T> {
    slot: Mutex<Option<(u64, Arc<Vec<T>>)>>,
}

impl<T> Default for ListCache<T> {
    fn default() -> Self {
        Self {
            slot: Mutex::new(None),
        }
    }
}

impl<T> ListCache<T> {
    /// The cached list if it was read at `generation`.
    pub fn get(&self, generation: u64) -> Option<Arc<Vec<T>>> {
        let slot = self.slot.lock().ok()?;
        match &*slot {
            Some((cached, list)) if *cached == generation => Some(Arc::clone(list)),
            _ => None,
        }
    }

    /// Stores a list read at `generation`, which the caller took *before* reading,
    /// so a write that raced the read leaves the entry already stale.
    pub fn put(&self, generation: u64, list: Arc<Vec<T>>) {
        if let Ok(mut slot) = self.slot.lock() {
            *slot = Some((generation, list));
        }
    }
}

/// Lookups by key (token hashes), each valid for the generation it was read at.
/// Bounded: when full it is emptied rather than grown.
pub struct KeyedCache<T> {
    entries: Mutex<std::collections::HashMap<String, (u64, T)>>,
}

const KEYED_CAPACITY: usize = 10_000;

impl<T> Default for KeyedCache<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(std::collections::HashMap::new()),
        }
    }
}

impl<T: Clone> KeyedCache<T> {
    pub fn get(&self, key: &str, generation: u64) -> Option<T> {
        let entries = self.entries.lock().ok()?;
        match entries.get(key) {
            Some((cached, value)) if *cached == generation => Some(value.clone()),
            _ => None,
        }
    }

    /// Changes a cached value in place (keeping its generation), if present.
    pub fn update(&self, key: &str, change: impl FnOnce(&mut T)) {
        if let Ok(mut entries) = self.entries.lock() {
            if let Some((_, value)) = entries.get_mut(key) {
                change(value);
            }
        }
    }

    pub fn put(&self, key: &str, generation: u64, value: T) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= KEYED_CAPACITY {
                entries.clear();
            }
            entries.insert(key.to_owned(), (generation, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bump_invalidates() {
        let generation = Generation::default();
        let cache = ListCache::default();
        let at = generation.current();
        cache.put(at, Arc::new(vec![1, 2]));
        assert_eq!(
            cache.get(generation.current()).as_deref(),
            Some(&vec![1, 2])
        );
        generation.bump();
        assert!(cache.get(generation.current()).is_none());
    }
}
