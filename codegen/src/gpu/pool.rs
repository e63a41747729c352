//! A caching pool of device allocations in size classes, shared by the CUDA and OpenCL
//! runtimes (generic over the allocation type, so it is tested on the host with a fake
//! allocator).
//!
//! # Size classes
//!
//! A request of `b` bytes takes an allocation of [`class_of`]`(b)` bytes: up to 1 MiB
//! ([`SMALL_LIMIT`]), `b` rounded up to a multiple of 512 bytes ([`SMALL_STEP`]; at most
//! 511 bytes wasted); above, `b` rounded up to the next step `2^k * (1 + j/8)` (`2^k <= b`,
//! `j` in `0..8`), so at most `2^k / 8 - 1` bytes, under 12.5 % of the request, are wasted.
//! A training step whose buffers change size slightly (the last, shorter batch) thus reuses
//! the previous steps' memory. [`class_of`] of a class is the class itself.
//!
//! # Reuse in stream order
//!
//! An allocation given back ([`Pool::give_back`]) is handed to the next [`Pool::alloc`] of
//! its class at once, even if work that uses it is still queued. This is safe only because
//! each backend enqueues everything (copies, fills, launches, GEMMs) on **one in-order
//! stream or queue**: whatever the new owner enqueues runs after everything the old owner
//! enqueued, so it never overwrites contents still to be read, and never reads before the
//! old owner's writes are done (it must write before it reads anyway). A backend with
//! several streams would have to record an event per allocation instead.
//!
//! # Memory held
//!
//! The pool holds at most `cap` bytes for reuse ([`Pool::set_cap`]): an allocation given back
//! beyond it first releases the least recently given back allocations (of any class) until
//! it fits, and one larger than the cap is released at once. When a fresh allocation fails,
//! the pool releases everything it holds and tries once more ([`Pool::alloc`]);
//! [`Pool::trim`] releases everything on request. Allocations still in use are never touched.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Requests up to this many bytes are rounded up to a multiple of [`SMALL_STEP`].
pub const SMALL_LIMIT: usize = 1 << 20;
/// The granule of the small size classes, in bytes.
pub const SMALL_STEP: usize = 512;

/// The size class (allocation size) of a request of `bytes` bytes (at least one
/// [`SMALL_STEP`]), or `None` when it overflows `usize`.
pub fn class_of(bytes: usize) -> Option<usize> {
    let b = bytes.max(1);
    if b <= SMALL_LIMIT {
        return b.checked_next_multiple_of(SMALL_STEP);
    }
    // 2^k <= b < 2^(k+1) with k >= 20, so the step 2^(k-3) is at least 128 KiB.
    let k = usize::BITS - 1 - b.leading_zeros();
    b.checked_next_multiple_of(1 << (k - 3))
}

/// The pool's counters (read without the lock; each is exact, a set of them read at once may
/// be mid-update).
#[derive(Default)]
struct Counters {
    held: AtomicUsize,
    cap: AtomicUsize,
    peak_held: AtomicUsize,
    hits: AtomicU64,
    misses: AtomicU64,
    released: AtomicU64,
    retries: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> PoolStats {
        PoolStats {
            held: self.held.load(Ordering::Relaxed),
            peak_held: self.peak_held.load(Ordering::Relaxed),
            cap: self.cap.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            released: self.released.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of a pool's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes held for reuse now.
    pub held: usize,
    /// The most bytes held for reuse at once.
    pub peak_held: usize,
    /// The cap on bytes held.
    pub cap: usize,
    /// Allocations served from the pool.
    pub hits: u64,
    /// Allocations that needed a fresh allocation.
    pub misses: u64,
    /// Allocations the pool released (over the cap, trimmed, or on an allocation failure).
    pub released: u64,
    /// Fresh allocations that failed and were retried after trimming.
    pub retries: u64,
}

impl fmt::Display for PoolStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} hits, {} misses, {} released, {} retried after out-of-memory; {:.1} MiB held \
             (peak {:.1} MiB, cap {:.0} MiB)",
            self.hits,
            self.misses,
            self.released,
            self.retries,
            self.held as f64 / 1048576.0,
            self.peak_held as f64 / 1048576.0,
            self.cap as f64 / 1048576.0,
        )
    }
}

struct State<M> {
    /// Per class, the allocations given back, oldest first, each with its give-back number.
    free: HashMap<usize, VecDeque<(u64, M)>>,
    /// The next give-back number.
    seq: u64,
    cap: usize,
}

