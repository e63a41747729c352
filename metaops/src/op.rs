//! The meta-operators: the closed set every high-level op lowers to.
//!
//! Three classes ([`OpClass`]): element-wise (sources, [`UnaryOp`], [`BinaryOp`], `Where`,
//! `Cast`), reindex (`BroadcastTo`, `Reindex`) and reduce (`Reduce`, `ReindexReduce`), plus the
//! two layout ops `Reshape` and `Contiguous`. Passes ask for a class instead of listing ops.
//!
//! The scalar semantics of every op are defined by the reference interpreter (`interp.rs`); the
//! dtype rules by the verifier (`verify.rs`).

use crate::dtype::{DType, Scalar};
use crate::expr::IndexExpr;

/// A one-input element-wise operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnaryOp {
    /// `-x` (wrapping for integers; not for bool).
    Neg,
    /// `|x|` (wrapping for integers: `abs(MIN) == MIN`).
    Abs,
    /// `1 / x` (floats).
    Recip,
    /// `sqrt(x)` (floats).
    Sqrt,
    /// `e^x` (floats).
    Exp,
    /// natural log (floats).
    Log,
    /// sine (floats).
    Sin,
    /// cosine (floats).
    Cos,
    /// hyperbolic tangent (floats).
    Tanh,
    /// `1 / (1 + e^-x)` (floats).
    Sigmoid,
    /// the error function (floats).
    Erf,
    /// round toward -inf (identity on integers).
    Floor,
    /// round toward +inf (identity on integers).
    Ceil,
    /// round half to even (identity on integers).
    Round,
    /// logical not on bool, bitwise not on integers.
    Not,
}

impl UnaryOp {
    /// Every unary op.
    pub const ALL: [UnaryOp; 15] = [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Recip,
        UnaryOp::Sqrt,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sin,
        UnaryOp::Cos,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Erf,
        UnaryOp::Floor,
        UnaryOp::Ceil,
        UnaryOp::Round,
        UnaryOp::Not,
    ];

    /// The transcendental functions (exp, log, sin, cos, tanh, sigmoid, erf): costly per
    /// element, and computed by backends within a few ulps rather than exactly.
    pub fn is_transcendental(self) -> bool {
        use UnaryOp::*;
        matches!(self, Exp | Log | Sin | Cos | Tanh | Sigmoid | Erf)
    }

    /// The op's name in the text form.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Abs => "abs",
            UnaryOp::Recip => "recip",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Erf => "erf",
            UnaryOp::Floor => "floor",
            UnaryOp::Ceil => "ceil",
            UnaryOp::Round => "round",
            UnaryOp::Not => "not",
        }
    }

    /// Whether the op accepts an input of `dtype` (the output dtype equals the input's).
    pub fn accepts(self, dtype: DType) -> bool {
        use UnaryOp::*;
        match self {
            Neg | Abs => !dtype.is_bool(),
            Recip | Sqrt | Exp | Log | Sin | Cos | Tanh | Sigmoid | Erf => dtype.is_float(),
            Floor | Ceil | Round => !dtype.is_bool(),
            Not => !dtype.is_float(),
        }
    }
}

/// A two-input element-wise operation. Both inputs have the same shape and dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BinaryOp {
    /// `a + b` (bool: or; integers wrap).
    Add,
    /// `a - b` (not for bool; integers wrap).
    Sub,
    /// `a * b` (bool: and; integers wrap).
    Mul,
    /// `a / b`: true division for floats; floor division for integers (0 when `b == 0`).
    Div,
    /// `a ^ b` (not for bool; see the interpreter for integer rules).
    Pow,
    /// maximum; NaN if either input is NaN (bool: or).
    Max,
    /// minimum; NaN if either input is NaN (bool: and).
    Min,
    /// remainder with the divisor's sign, as `torch.remainder` (integers: 0 when `b == 0`).
    Mod,
    /// `a < b` → bool.
    Lt,
    /// `a <= b` → bool.
    Le,
    /// `a == b` → bool.
    Eq,
    /// `a != b` → bool.
    Ne,
    /// logical and (bool) / bitwise and (integers).
    And,
    /// logical or (bool) / bitwise or (integers).
    Or,
    /// logical xor (bool) / bitwise xor (integers).
    Xor,
}

