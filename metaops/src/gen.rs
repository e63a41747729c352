//! Random graphs and input buffers, for property tests and the JIT's fuzzer.
//!
//! `random_graph` builds a verified DAG of meta-ops from a seed: the same seed and config give
//! the same graph and buffers on every platform (the generator uses its own splitmix64, not a
//! crate whose streams may change). Shapes are small (rank 0–4, extents 0–5, with 0 and 1
//! appearing on purpose) and mostly broadcast-compatible with one base shape per graph, so
//! element-wise ops find partners; dtypes are mostly f32, also f64, i32, i64, u8 and bool.
//! Every op appears: sources (`Input`, `Const`, `Index`, `Random`), element-wise ops,
//! `BroadcastTo` (also to express numpy broadcasting), `Reindex` (transpose, flip, slice with
//! step and a constant or runtime-parameter start, padding, repeat, clamp, diagonal, gather
//! through extras, overflow conditions),
//! `Reduce` (with and without keepdims), `ReindexReduce` (reduce-like, pooling-like, shifted and
//! scattered maps), `Reshape` and `Contiguous`. Constants favour the values that constant folding
//! treats specially (0, -0.0, 1, NaN, ±inf). Values may overflow to inf or become NaN; that is
//! fine for tests that compare two evaluations of one graph.
//!
//! Every node goes through [`Graph::push`]; a rejected node is a bug in this file and panics.

use crate::buffer::HostData;
use crate::dtype::{DType, Scalar};
use crate::expr::IndexExpr;
use crate::graph::{Graph, Node, NodeId};
use crate::op::{BinaryOp, Distribution, IndexMap, Op, ReduceOp, UnaryOp};
use crate::shape::{Shape, broadcast_shapes};

/// Parameters of [`random_graph`].
#[derive(Clone, Debug)]
pub struct GenConfig {
    /// The fewest nodes a graph has (at least 1).
    pub min_nodes: usize,
    /// The most nodes a graph has.
    pub max_nodes: usize,
    /// The most outputs a graph has (at least 1).
    pub max_outputs: usize,
    /// The most elements any node may have.
    pub max_numel: usize,
    /// Whether float inputs sometimes hold NaN and ±inf.
    pub special_inputs: bool,
}

impl Default for GenConfig {
    /// 2–30 nodes, 1–3 outputs, at most 1024 elements per node, NaN/inf inputs on.
    fn default() -> Self {
        GenConfig {
            min_nodes: 2,
            max_nodes: 30,
            max_outputs: 3,
            max_numel: 1024,
            special_inputs: true,
        }
    }
}

/// Builds a random verified graph from `seed` and one input buffer per input slot.
pub fn random_graph(seed: u64, cfg: &GenConfig) -> (Graph, Vec<HostData>) {
    let mut rng = Rng(seed);
    let base = {
        let rank = *rng.pick(&[0, 1, 1, 2, 2, 2, 3, 3, 4]);
        let zero_ok = rng.chance(0.05);
        Shape((0..rank).map(|_| rng.extent(zero_ok)).collect())
    };
    let mut st = Gen {
        rng,
        cfg,
        g: Graph::new(),
        slots: Vec::new(),
        base,
    };
    let lo = cfg.min_nodes.max(1);
    let hi = cfg.max_nodes.max(lo);
    let target = lo + st.rng.below(hi - lo + 1);
    let mut failures = 0;
    while st.g.nodes.len() < target {
        let (nodes, slots) = (st.g.nodes.len(), st.slots.len());
        // After repeated failures (usually: not enough node budget left), add a single source.
        let ok = if st.g.nodes.is_empty() || failures > 20 {
            st.any_source().is_ok()
        } else {
            st.step().is_ok()
        };
        if ok && st.g.nodes.len() <= target {
            failures = 0;
        } else {
            st.g.nodes.truncate(nodes);
            st.slots.truncate(slots);
            failures += 1;
        }
    }
    st.outputs();
    let inputs = st.buffers();
    (st.g, inputs)
}

/// splitmix64: a tiny, stable, good-enough generator (also the tests' and the `auto`
/// self-check's source of fixed pseudo-random data). `Rng(seed)` starts it.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, 53 random bits.
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.f64() > 1.0 - p
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }

    /// Index into `weights`, chosen with probability proportional to the weight.
    fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut r = self.below(total as usize) as u32;
        for (k, &w) in weights.iter().enumerate() {
            if r < w {
                return k;
            }
            r -= w;
        }
        weights.len() - 1
    }

    /// An extent: mostly 2–5, often 1, rarely 0 (when allowed).
    fn extent(&mut self, zero_ok: bool) -> usize {
        match self.below(25) {
            0 if zero_ok => 0,
            0..=4 => 1,
            _ => 2 + self.below(4),
        }
    }

    fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for k in (1..n).rev() {
            p.swap(k, self.below(k + 1));
        }
        p
    }
}

