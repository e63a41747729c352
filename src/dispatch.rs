//! The per-op fast path of recording and eager execution.
//!
//! Every op call checks its new node against the verifier's rules, and in eager mode runs it
//! as a one-op graph through a plan. Both are pure functions of the op's **signature**: the op
//! with every parameter (constants, axes, index maps), the dtype and shape of each input, which
//! inputs are the same node (`x * x` reads one buffer), and the result's dtype and shape. A
//! thread-local memo remembers recent signatures ([`OpEntry`]): a signature seen before is
//! found by comparing it field by field with the most recent entry, else with the entry under
//! a cheap hash of it, so it builds no graph and verifies nothing again, and in eager mode it
//! runs the plan found the first time without hashing a graph or a plan key
//! ([`crate::exec`]). A hit is exact equality of every field, so a colliding hash can only
//! cost a miss, never another op's verdict or kernel.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::rc::Rc;

use metajit_metaops::{DType, Op, Shape};

use crate::tensor::NodeRef;

/// How many signatures the memo keeps per thread; past it the memo starts afresh.
const CAPACITY: usize = 4096;

/// A verified op signature and what eager mode learned about it.
pub(crate) struct OpEntry {
    op: Op,
    inputs: Vec<(DType, Shape)>,
    /// For each input, the position of its first occurrence among the inputs.
    alias: Vec<u32>,
    dtype: DType,
    shape: Shape,
    /// The one-op graph and its plan, once the op has run in eager mode.
    pub(crate) eager: RefCell<Option<Rc<crate::exec::OneOp>>>,
}

/// The position of the first input that is the same node as `inputs[k]`.
fn first_occurrence(inputs: &[NodeRef], k: usize) -> u32 {
    let id = inputs[k].id;
    inputs.iter().position(|n| n.id == id).unwrap_or(k) as u32
}

impl OpEntry {
    /// True when this entry is the signature of `op` over `inputs` giving `dtype` and `shape`.
    fn matches(&self, op: &Op, inputs: &[NodeRef], dtype: DType, shape: &Shape) -> bool {
        // Cheapest first; the op (an index map can be large) last.
        self.dtype == dtype
            && self.inputs.len() == inputs.len()
            && std::mem::discriminant(&self.op) == std::mem::discriminant(op)
            && self.shape == *shape
            && inputs
                .iter()
                .zip(&self.inputs)
                .all(|(n, (d, s))| n.dtype == *d && n.shape == *s)
            && (0..inputs.len()).all(|k| self.alias[k] == first_occurrence(inputs, k))
            && self.op == *op
    }
}

/// A 64-bit multiplicative hasher (FxHash's mix) for signatures and graphs: fast on the small
/// integers they are made of. Only ever a hint: every hit is checked by equality.
#[derive(Default)]
pub(crate) struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn add(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        for &b in chunks.remainder() {
            self.add(b as u64);
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.add(v as u64);
    }
    fn write_u32(&mut self, v: u32) {
        self.add(v as u64);
    }
    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }
    fn write_usize(&mut self, v: usize) {
        self.add(v as u64);
    }
}

/// The hash of a signature (see [`OpEntry::matches`] for what it covers).
fn signature_hash(op: &Op, inputs: &[NodeRef], dtype: DType, shape: &Shape) -> u64 {
    let mut h = FastHasher::default();
    op.hash(&mut h);
    dtype.hash(&mut h);
    shape.hash(&mut h);
    for (k, n) in inputs.iter().enumerate() {
        n.dtype.hash(&mut h);
        n.shape.hash(&mut h);
        h.write_u32(first_occurrence(inputs, k));
    }
    h.finish()
}

/// A map whose keys are already hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

#[derive(Default)]
struct Memo {
    /// The most recent hit or insertion: a loop of one op finds it without hashing.
    last: Option<Rc<OpEntry>>,
    table: HashMap<u64, Rc<OpEntry>, BuildHasherDefault<PassThrough>>,
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo::default());
}

/// The entry of a signature verified before on this thread, if any.
pub(crate) fn lookup(
    op: &Op,
    inputs: &[NodeRef],
    dtype: DType,
    shape: &Shape,
) -> Option<Rc<OpEntry>> {
    MEMO.with(|m| {
        let mut m = m.borrow_mut();
        if let Some(e) = &m.last
            && e.matches(op, inputs, dtype, shape)
        {
            return Some(e.clone());
        }
        let h = signature_hash(op, inputs, dtype, shape);
        let e = m.table.get(&h)?;
        if !e.matches(op, inputs, dtype, shape) {
            return None;
        }
        let e = e.clone();
        m.last = Some(e.clone());
        Some(e)
    })
}

/// Remembers a signature that passed verification; returns its entry.
pub(crate) fn insert(op: &Op, inputs: &[NodeRef], dtype: DType, shape: &Shape) -> Rc<OpEntry> {
    let e = Rc::new(OpEntry {
        op: op.clone(),
        inputs: inputs.iter().map(|n| (n.dtype, n.shape.clone())).collect(),
        alias: (0..inputs.len())
            .map(|k| first_occurrence(inputs, k))
            .collect(),
        dtype,
        shape: shape.clone(),
        eager: RefCell::new(None),
    });
    let h = signature_hash(op, inputs, dtype, shape);
    MEMO.with(|m| {
        let mut m = m.borrow_mut();
        if m.table.len() >= CAPACITY {
            m.table.clear();
        }
        m.table.insert(h, e.clone());
        m.last = Some(e.clone());
    });
    e
}