impl BinaryOp {
    /// Every binary op.
    pub const ALL: [BinaryOp; 15] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Pow,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Mod,
        BinaryOp::Lt,
        BinaryOp::Le,
        BinaryOp::Eq,
        BinaryOp::Ne,
        BinaryOp::And,
        BinaryOp::Or,
        BinaryOp::Xor,
    ];

    /// The op's name in the text form.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Pow => "pow",
            BinaryOp::Max => "max",
            BinaryOp::Min => "min",
            BinaryOp::Mod => "mod",
            BinaryOp::Lt => "lt",
            BinaryOp::Le => "le",
            BinaryOp::Eq => "eq",
            BinaryOp::Ne => "ne",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
            BinaryOp::Xor => "xor",
        }
    }

    /// True for the comparisons, whose output is bool.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Lt | BinaryOp::Le | BinaryOp::Eq | BinaryOp::Ne
        )
    }

    /// True when `op(a, b) == op(b, a)` for all inputs (bitwise, up to NaN payloads). Not `Max`
    /// and `Min`: on floats an exact tie such as `max(-0.0, +0.0)` returns the second operand.
    pub fn is_commutative(self) -> bool {
        use BinaryOp::*;
        matches!(self, Add | Mul | Eq | Ne | And | Or | Xor)
    }

    /// Whether the op accepts two inputs of `dtype`.
    pub fn accepts(self, dtype: DType) -> bool {
        use BinaryOp::*;
        match self {
            Add | Mul | Max | Min | Lt | Le | Eq | Ne => true,
            Sub | Div | Pow | Mod => !dtype.is_bool(),
            And | Or | Xor => !dtype.is_float(),
        }
    }

    /// The output dtype for inputs of `dtype`.
    pub fn output_dtype(self, dtype: DType) -> DType {
        if self.is_comparison() {
            DType::Bool
        } else {
            dtype
        }
    }
}

/// The combining operation of a reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReduceOp {
    /// Sum (identity 0).
    Sum,
    /// Product (identity 1).
    Prod,
    /// Maximum, NaN-propagating (no identity: empty reductions are errors; in a
    /// `ReindexReduce`, untouched outputs get the dtype's lowest value).
    Max,
    /// Minimum, NaN-propagating (see `Max`).
    Min,
    /// Logical and over bool (identity true).
    And,
    /// Logical or over bool (identity false).
    Or,
}

impl ReduceOp {
    /// Every reduce op.
    pub const ALL: [ReduceOp; 6] = [
        ReduceOp::Sum,
        ReduceOp::Prod,
        ReduceOp::Max,
        ReduceOp::Min,
        ReduceOp::And,
        ReduceOp::Or,
    ];

    /// The op's name in the text form.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Prod => "prod",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::And => "all",
            ReduceOp::Or => "any",
        }
    }

    /// Whether the op accepts elements of `dtype` (the output dtype equals the input's).
    pub fn accepts(self, dtype: DType) -> bool {
        match self {
            ReduceOp::Sum | ReduceOp::Prod => !dtype.is_bool(),
            ReduceOp::Max | ReduceOp::Min => true,
            ReduceOp::And | ReduceOp::Or => dtype.is_bool(),
        }
    }

    /// The element-wise op that combines two partial results.
    pub fn combiner(self) -> BinaryOp {
        match self {
            ReduceOp::Sum => BinaryOp::Add,
            ReduceOp::Prod => BinaryOp::Mul,
            ReduceOp::Max => BinaryOp::Max,
            ReduceOp::Min => BinaryOp::Min,
            ReduceOp::And => BinaryOp::And,
            ReduceOp::Or => BinaryOp::Or,
        }
    }

    /// The value an empty reduction starts from: 0, 1, true, false; for max/min the lowest /
    /// highest value of the dtype (-inf / +inf for floats), used by `ReindexReduce` for outputs
    /// that no input reaches.
    pub fn identity(self, dtype: DType) -> Scalar {
        match self {
            ReduceOp::Sum | ReduceOp::Or => Scalar::zero(dtype),
            ReduceOp::Prod | ReduceOp::And => Scalar::one(dtype),
            ReduceOp::Max => match dtype {
                DType::Bool => Scalar::Bool(false),
                DType::U8 => Scalar::U8(0),
                DType::I32 => Scalar::I32(i32::MIN),
                DType::I64 => Scalar::I64(i64::MIN),
                d => Scalar::from_f64(f64::NEG_INFINITY, d),
            },
            ReduceOp::Min => match dtype {
                DType::Bool => Scalar::Bool(true),
                DType::U8 => Scalar::U8(u8::MAX),
                DType::I32 => Scalar::I32(i32::MAX),
                DType::I64 => Scalar::I64(i64::MAX),
                d => Scalar::from_f64(f64::INFINITY, d),
            },
        }
    }
}

/// The distribution of a `Random` source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Distribution {
    /// Uniform on [0, 1).
    Uniform,
    /// Standard normal (mean 0, variance 1).
    Normal,
}

impl Distribution {
    /// The distribution's name in the text form.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Normal => "normal",
        }
    }
}

/// The index map of a `Reindex` or `ReindexReduce`: one expression per target axis, and the
/// value and conditions for reads/writes that fall outside the target.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IndexMap {
    /// One expression per axis of the target, over the iteration index.
    pub exprs: Vec<IndexExpr>,
    /// The value a `Reindex` yields where a coordinate is out of range or a condition holds
    /// (its dtype is the op's dtype). Unused by `ReindexReduce`, which skips such elements.
    pub overflow: Scalar,
    /// Extra conditions: where any is nonzero, the element overflows.
    pub conds: Vec<IndexExpr>,
}