/// A step that does not fit (too big, no suitable operand); the caller undoes it.
struct Reject;

type R<T> = Result<T, Reject>;

struct Gen<'c> {
    rng: Rng,
    cfg: &'c GenConfig,
    g: Graph,
    /// dtype and shape of each input slot.
    slots: Vec<(DType, Shape)>,
    /// The graph's base shape, which most sources derive theirs from.
    base: Shape,
}

const MAX_RANK: usize = 4;

fn idx(k: usize) -> IndexExpr {
    IndexExpr::Idx(k)
}

impl Gen<'_> {
    fn node(&self, id: NodeId) -> &Node {
        self.g.node(id)
    }

    fn push(&mut self, op: Op, inputs: Vec<NodeId>, dtype: DType, shape: Shape) -> R<NodeId> {
        if shape.rank() > MAX_RANK || shape.numel() > self.cfg.max_numel {
            return Err(Reject);
        }
        let node = Node {
            op,
            inputs,
            dtype,
            shape,
        };
        match self.g.push(node.clone()) {
            Ok(id) => Ok(id),
            Err(msg) => panic!("gen built an invalid node: {msg}\n{node:?}\nin\n{}", self.g),
        }
    }

    /// One random op (with whatever helper nodes it needs).
    fn step(&mut self) -> R<()> {
        const WEIGHTS: [u32; 14] = [6, 4, 2, 2, 12, 16, 6, 5, 4, 10, 7, 6, 4, 2];
        match self.rng.weighted(&WEIGHTS) {
            0 => self.input_with(None).map(drop),
            1 => {
                let (dt, sh) = (self.dtype(), self.shape());
                self.konst(dt, sh).map(drop)
            }
            2 => self.index_source(None).map(drop),
            3 => self.random_source(None).map(drop),
            4 => self.unary(),
            5 => self.binary(),
            6 => self.where_(),
            7 => self.cast(),
            8 => self.broadcast(),
            9 => self.reindex(),
            10 => self.reduce(),
            11 => self.reindex_reduce(),
            12 => self.reshape(),
            _ => self.contiguous(),
        }
    }

    // ---- choices ----

    fn dtype(&mut self) -> DType {
        const DTYPES: [DType; 6] = [
            DType::F32,
            DType::F64,
            DType::I32,
            DType::I64,
            DType::U8,
            DType::Bool,
        ];
        DTYPES[self.rng.weighted(&[50, 10, 12, 10, 8, 10])]
    }

    /// A shape, usually derived from the base shape so that it broadcasts with it.
    fn shape(&mut self) -> Shape {
        match self.rng.below(20) {
            0..=6 => self.base.clone(),
            7..=12 => self.compatible(&self.base.clone()),
            13..=14 => Shape::scalar(),
            _ => {
                let rank = self.rng.below(MAX_RANK + 1);
                Shape((0..rank).map(|_| self.rng.extent(true)).collect())
            }
        }
    }

    /// A shape that broadcasts with `s`: a suffix of it with some extents replaced by 1.
    fn compatible(&mut self, s: &Shape) -> Shape {
        let drop = if self.rng.chance(0.5) {
            self.rng.below(s.rank() + 1)
        } else {
            0
        };
        Shape(
            s.0[drop..]
                .iter()
                .map(|&d| if self.rng.chance(0.3) { 1 } else { d })
                .collect(),
        )
    }

    /// A value of `dt`, favouring the ones constant folding treats specially.
    fn value(&mut self, dt: DType) -> Scalar {
        if dt.is_float() {
            const FLOATS: [f64; 12] = [
                0.0,
                -0.0,
                1.0,
                -1.0,
                0.5,
                2.0,
                -1.5,
                3.0,
                0.25,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
            ];
            let k = self.rng.weighted(&[10, 8, 12, 6, 5, 5, 5, 3, 3, 2, 1, 1]);
            return Scalar::from_f64(FLOATS[k], dt);
        }
        match dt {
            DType::Bool => Scalar::Bool(self.rng.chance(0.5)),
            DType::U8 if self.rng.chance(0.05) => Scalar::U8(255),
            DType::I32 if self.rng.chance(0.03) => Scalar::I32(i32::MIN),
            DType::I64 if self.rng.chance(0.03) => Scalar::I64(i64::MAX),
            _ => {
                let v = *self.rng.pick(&[0, 0, 1, 1, 1, 2, 3, -1, -2, 5]);
                Scalar::I64(v).cast(dt)
            }
        }
    }

    /// A node satisfying `pred`, usually a recent one (so chains grow deep).
    fn pick(&mut self, pred: impl Fn(&Node) -> bool) -> Option<NodeId> {
        let ids: Vec<NodeId> = (0..self.g.nodes.len())
            .map(|k| NodeId(k as u32))
            .filter(|&id| pred(self.node(id)))
            .collect();
        if ids.is_empty() {
            return None;
        }
        let k = if self.rng.chance(0.6) {
            ids.len() - 1 - self.rng.below(ids.len().min(4))
        } else {
            self.rng.below(ids.len())
        };
        Some(ids[k])
    }

    /// Any node, or a fresh source when the graph is empty.
    fn pick_any(&mut self) -> R<NodeId> {
        match self.pick(|_| true) {
            Some(id) => Ok(id),
            None => self.any_source(),
        }
    }

    // ---- sources ----

    fn any_source(&mut self) -> R<NodeId> {
        let (dt, sh) = (self.dtype(), self.shape());
        self.source(dt, sh)
    }

    /// A source of the given dtype and shape.
    fn source(&mut self, dt: DType, sh: Shape) -> R<NodeId> {
        match self.rng.below(10) {
            0..=4 => self.input_with(Some((dt, sh))),
            5..=7 => self.konst(dt, sh),
            8 if !dt.is_bool() && sh.rank() > 0 => self.index_source(Some((dt, sh))),
            9 if matches!(dt, DType::F32 | DType::F64) => self.random_source(Some((dt, sh))),
            _ => self.input_with(Some((dt, sh))),
        }
    }

    /// An `Input` node: a new slot, or sometimes a second node for an existing slot.
    fn input_with(&mut self, want: Option<(DType, Shape)>) -> R<NodeId> {
        let (dt, sh) = match want {
            Some(w) => w,
            None => (self.dtype(), self.shape()),
        };
        let reuse = self.slots.iter().position(|s| *s == (dt, sh.clone()));
        let slot = match reuse {
            Some(slot) if self.rng.chance(0.3) => slot,
            _ => {
                self.slots.push((dt, sh.clone()));
                self.slots.len() - 1
            }
        };
        self.push(Op::Input { slot }, vec![], dt, sh)
    }

    fn konst(&mut self, dt: DType, sh: Shape) -> R<NodeId> {
        let v = self.value(dt);
        self.push(Op::Const(v), vec![], dt, sh)
    }

    fn index_source(&mut self, want: Option<(DType, Shape)>) -> R<NodeId> {
        let (dt, sh) = match want {
            Some(w) => w,
            None => {
                let dt =
                    *self
                        .rng
                        .pick(&[DType::I64, DType::I64, DType::I32, DType::F32, DType::U8]);
                (dt, self.shape())
            }
        };
        if sh.rank() == 0 || dt.is_bool() {
            return Err(Reject);
        }
        let axis = self.rng.below(sh.rank());
        self.push(Op::Index { axis }, vec![], dt, sh)
    }

    fn random_source(&mut self, want: Option<(DType, Shape)>) -> R<NodeId> {
        let (dt, sh) = match want {
            Some(w) => w,
            None => {
                let dt = if self.rng.chance(0.8) {
                    DType::F32
                } else {
                    DType::F64
                };
                (dt, self.shape())
            }
        };
        // A few seeds only, so equal random nodes (which CSE merges) appear.
        let seed = *self.rng.pick(&[0, 1, 7, 12345, u64::MAX]);
        let dist = if self.rng.chance(0.5) {
            Distribution::Uniform
        } else {
            Distribution::Normal
        };
        self.push(Op::Random { seed, dist }, vec![], dt, sh)
    }

    // ---- element-wise ----

    /// Brings `x` to `target` (numpy broadcasting): drops the size-1 axes that get expanded
    /// with a `Reshape`, then adds the missing axes with a `BroadcastTo`.
    fn broadcast_to(&mut self, x: NodeId, target: &Shape) -> R<NodeId> {
        let xs = self.node(x).shape.clone();
        let dt = self.node(x).dtype;
        if xs == *target {
            return Ok(x);
        }
        let off = target.rank() - xs.rank();
        let mut kept_axes = Vec::new();
        for (k, &d) in xs.0.iter().enumerate() {
            if d == target.0[off + k] {
                kept_axes.push(off + k);
            }
        }
        let mut x = x;
        if kept_axes.len() < xs.rank() {
            let dims: Vec<usize> = kept_axes.iter().map(|&a| target.0[a]).collect();
            x = self.push(Op::Reshape, vec![x], dt, Shape(dims))?;
        }
        let axes: Vec<usize> = (0..target.rank())
            .filter(|a| !kept_axes.contains(a))
            .collect();
        if axes.is_empty() {
            return Ok(x);
        }
        self.push(Op::BroadcastTo { axes }, vec![x], dt, target.clone())
    }

    /// A second operand of dtype `dt` that broadcasts with `shape`.
    fn partner(&mut self, dt: DType, shape: &Shape) -> R<NodeId> {
        let limit = self.cfg.max_numel;
        let fits = |n: &Node| {
            n.dtype == dt
                && broadcast_shapes(&n.shape, shape)
                    .is_some_and(|s| s.numel() <= limit && s.rank() <= MAX_RANK)
        };
        match self.rng.below(10) {
            0..=4 => match self.pick(fits) {
                Some(id) => Ok(id),
                None => self.konst(dt, Shape::scalar()),
            },
            5..=7 => {
                let sh = if self.rng.chance(0.5) {
                    Shape::scalar()
                } else {
                    shape.clone()
                };
                self.konst(dt, sh)
            }
            _ => {
                let sh = self.compatible(shape);
                self.source(dt, sh)
            }
        }
    }

    fn unary(&mut self) -> R<()> {
        let x = self.pick_any()?;
        let n = self.node(x).clone();
        let ops: Vec<UnaryOp> = UnaryOp::ALL
            .into_iter()
            .filter(|u| u.accepts(n.dtype))
            .collect();
        let op = *self.rng.pick(&ops);
        // Double negations feed the neg(neg(x)) and not(not(x)) rules.
        let x = if matches!(op, UnaryOp::Neg | UnaryOp::Not) && self.rng.chance(0.3) {
            self.push(Op::Unary(op), vec![x], n.dtype, n.shape.clone())?
        } else {
            x
        };
        self.push(Op::Unary(op), vec![x], n.dtype, n.shape)
            .map(drop)
    }

    fn binary(&mut self) -> R<()> {
        let a = self.pick_any()?;
        let (dt, sa) = (self.node(a).dtype, self.node(a).shape.clone());
        let ops: Vec<BinaryOp> = BinaryOp::ALL
            .into_iter()
            .filter(|b| b.accepts(dt))
            .collect();
        let op = *self.rng.pick(&ops);
        let b = self.partner(dt, &sa)?;
        let (a, b) = if self.rng.chance(0.5) { (a, b) } else { (b, a) };
        let out = broadcast_shapes(&self.node(a).shape, &self.node(b).shape).ok_or(Reject)?;
        let a = self.broadcast_to(a, &out)?;
        let b = self.broadcast_to(b, &out)?;
        self.push(Op::Binary(op), vec![a, b], op.output_dtype(dt), out)
            .map(drop)
    }

    fn where_(&mut self) -> R<()> {
        let a = self.pick_any()?;
        let (dt, sa) = (self.node(a).dtype, self.node(a).shape.clone());
        let b = if self.rng.chance(0.1) {
            a
        } else {
            self.partner(dt, &sa)?
        };
        let sab = broadcast_shapes(&sa, &self.node(b).shape).ok_or(Reject)?;
        let limit = self.cfg.max_numel;
        let cond = match self.rng.below(10) {
            0..=4 => self.pick(|n| {
                n.dtype.is_bool()
                    && broadcast_shapes(&n.shape, &sab).is_some_and(|s| s.numel() <= limit)
            }),
            _ => None,
        };
        let cond = match cond {
            Some(c) => c,
            None if self.rng.chance(0.3) => self.konst(DType::Bool, Shape::scalar())?,
            None => {
                // A comparison of some node against a constant.
                let x = self.pick_any()?;
                let xn = self.node(x).clone();
                if broadcast_shapes(&xn.shape, &sab).is_none() {
                    return Err(Reject);
                }
                let c = self.konst(xn.dtype, xn.shape.clone())?;
                let op = *self
                    .rng
                    .pick(&[BinaryOp::Lt, BinaryOp::Le, BinaryOp::Eq, BinaryOp::Ne]);
                self.push(Op::Binary(op), vec![x, c], DType::Bool, xn.shape)?
            }
        };
        let out = broadcast_shapes(&self.node(cond).shape, &sab).ok_or(Reject)?;
        let cond = self.broadcast_to(cond, &out)?;
        let a = self.broadcast_to(a, &out)?;
        let b = if b == a {
            a
        } else {
            self.broadcast_to(b, &out)?
        };
        self.push(Op::Where, vec![cond, a, b], dt, out).map(drop)
    }

    fn cast(&mut self) -> R<()> {
        let x = self.pick_any()?;
        let n = self.node(x).clone();
        let d = self.dtype();
        if d == n.dtype {
            return Err(Reject);
        }
        self.push(Op::Cast(d), vec![x], d, n.shape).map(drop)
    }

    // ---- reindexing ----

    fn broadcast(&mut self) -> R<()> {
        let x = self.pick_any()?;
        let n = self.node(x).clone();
        let new = if self.rng.chance(0.1) {
            0
        } else {
            1 + self.rng.below(2)
        };
        let rank = n.shape.rank() + new;
        if rank > MAX_RANK {
            return Err(Reject);
        }
        let mut axes: Vec<usize> = self.rng.permutation(rank)[..new].to_vec();
        axes.sort_unstable();
        let mut src = n.shape.0.iter();
        let dims = (0..rank)
            .map(|a| {
                if axes.contains(&a) {
                    1 + self.rng.below(4)
                } else {
                    src.next().copied().unwrap_or(1)
                }
            })
            .collect();
        self.push(Op::BroadcastTo { axes }, vec![x], n.dtype, Shape(dims))
            .map(drop)
    }

    /// An integer tensor of `shape` to read as an extra (an existing one or a new source).
    fn extra(&mut self, shape: &Shape) -> R<NodeId> {
        if let Some(id) = self.pick(|n| n.dtype.is_int() && n.shape == *shape)
            && self.rng.chance(0.5)
        {
            return Ok(id);
        }
        let dt = *self.rng.pick(&[DType::I64, DType::I32, DType::U8]);
        if shape.rank() > 0 && self.rng.chance(0.2) {
            self.index_source(Some((dt, shape.clone())))
        } else {
            self.input_with(Some((dt, shape.clone())))
        }
    }

    /// An overflow condition over an iteration space of `rank` axes.
    fn condition(&mut self, rank: usize) -> IndexExpr {
        if rank == 0 {
            return IndexExpr::c(self.rng.range(0, 1));
        }
        let j = self.rng.below(rank);
        let k = self.rng.below(rank);
        match self.rng.below(4) {
            0 => idx(j).lt(IndexExpr::c(self.rng.range(0, 2))),
            1 => ((idx(j) + idx(k)) % 2).eq_(IndexExpr::c(0)),
            2 => idx(j).eq_(IndexExpr::IterDim(j) - 1),
            _ => IndexExpr::select(
                idx(j).le(IndexExpr::c(1)),
                IndexExpr::c(0),
                idx(k).ne_(IndexExpr::c(2)),
            ),
        }
    }

    fn reindex(&mut self) -> R<()> {
        let x = self.pick_any()?;
        let n = self.node(x).clone();
        let (xs, r) = (n.shape.clone(), n.shape.rank());
        let mut extras: Vec<NodeId> = Vec::new();
        let mut exprs = Vec::with_capacity(r);
        let out: Vec<usize>;
        // Gather axes get their expressions once the output shape is known.
        let mut gathers: Vec<usize> = Vec::new();
        if r >= 2 && self.rng.chance(0.1) {
            // Diagonal of the first two axes: [i0, i0, i1, i2, ...].
            out = std::iter::once(xs.0[0].min(xs.0[1]))
                .chain(xs.0[2..].iter().copied())
                .collect();
            exprs.push(idx(0));
            exprs.push(idx(0));
            exprs.extend((2..r).map(|a| idx(a - 1)));
        } else {
            let extra_axis = r < MAX_RANK && self.rng.chance(0.2);
            let out_rank = r + extra_axis as usize;
            let perm = self.rng.permutation(out_rank);
            let mut dims = vec![0; out_rank];
            for (a, &m) in xs.0.iter().enumerate() {
                let (j, ma) = (perm[a], IndexExpr::TargetDim(a));
                let (ext, e) = match self.rng.below(9) {
                    0..=1 => (m, idx(j)),        // identity or transpose
                    2 => (m, (ma - 1) - idx(j)), // flip
                    3 => {
                        // slice start::step, sometimes reading one past the end
                        let (s, t) = (self.rng.below(2), 1 + self.rng.below(3));
                        let ext = m.saturating_sub(s).div_ceil(t) + self.rng.chance(0.2) as usize;
                        // The start is a runtime index parameter for odd steps (as the Tensor
                        // API's slices), a constant otherwise.
                        let start = if t % 2 == 1 {
                            IndexExpr::Param(s as i64)
                        } else {
                            IndexExpr::c(s as i64)
                        };
                        (ext, idx(j) * t as i64 + start)
                    }
                    4 => {
                        // pad before and after
                        let (p, q) = (self.rng.below(3), self.rng.below(3));
                        (m + p + q, idx(j) - p as i64)
                    }
                    5 => (m * (1 + self.rng.below(2)), idx(j) % ma), // repeat
                    6 => (m + 1, idx(j).min(ma - 1)),                // clamp
                    7 => {
                        gathers.push(a);
                        (1 + self.rng.below(4), IndexExpr::c(0))
                    }
                    _ => (
                        m,
                        IndexExpr::select(idx(j).lt(ma), idx(j), IndexExpr::c(-1)),
                    ),
                };
                dims[j] = ext;
                exprs.push(e);
            }
            if extra_axis {
                dims[perm[r]] = 1 + self.rng.below(3);
            }
            out = dims;
        }
        let out = Shape(out);
        for a in gathers {
            let e = if !extras.is_empty() && self.rng.chance(0.5) {
                0
            } else {
                extras.push(self.extra(&out)?);
                extras.len() - 1
            };
            exprs[a] = IndexExpr::Extra(e, (0..out.rank()).map(idx).collect());
        }
        let conds = if self.rng.chance(0.25) {
            vec![self.condition(out.rank())]
        } else {
            vec![]
        };
        let map = IndexMap {
            exprs,
            overflow: self.value(n.dtype),
            conds,
        };
        let inputs = std::iter::once(x).chain(extras).collect();
        self.push(Op::Reindex(map), inputs, n.dtype, out).map(drop)
    }

    // ---- reductions ----

    fn reduce(&mut self) -> R<()> {
        let x = self.pick_any()?;
        let n = self.node(x).clone();
        let r = n.shape.rank();
        let axes: Vec<usize> = if self.rng.chance(0.2) {
            (0..r).collect()
        } else {
            (0..r).filter(|_| self.rng.chance(0.5)).collect()
        };
        let empty = axes.iter().any(|&a| n.shape.0[a] == 0);
        let ops: Vec<ReduceOp> = ReduceOp::ALL
            .into_iter()
            .filter(|o| o.accepts(n.dtype))
            .filter(|o| !(empty && matches!(o, ReduceOp::Max | ReduceOp::Min)))
            .collect();
        if ops.is_empty() {
            return Err(Reject);
        }
        let op = *self.rng.pick(&ops);
        let keepdims = self.rng.chance(0.4);
        let dims = (0..r)
            .filter_map(|a| match (axes.contains(&a), keepdims) {
                (true, true) => Some(1),
                (true, false) => None,
                (false, _) => Some(n.shape.0[a]),
            })
            .collect();
        let op = Op::Reduce { op, axes, keepdims };
        self.push(op, vec![x], n.dtype, Shape(dims)).map(drop)
    }

    fn reindex_reduce(&mut self) -> R<()> {
        let x = self.pick_any()?;
        let n = self.node(x).clone();
        let (xs, r) = (n.shape.clone(), n.shape.rank());
        let ops: Vec<ReduceOp> = ReduceOp::ALL
            .into_iter()
            .filter(|o| o.accepts(n.dtype))
            .collect();
        let op = *self.rng.pick(&ops);
        // Each target axis is fed by a distinct iteration axis (or a constant 0).
        let perm = self.rng.permutation(r);
        let target_rank = self.rng.below(r.min(3) + 1);
        let mut dims = Vec::with_capacity(target_rank);
        let mut exprs = Vec::with_capacity(target_rank);
        let mut extras = Vec::new();
        for &j in &perm[..target_rank] {
            let m = xs.0[j];
            let (ext, e) = match self.rng.below(8) {
                0..=2 => (m, idx(j)), // reduce the other axes
                3 => {
                    // window / pooling
                    let k = 2 + self.rng.below(2);
                    (m.div_ceil(k), idx(j) / k as i64)
                }
                4 => {
                    // shifted: the last input is skipped (by a runtime index parameter on
                    // even axes, as a slice's gradient; a constant on odd ones)
                    let shift = if j % 2 == 0 {
                        IndexExpr::Param(1)
                    } else {
                        IndexExpr::c(1)
                    };
                    (m, idx(j) + shift)
                }
                5 => (m + 1, idx(j)), // one output nothing reaches
                6 => (1 + self.rng.below(2), IndexExpr::c(0)),
                _ => {
                    // scatter through an index tensor of the iteration shape
                    extras.push(self.extra(&xs)?);
                    let e = IndexExpr::Extra(extras.len() - 1, (0..r).map(idx).collect());
                    (1 + self.rng.below(4), e)
                }
            };
            dims.push(ext);
            exprs.push(e);
        }
        let conds = if self.rng.chance(0.2) {
            vec![self.condition(r)]
        } else {
            vec![]
        };
        let map = IndexMap {
            exprs,
            overflow: Scalar::zero(n.dtype),
            conds,
        };
        let inputs = std::iter::once(x).chain(extras).collect();
        let op = Op::ReindexReduce { op, map };
        self.push(op, inputs, n.dtype, Shape(dims)).map(drop)
    }

    // ---- layout ----

    fn reshape(&mut self) -> R<()> {
        let x = self.pick_any()?;
        let n = self.node(x).clone();
        let numel = n.shape.numel();
        let rank = self.rng.below(MAX_RANK + 1);
        let mut dims = vec![1; rank];
        if numel == 0 {
            if rank == 0 {
                return Err(Reject);
            }
            for d in dims.iter_mut() {
                *d = self.rng.below(4);
            }
            let z = self.rng.below(rank);
            dims[z] = 0;
        } else {
            if rank == 0 && numel != 1 {
                return Err(Reject);
            }
            // Deal the prime factors of numel out to the axes.
            let mut rest = numel;
            let mut p = 2;
            while rest > 1 {
                if rest.is_multiple_of(p) {
                    rest /= p;
                    let a = self.rng.below(rank);
                    dims[a] *= p;
                } else {
                    p += 1;
                }
            }
        }
        self.push(Op::Reshape, vec![x], n.dtype, Shape(dims))
            .map(drop)
    }

    fn contiguous(&mut self) -> R<()> {
        let x = self.pick_any()?;
        let n = self.node(x).clone();
        self.push(Op::Contiguous, vec![x], n.dtype, n.shape)
            .map(drop)
    }

    // ---- outputs and buffers ----

    /// 1 to `max_outputs` outputs: the last node, then mostly nodes nothing uses.
    fn outputs(&mut self) {
        let count = 1 + self.rng.below(self.cfg.max_outputs.max(1));
        let last = NodeId(self.g.nodes.len() as u32 - 1);
        self.g.outputs.push(last);
        while self.g.outputs.len() < count {
            let uses = self.g.use_counts();
            let outs = self.g.outputs.clone();
            let id = if self.rng.chance(0.05) {
                *self.rng.pick(&outs)
            } else {
                match self.pick(|_| true) {
                    Some(_) if self.rng.chance(0.7) => {
                        let unused: Vec<NodeId> = (0..self.g.nodes.len())
                            .map(|k| NodeId(k as u32))
                            .filter(|id| uses[id.index()] == 0)
                            .collect();
                        if unused.is_empty() {
                            last
                        } else {
                            *self.rng.pick(&unused)
                        }
                    }
                    Some(id) => id,
                    None => last,
                }
            };
            self.g.outputs.push(id);
        }
    }

    /// One buffer per input slot, with small values (and sometimes NaN/inf in float buffers).
    fn buffers(&mut self) -> Vec<HostData> {
        let slots = self.slots.clone();
        slots
            .into_iter()
            .map(|(dt, sh)| {
                let n = sh.numel();
                let mut vals: Vec<Scalar> = (0..n)
                    .map(|_| match dt {
                        DType::Bool => Scalar::Bool(self.rng.chance(0.5)),
                        DType::U8 if self.rng.chance(0.05) => {
                            Scalar::U8(200 + self.rng.below(56) as u8)
                        }
                        DType::U8 => Scalar::U8(self.rng.below(10) as u8),
                        d if d.is_int() => Scalar::I64(self.rng.range(-3, 6)).cast(d),
                        d => Scalar::from_f64(self.rng.range(-12, 12) as f64 / 4.0, d),
                    })
                    .collect();
                if dt.is_float() && n > 0 && self.cfg.special_inputs {
                    for (p, v) in [
                        (0.15, f64::NAN),
                        (0.05, f64::INFINITY),
                        (0.05, -f64::INFINITY),
                    ] {
                        if self.rng.chance(p) {
                            let k = self.rng.below(n);
                            vals[k] = Scalar::from_f64(v, dt);
                        }
                    }
                }
                HostData::from_scalars(dt, vals)
            })
            .collect()
    }
}