/// A pool of allocations of type `M` (see the module documentation): `release` frees
/// allocations the pool no longer holds (called without the pool's lock).
pub struct Pool<M> {
    state: Mutex<State<M>>,
    counters: Arc<Counters>,
    release: Box<dyn Fn(Vec<M>) + Send + Sync>,
}

impl<M> fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pool({})", self.stats())
    }
}

impl<M> Pool<M> {
    /// An empty pool holding at most `cap` bytes for reuse; `release` frees allocations.
    pub fn new(cap: usize, release: impl Fn(Vec<M>) + Send + Sync + 'static) -> Pool<M> {
        Pool {
            state: Mutex::new(State {
                free: HashMap::new(),
                seq: 0,
                cap,
            }),
            counters: Arc::new(Counters {
                cap: AtomicUsize::new(cap),
                ..Counters::default()
            }),
            release: Box::new(release),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<M>> {
        // The state stays consistent between statements, so a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release(&self, ms: Vec<M>) {
        if !ms.is_empty() {
            self.counters
                .released
                .fetch_add(ms.len() as u64, Ordering::Relaxed);
            (self.release)(ms);
        }
    }

    /// An allocation of `class` bytes (a value of [`class_of`]): one given back earlier (the
    /// most recently given back of that class), else `fresh(class)`; when that fails, the pool
    /// releases everything it holds and, if it held anything, calls `fresh` once more.
    pub fn alloc<E>(&self, class: usize, fresh: impl FnMut(usize) -> Result<M, E>) -> Result<M, E> {
        self.alloc_retrying_if(class, fresh, |_| true)
    }

    /// [`alloc`](Self::alloc), retrying only after a failure that `out_of_memory` accepts (any
    /// other error is returned at once, and the pool keeps what it holds).
    pub fn alloc_retrying_if<E>(
        &self,
        class: usize,
        mut fresh: impl FnMut(usize) -> Result<M, E>,
        out_of_memory: impl Fn(&E) -> bool,
    ) -> Result<M, E> {
        debug_assert_eq!(class_of(class), Some(class), "not a size class");
        {
            let mut st = self.lock();
            if let Some(q) = st.free.get_mut(&class)
                && let Some((_, m)) = q.pop_back()
            {
                if q.is_empty() {
                    st.free.remove(&class);
                }
                self.counters.held.fetch_sub(class, Ordering::Relaxed);
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(m);
            }
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        fresh(class).or_else(|e| {
            if !out_of_memory(&e) || self.trim() == 0 {
                return Err(e);
            }
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            fresh(class)
        })
    }

    /// Takes back an allocation of `class` bytes for reuse (see the module documentation for
    /// when that is safe), releasing the least recently given back ones beyond the cap.
    pub fn give_back(&self, class: usize, m: M) {
        let mut out = Vec::new();
        {
            let mut st = self.lock();
            if class > st.cap {
                out.push(m);
            } else {
                st.seq += 1;
                let seq = st.seq;
                st.free.entry(class).or_default().push_back((seq, m));
                self.counters.held.fetch_add(class, Ordering::Relaxed);
                let cap = st.cap;
                Self::evict_to(&mut st, &self.counters, cap, &mut out);
                let held = self.counters.held.load(Ordering::Relaxed);
                self.counters.peak_held.fetch_max(held, Ordering::Relaxed);
            }
        }
        self.release(out);
    }

    /// Releases the least recently given back allocations until at most `cap` bytes are held.
    fn evict_to(st: &mut State<M>, counters: &Counters, cap: usize, out: &mut Vec<M>) {
        while counters.held.load(Ordering::Relaxed) > cap {
            let oldest = st
                .free
                .iter()
                .filter_map(|(&c, q)| q.front().map(|(s, _)| (*s, c)))
                .min();
            let Some((_, class)) = oldest else { break };
            let Some(q) = st.free.get_mut(&class) else {
                break;
            };
            if let Some((_, m)) = q.pop_front() {
                out.push(m);
                counters.held.fetch_sub(class, Ordering::Relaxed);
            }
            if q.is_empty() {
                st.free.remove(&class);
            }
        }
    }

    /// Sets the cap on bytes held for reuse, releasing the least recently given back
    /// allocations beyond it.
    pub fn set_cap(&self, cap: usize) {
        let mut out = Vec::new();
        {
            let mut st = self.lock();
            st.cap = cap;
            self.counters.cap.store(cap, Ordering::Relaxed);
            Self::evict_to(&mut st, &self.counters, cap, &mut out);
        }
        self.release(out);
    }

    /// Releases every allocation held for reuse; returns the bytes released.
    pub fn trim(&self) -> usize {
        let drained: Vec<(usize, VecDeque<(u64, M)>)> = self.lock().free.drain().collect();
        let bytes = drained.iter().map(|(c, q)| c * q.len()).sum();
        self.counters.held.fetch_sub(bytes, Ordering::Relaxed);
        self.release(
            drained
                .into_iter()
                .flat_map(|(_, q)| q.into_iter().map(|(_, m)| m))
                .collect(),
        );
        bytes
    }

    /// Bytes held for reuse.
    pub fn held(&self) -> usize {
        self.counters.held.load(Ordering::Relaxed)
    }

    /// The counters.
    pub fn stats(&self) -> PoolStats {
        self.counters.snapshot()
    }

    /// Prints this pool's counters, as `metajit: {name} buffer pool: ...`, on standard error
    /// when the process exits (`METAJIT_DEBUG` of 1 or more; the backends call this from
    /// `set_debug`). Registering a pool twice prints it once.
    pub fn print_stats_at_exit(&self, name: &'static str) {
        let mut reg = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
        if reg.iter().any(|(_, c)| Arc::ptr_eq(c, &self.counters)) {
            return;
        }
        reg.push((name, self.counters.clone()));
        if reg.len() == 1 {
            register_at_exit();
        }
    }
}

impl<M> Drop for Pool<M> {
    fn drop(&mut self) {
        self.trim();
    }
}

/// The pools whose counters are printed at exit.
type Registered = Vec<(&'static str, Arc<Counters>)>;
static REGISTERED: Mutex<Registered> = Mutex::new(Vec::new());

fn register_at_exit() {
    unsafe extern "C" {
        /// C's `atexit` (every platform Rust's std supports links the C runtime).
        fn atexit(f: extern "C" fn()) -> std::ffi::c_int;
    }
    extern "C" fn print() {
        use std::io::Write;
        // try_lock: never block (or panic) while the process exits.
        let Ok(reg) = REGISTERED.try_lock() else {
            return;
        };
        for (name, c) in reg.iter() {
            let _ = writeln!(
                std::io::stderr(),
                "metajit: {name} buffer pool: {}",
                c.snapshot()
            );
        }
    }
    // SAFETY: `atexit` only records the function pointer; `print` is an `extern "C"` fn that
    // lives as long as the program, cannot panic (the lock is only tried, write errors are
    // ignored) and reads a static that is never destroyed.
    unsafe {
        atexit(print);
    }
}

/// An allocation taken from a [`Pool`], given back to it when dropped.
pub struct Lease<M> {
    m: ManuallyDrop<M>,
    class: usize,
    pool: Arc<Pool<M>>,
}

impl<M> Lease<M> {
    /// Takes an allocation of `class` bytes from `pool` ([`Pool::alloc`]).
    pub fn alloc<E>(
        pool: &Arc<Pool<M>>,
        class: usize,
        fresh: impl FnMut(usize) -> Result<M, E>,
    ) -> Result<Lease<M>, E> {
        let m = pool.alloc(class, fresh)?;
        Ok(Lease {
            m: ManuallyDrop::new(m),
            class,
            pool: pool.clone(),
        })
    }

    /// The allocation's size in bytes (its size class).
    pub fn class(&self) -> usize {
        self.class
    }
}

impl<M> Deref for Lease<M> {
    type Target = M;
    fn deref(&self) -> &M {
        &self.m
    }
}

impl<M> DerefMut for Lease<M> {
    fn deref_mut(&mut self) -> &mut M {
        &mut self.m
    }
}

impl<M> Drop for Lease<M> {
    fn drop(&mut self) {
        // SAFETY: `m` is taken once, here, and never used again.
        let m = unsafe { ManuallyDrop::take(&mut self.m) };
        self.pool.give_back(self.class, m);
    }
}

impl<M: fmt::Debug> fmt::Debug for Lease<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lease({} bytes, {:?})", self.class, *self.m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// A fake device: numbered allocations, a budget of bytes, and the frees seen.
    #[derive(Default)]
    struct Fake {
        next: u64,
        live: HashMap<u64, usize>,
        allocs: u64,
        frees: u64,
        budget: Option<usize>,
    }

    type Dev = Arc<Mutex<Fake>>;

    #[derive(Debug)]
    struct Mem {
        id: u64,
        bytes: usize,
    }

    fn pool(cap: usize) -> (Arc<Pool<Mem>>, Dev) {
        let dev: Dev = Arc::default();
        let d = dev.clone();
        let p = Pool::new(cap, move |ms: Vec<Mem>| {
            let mut f = d.lock().unwrap();
            for m in ms {
                assert_eq!(
                    f.live.remove(&m.id),
                    Some(m.bytes),
                    "double or foreign free"
                );
                f.frees += 1;
            }
        });
        (Arc::new(p), dev)
    }

    fn fresh(dev: &Dev) -> impl FnMut(usize) -> Result<Mem, String> + '_ {
        move |bytes| {
            let mut f = dev.lock().unwrap();
            let used: usize = f.live.values().sum();
            if f.budget.is_some_and(|b| used + bytes > b) {
                return Err(format!("out of memory ({used} + {bytes})"));
            }
            f.next += 1;
            let id = f.next;
            f.live.insert(id, bytes);
            f.allocs += 1;
            Ok(Mem { id, bytes })
        }
    }

    fn lease(p: &Arc<Pool<Mem>>, dev: &Dev, bytes: usize) -> Result<Lease<Mem>, String> {
        Lease::alloc(p, class_of(bytes).unwrap(), fresh(dev))
    }

    #[test]
    fn classes() {
        assert_eq!(class_of(0), Some(512));
        assert_eq!(class_of(1), Some(512));
        assert_eq!(class_of(512), Some(512));
        assert_eq!(class_of(513), Some(1024));
        assert_eq!(class_of(1 << 20), Some(1 << 20));
        assert_eq!(class_of((1 << 20) + 1), Some((1 << 20) + (1 << 17)));
        assert_eq!(class_of(3 << 20), Some(3 << 20));
        assert_eq!(class_of((3 << 20) + 1), Some((3 << 20) + (1 << 18)));
        assert_eq!(class_of(usize::MAX), None);
        let mut classes = HashSet::new();
        for i in 0..20_000usize {
            // Sizes spread from bytes to gigabytes.
            let b = (i * i * 97 + i * 13) % (1 << 31) + i;
            let c = class_of(b).unwrap();
            assert!(c >= b && c.is_multiple_of(8), "{b} -> {c}");
            assert_eq!(class_of(c), Some(c), "{b} -> {c} is not a class");
            if b <= SMALL_LIMIT {
                assert!(c - b.max(1) < SMALL_STEP, "{b} -> {c}");
            } else {
                assert!((c - b) * 8 < b, "{b} -> {c} wastes 1/8 or more");
            }
            if b > SMALL_LIMIT {
                classes.insert(c);
            }
        }
        // Eight classes per octave above 1 MiB: 11 octaves to 2 GiB.
        assert!(classes.len() <= 8 * 11 + 1, "{}", classes.len());
    }

    #[test]
    fn reuse_within_a_class_and_not_across() {
        let (p, dev) = pool(1 << 30);
        let a = lease(&p, &dev, 1000).unwrap();
        let id = a.id;
        assert_eq!(a.class(), 1024);
        drop(a);
        assert_eq!(p.held(), 1024);
        // 1000 and 1010 bytes share a class: the same allocation comes back.
        let b = lease(&p, &dev, 1010).unwrap();
        assert_eq!(b.id, id);
        assert_eq!(p.held(), 0);
        // Another class allocates afresh.
        let c = lease(&p, &dev, 5000).unwrap();
        assert_ne!(c.id, id);
        let s = p.stats();
        assert_eq!((s.hits, s.misses), (1, 2));
        drop((b, c));
        assert_eq!(dev.lock().unwrap().allocs, 2);
        // The most recently given back of a class is reused first.
        let x = lease(&p, &dev, 100).unwrap();
        let y = lease(&p, &dev, 100).unwrap();
        let yid = y.id;
        drop(x);
        drop(y);
        assert_eq!(lease(&p, &dev, 100).unwrap().id, yid);
    }

    #[test]
    fn cap_releases_the_least_recently_given_back() {
        let (p, dev) = pool(4096);
        let ls: Vec<_> = (0..6).map(|_| lease(&p, &dev, 1024).unwrap()).collect();
        let ids: Vec<u64> = ls.iter().map(|l| l.id).collect();
        drop(ls); // given back in order: ids[0] first
        assert_eq!(p.held(), 4096);
        let live: HashSet<u64> = dev.lock().unwrap().live.keys().copied().collect();
        assert_eq!(live, ids[2..].iter().copied().collect());
        // One larger than the cap is released at once, without evicting the others.
        drop(lease(&p, &dev, 8192).unwrap());
        assert_eq!(p.held(), 4096);
        assert_eq!(dev.lock().unwrap().live.len(), 4);
        // Lowering the cap evicts the oldest.
        p.set_cap(2048);
        let live: HashSet<u64> = dev.lock().unwrap().live.keys().copied().collect();
        assert_eq!(live, ids[4..].iter().copied().collect());
        assert!(p.stats().peak_held <= 4096);
        assert_eq!(p.trim(), 2048);
        assert_eq!(p.held(), 0);
        assert!(dev.lock().unwrap().live.is_empty());
    }

    #[test]
    fn out_of_memory_trims_and_retries_once() {
        let (p, dev) = pool(1 << 30);
        dev.lock().unwrap().budget = Some(8192);
        let a = lease(&p, &dev, 4096).unwrap();
        let b = lease(&p, &dev, 4096).unwrap();
        drop((a, b));
        assert_eq!(p.held(), 8192);
        // A new class does not fit next to the held ones: they are released and it retries.
        let c = lease(&p, &dev, 6000).unwrap();
        assert_eq!(p.stats().retries, 1);
        assert_eq!(p.held(), 0);
        // With nothing held, a failure is returned without a retry.
        let e = lease(&p, &dev, 4096).unwrap_err();
        assert!(e.contains("out of memory"), "{e}");
        assert_eq!(p.stats().retries, 1);
        drop(c);
        // Held, but still too little: the retry fails too.
        let e = lease(&p, &dev, 9000).unwrap_err();
        assert!(e.contains("out of memory"), "{e}");
        assert_eq!(p.stats().retries, 2);
    }

    /// An error that is not out-of-memory is returned at once: the pool keeps what it holds
    /// and `fresh` is not called again.
    #[test]
    fn other_errors_neither_trim_nor_retry() {
        let (p, dev) = pool(1 << 30);
        drop(lease(&p, &dev, 4096).unwrap());
        assert_eq!(p.held(), 4096);
        let mut calls = 0;
        let e = p
            .alloc_retrying_if(
                class_of(6000).unwrap(),
                |_| -> Result<Mem, String> {
                    calls += 1;
                    Err("launch failed earlier".into())
                },
                |e| e.contains("out of memory"),
            )
            .unwrap_err();
        assert_eq!(e, "launch failed earlier");
        assert_eq!((calls, p.held(), p.stats().retries), (1, 4096, 0));
    }

    #[test]
    fn threads_share_a_pool() {
        let (p, dev) = pool(1 << 20);
        std::thread::scope(|s| {
            for t in 0..4usize {
                let (p, dev) = (&p, &dev);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..2000usize {
                        let l = lease(p, dev, (i * 7 + t) % 50 * 700).unwrap();
                        if i % 3 == 0 {
                            mine.clear();
                        }
                        mine.push(l);
                    }
                });
            }
        });
        assert!(p.held() <= 1 << 20);
        let s = p.stats();
        assert_eq!(s.hits + s.misses, 8000, "{s}");
        let pooled: usize = p.lock().free.values().map(VecDeque::len).sum();
        assert_eq!(dev.lock().unwrap().live.len(), pooled);
        p.trim();
        assert!(dev.lock().unwrap().live.is_empty());
    }