impl IndexMap {
    /// Whether iterations with distinct values of iteration index `k` reach distinct target
    /// elements: some target coordinate is injective in `i<k>` alone
    /// ([`IndexExpr::injective_in`]). Then a `ReindexReduce` may split axis `k` across threads
    /// without two threads combining into one element. (Skipped iterations, out of range or
    /// under a condition, write nothing, so they cannot collide either.)
    pub fn disjoint_along(&self, k: usize) -> bool {
        self.exprs.iter().any(|e| e.injective_in(k))
    }
}

/// The class of a meta-operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpClass {
    /// A source: no tensor inputs (`Input`, `Const`, `Index`, `Random`).
    Source,
    /// Same-shape, one-to-one (`Unary`, `Binary`, `Where`, `Cast`).
    Elementwise,
    /// One-to-many index rewrite (`BroadcastTo`, `Reindex`).
    Reindex,
    /// Many-to-one (`Reduce`, `ReindexReduce`).
    Reduce,
    /// Layout only (`Reshape`, `Contiguous`).
    Layout,
}

/// One meta-operator. The node that carries it fixes the output dtype and shape; for the ops
/// whose output shape is not implied by the inputs (sources, `BroadcastTo`, `Reindex`,
/// `ReindexReduce`, `Reshape`) the node's shape *is* the parameter.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// A realized buffer, by slot number in the graph's input list.
    Input {
        /// The slot.
        slot: usize,
    },
    /// A tensor of the node's shape filled with one value.
    Const(Scalar),
    /// The coordinate along `axis` of each element (an integer or float dtype).
    Index {
        /// The axis.
        axis: usize,
    },
    /// Counter-based random numbers: element `k` (row-major) is a pure function of
    /// `(seed, k)`, so the op fuses and replays exactly.
    Random {
        /// The seed.
        seed: u64,
        /// The distribution.
        dist: Distribution,
    },
    /// A unary element-wise op.
    Unary(UnaryOp),
    /// A binary element-wise op.
    Binary(BinaryOp),
    /// `where(cond, a, b)`: inputs cond (bool), a, b of one shape.
    Where,
    /// Element-wise conversion to a dtype (semantics of `Scalar::cast`).
    Cast(DType),
    /// Broadcast to the node's shape; `axes` are the output axes that are new. The input's axes
    /// are the remaining output axes in order, with equal extents.
    BroadcastTo {
        /// The new axes, ascending.
        axes: Vec<usize>,
    },
    /// Output element `i` reads input 0 at `map.exprs(i)`; inputs 1.. are the extras.
    Reindex(IndexMap),
    /// Reduce over `axes` (ascending, unique); `keepdims` keeps them with extent 1.
    Reduce {
        /// The combining op.
        op: ReduceOp,
        /// The reduced axes of the input.
        axes: Vec<usize>,
        /// Whether reduced axes stay (with extent 1).
        keepdims: bool,
    },
    /// Scatter-reduce: input element `i` is combined into output `map.exprs(i)` (skipped when
    /// out of range or a condition holds); outputs that nothing reaches hold the op's identity.
    ReindexReduce {
        /// The combining op.
        op: ReduceOp,
        /// The map from input index to output index.
        map: IndexMap,
    },
    /// The same row-major elements under the node's shape (same element count).
    Reshape,
    /// Identity on values; forces the producer to be materialised.
    Contiguous,
}

impl Op {
    /// The op's class.
    pub fn class(&self) -> OpClass {
        match self {
            Op::Input { .. } | Op::Const(_) | Op::Index { .. } | Op::Random { .. } => {
                OpClass::Source
            }
            Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast(_) => OpClass::Elementwise,
            Op::BroadcastTo { .. } | Op::Reindex(_) => OpClass::Reindex,
            Op::Reduce { .. } | Op::ReindexReduce { .. } => OpClass::Reduce,
            Op::Reshape | Op::Contiguous => OpClass::Layout,
        }
    }

    /// The op's name in the text form (`add`, `reindex`, `reduce`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Const(_) => "const",
            Op::Index { .. } => "index",
            Op::Random { .. } => "random",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Where => "where",
            Op::Cast(_) => "cast",
            Op::BroadcastTo { .. } => "broadcast",
            Op::Reindex(_) => "reindex",
            Op::Reduce { .. } => "reduce",
            Op::ReindexReduce { .. } => "reindex_reduce",
            Op::Reshape => "reshape",
            Op::Contiguous => "contiguous",
        }
    }

    /// The number of tensor inputs the op takes, or `None` when it varies (the reindex ops take
    /// 1 + their number of extras).
    pub fn arity(&self) -> Option<usize> {
        match self {
            Op::Input { .. } | Op::Const(_) | Op::Index { .. } | Op::Random { .. } => Some(0),
            Op::Unary(_) | Op::Cast(_) | Op::BroadcastTo { .. } | Op::Reduce { .. } => Some(1),
            Op::Reshape | Op::Contiguous => Some(1),
            Op::Binary(_) => Some(2),
            Op::Where => Some(3),
            Op::Reindex(_) | Op::ReindexReduce { .. } => None,
        }
    }
}