/// For each node of `g`, whether its value may differ by more than rounding between two
/// evaluations that agree on every exact op and differ by ulps on the inexact ones (a GPU
/// backend against the reference: transcendentals within the device library's ulp bounds,
/// float powers and reductions reassociated). That is so when such an inexact value reaches,
/// on the way to the node, an op that is not continuous in it: a float `mod`, `floor` / `ceil`
/// / `round`, a comparison, the condition of a `where`, a cast to an integer or bool, or an
/// index read from data. One ulp there can move the result by a whole step: `tanh` one ulp
/// under 0.5, then `mod 0.5`, gives 0.49999997 where the reference gives 0. Fuzzers comparing
/// such backends skip the outputs marked here.
pub fn step_sensitive(g: &Graph) -> Vec<bool> {
    let mut approx = vec![false; g.nodes.len()];
    let mut stepped = vec![false; g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        let a = |k: usize| n.inputs.get(k).is_some_and(|id| approx[id.index()]);
        let any = n.inputs.iter().any(|id| approx[id.index()]);
        let step = match &n.op {
            Op::Unary(UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round) => any,
            Op::Binary(
                BinaryOp::Mod | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Eq | BinaryOp::Ne,
            ) => any,
            Op::Where => a(0),
            Op::Cast(to) => any && !to.is_float(),
            Op::Reindex(_) | Op::ReindexReduce { .. } => (1..n.inputs.len()).any(a),
            _ => false,
        };
        stepped[i] = step || n.inputs.iter().any(|id| stepped[id.index()]);
        approx[i] = any || inexact_node(n);
    }
    stepped
}