    #[test]
    fn nothing_leaks_nor_is_freed_twice() {
        let (p, dev) = pool(256 << 10);
        let mut held: Vec<Lease<Mem>> = Vec::new();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..5000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            if rng.is_multiple_of(3) && !held.is_empty() {
                held.swap_remove((rng >> 8) as usize % held.len());
            } else {
                // 64 sizes, some in one class, some over the cap.
                let bytes = (rng >> 16) as usize % 64 * 5000;
                let l = lease(&p, &dev, bytes).unwrap();
                assert!(l.bytes >= bytes);
                held.push(l);
            }
            if rng.is_multiple_of(500) {
                p.trim();
            }
            assert!(p.held() <= 256 << 10);
        }
        // Every live allocation is either leased or held, once.
        let leased: HashSet<u64> = held.iter().map(|l| l.id).collect();
        assert_eq!(leased.len(), held.len());
        let live = dev.lock().unwrap().live.len();
        let pooled: usize = p.lock().free.values().map(VecDeque::len).sum();
        assert_eq!(live, held.len() + pooled);
        drop(held);
        let s = p.stats();
        assert!(s.hits > 0 && s.misses > 0, "{s}");
        drop(p);
        let f = dev.lock().unwrap();
        assert!(f.live.is_empty(), "leaked {:?}", f.live);
        assert_eq!(f.allocs, f.frees);
    }
}
