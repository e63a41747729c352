//! The memory tier: key → loaded artifact, shared by the threads of one process.
//!
//! A sharded concurrent map (`dashmap`): lookups from many threads rarely contend, and no lock
//! is held while the caller builds or loads an artifact.

use std::fmt;
use std::sync::Arc;

use dashmap::DashMap;

use crate::Key;
use crate::key::KeyHashBuilder;

/// Loaded artifacts by key.
pub struct MemoryTier<V> {
    map: DashMap<Key, Arc<V>, KeyHashBuilder>,
}

impl<V> MemoryTier<V> {
    /// An empty tier.
    pub fn new() -> MemoryTier<V> {
        MemoryTier {
            map: DashMap::with_hasher(KeyHashBuilder::default()),
        }
    }

    /// The artifact stored under `key`, if any.
    pub fn get(&self, key: &Key) -> Option<Arc<V>> {
        self.map.get(key).map(|v| Arc::clone(v.value()))
    }

    /// Stores `value` under `key`, replacing any earlier value.
    pub fn insert(&self, key: Key, value: Arc<V>) {
        self.map.insert(key, value);
    }

    /// Stores `value` under `key` unless a value is already there; returns the stored one, so
    /// that threads racing to build the same artifact all end up sharing the first.
    pub fn get_or_insert(&self, key: Key, value: Arc<V>) -> Arc<V> {
        Arc::clone(self.map.entry(key).or_insert(value).value())
    }

    /// Removes and returns the artifact stored under `key`.
    pub fn remove(&self, key: &Key) -> Option<Arc<V>> {
        self.map.remove(key).map(|(_, v)| v)
    }

    /// The number of stored artifacts.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Removes everything (artifacts still held elsewhere through their `Arc` stay alive).
    pub fn clear(&self) {
        self.map.clear();
    }
}

impl<V> Default for MemoryTier<V> {
    fn default() -> MemoryTier<V> {
        MemoryTier::new()
    }
}

impl<V> fmt::Debug for MemoryTier<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTier")
            .field("len", &self.len())
            .finish()
    }
}