/// Whether the node's op may differ between backends by rounding: a transcendental, a float
/// power, random numbers (normal samples use log and cos), a float reduction (reassociated).
pub fn inexact_node(n: &Node) -> bool {
    match &n.op {
        Op::Unary(u) => u.is_transcendental(),
        Op::Binary(BinaryOp::Pow) => n.dtype.is_float(),
        Op::Random { .. } => true,
        Op::Reduce { .. } | Op::ReindexReduce { .. } => n.dtype.is_float(),
        _ => false,
    }
}

/// Whether the graph has an [`inexact_node`]: then the fuzzers compare its float outputs with
/// [`agree`]'s tolerance instead of bit for bit.
pub fn inexact(g: &Graph) -> bool {
    g.nodes.iter().any(inexact_node)
}

/// The fuzzers' agreement rule for two evaluations of one output: same dtype and length;
/// bitwise (NaN matches NaN), or for floats with `tolerant`, within a relative 1e-3 with an
/// absolute floor (values computed through inexact ops may differ by a few ulp, and later ops
/// can amplify that).
pub fn agree(a: &HostData, b: &HostData, tolerant: bool) -> bool {
    if a.dtype() != b.dtype() || a.len() != b.len() {
        return false;
    }
    (0..a.len()).all(|i| {
        let (x, y) = (a.get(i), b.get(i));
        if x == y || (x.is_nan() && y.is_nan()) {
            return true;
        }
        if !tolerant || !x.dtype().is_float() {
            return false;
        }
        let (x, y) = (x.to_f64(), y.to_f64());
        x == y || (x - y).abs() <= 1e-3 * (1.0 + x.abs().max(y.abs()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::verify;

    /// A step (mod, floor, a comparison, a cast to an integer) after an inexact value marks
    /// its result and everything computed from it; the same steps after exact values, and
    /// continuous ops after inexact ones, mark nothing.
    #[test]
    fn step_sensitive_marks_steps_after_inexact_values() {
        let g = crate::parse::parse(
            "%0 = input #0 : f32[4]
%1 = tanh %0 : f32[4]
%2 = const 0.5 : f32[4]
%3 = mod %1, %2 : f32[4]
%4 = erf %3 : f32[4]
%5 = mod %0, %2 : f32[4]
%6 = exp %5 : f32[4]
%7 = add %1, %0 : f32[4]
%8 = floor %0 : f32[4]
%9 = lt %7, %2 : bool[4]
%10 = cast %1 : i32[4]
%11 = reduce sum %0 axes=[0] : f32[]
return %4, %6, %7, %8, %9, %10, %11
",
        )
        .expect("parses");
        let s = step_sensitive(&g);
        let marked: Vec<bool> = g.outputs.iter().map(|o| s[o.index()]).collect();
        assert_eq!(marked, [true, false, false, false, true, true, false]);
    }

    #[test]
    fn graphs_verify_fit_the_config_and_use_every_op() {
        let cfg = GenConfig::default();
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..300 {
            let (g, inputs) = random_graph(seed, &cfg);
            verify(&g).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert!(
                (cfg.min_nodes..=cfg.max_nodes).contains(&g.nodes.len()),
                "seed {seed}"
            );
            assert!(
                (1..=cfg.max_outputs).contains(&g.outputs.len()),
                "seed {seed}"
            );
            assert_eq!(inputs.len(), g.num_inputs(), "seed {seed}");
            for n in &g.nodes {
                if let Op::Input { slot } = n.op {
                    assert_eq!(inputs[slot].dtype(), n.dtype);
                    assert_eq!(inputs[slot].len(), n.shape.numel());
                }
                seen.insert(n.op.name());
            }
            let again = random_graph(seed, &cfg);
            assert_eq!(again.0, g, "seed {seed} is not reproducible");
            // Debug text, since NaN != NaN.
            assert_eq!(
                format!("{:?}", again.1),
                format!("{inputs:?}"),
                "seed {seed}"
            );
        }
        for name in [
            "input",
            "const",
            "index",
            "random",
            "where",
            "cast",
            "broadcast",
            "reindex",
            "reduce",
            "reindex_reduce",
            "reshape",
            "contiguous",
            "add",
            "neg",
        ] {
            assert!(seen.contains(name), "no {name} in 300 graphs");
        }
    }
}
