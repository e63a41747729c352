//! Index expressions: the integer arithmetic that `Reindex` and `ReindexReduce` use to map an
//! iteration index to an element of another tensor.
//!
//! An expression is evaluated at one point of the op's *iteration space* (the output of a
//! `Reindex`, the input of a `ReindexReduce`) and yields one coordinate of the *target* (the
//! input of a `Reindex`, the output of a `ReindexReduce`). Sizes are named symbolically
//! ([`IndexExpr::IterDim`], [`IndexExpr::TargetDim`]) rather than baked in, so a kernel built from
//! the expression stays valid when a batch size changes. Structural parameters (stride, padding,
//! kernel size) are constants. Offsets that are data rather than structure (a slice's start, a
//! concatenated piece's position) are [`IndexExpr::Param`] leaves: they evaluate to their value
//! like a constant, but a schedule passes them to kernels at run time and the plan key ignores
//! them, so taking a minibatch at a new offset reuses the plan and the kernels.
//!
//! Arithmetic is on i64 and wraps; `/` and `%` are floor division and floor modulo (the
//! remainder takes the divisor's sign), so `(a / b) * b + a % b == a`; division or modulo by
//! zero yields 0. Comparisons and logic yield 0 or 1.

use std::fmt;

/// A binary operator of index arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdxBin {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// floor(`a / b`); 0 when `b == 0`.
    Div,
    /// `a - floor(a / b) * b`; 0 when `b == 0`.
    Mod,
    /// `min(a, b)`
    Min,
    /// `max(a, b)`
    Max,
    /// `a < b` as 0/1
    Lt,
    /// `a <= b` as 0/1
    Le,
    /// `a == b` as 0/1
    Eq,
    /// `a != b` as 0/1
    Ne,
    /// logical and of nonzero-ness, as 0/1
    And,
    /// logical or of nonzero-ness, as 0/1
    Or,
}

impl IdxBin {
    /// Every operator.
    pub const ALL: [IdxBin; 13] = [
        IdxBin::Add,
        IdxBin::Sub,
        IdxBin::Mul,
        IdxBin::Div,
        IdxBin::Mod,
        IdxBin::Min,
        IdxBin::Max,
        IdxBin::Lt,
        IdxBin::Le,
        IdxBin::Eq,
        IdxBin::Ne,
        IdxBin::And,
        IdxBin::Or,
    ];

    /// The operator's symbol (infix) or name (min/max) in the text form.
    pub fn symbol(self) -> &'static str {
        match self {
            IdxBin::Add => "+",
            IdxBin::Sub => "-",
            IdxBin::Mul => "*",
            IdxBin::Div => "/",
            IdxBin::Mod => "%",
            IdxBin::Min => "min",
            IdxBin::Max => "max",
            IdxBin::Lt => "<",
            IdxBin::Le => "<=",
            IdxBin::Eq => "==",
            IdxBin::Ne => "!=",
            IdxBin::And => "&&",
            IdxBin::Or => "||",
        }
    }

    /// Applies the operator.
    pub fn apply(self, a: i64, b: i64) -> i64 {
        match self {
            IdxBin::Add => a.wrapping_add(b),
            IdxBin::Sub => a.wrapping_sub(b),
            IdxBin::Mul => a.wrapping_mul(b),
            IdxBin::Div => floor_div(a, b),
            IdxBin::Mod => floor_mod(a, b),
            IdxBin::Min => a.min(b),
            IdxBin::Max => a.max(b),
            IdxBin::Lt => (a < b) as i64,
            IdxBin::Le => (a <= b) as i64,
            IdxBin::Eq => (a == b) as i64,
            IdxBin::Ne => (a != b) as i64,
            IdxBin::And => (a != 0 && b != 0) as i64,
            IdxBin::Or => (a != 0 || b != 0) as i64,
        }
    }
}

/// Floor division on i64 with wrapping at `MIN / -1` and 0 for division by zero.
pub fn floor_div(a: i64, b: i64) -> i64 {
    if b == 0 {
        return 0;
    }
    let q = a.wrapping_div(b);
    if (a.wrapping_rem(b) != 0) && ((a < 0) != (b < 0)) {
        q.wrapping_sub(1)
    } else {
        q
    }
}

/// Floor modulo on i64 (sign of the divisor) with 0 for modulo by zero.
pub fn floor_mod(a: i64, b: i64) -> i64 {
    if b == 0 {
        return 0;
    }
    let r = a.wrapping_rem(b);
    if r != 0 && ((r < 0) != (b < 0)) {
        r.wrapping_add(b)
    } else {
        r
    }
}

/// An index expression tree.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum IndexExpr {
    /// An integer constant.
    Const(i64),
    /// An integer whose value is a runtime parameter of the kernels that read it (`param(v)` in
    /// text): it evaluates to `v`, but graphs that differ only in such values share plans and
    /// kernels ([`crate::graph::Graph::same_structure`]).
    Param(i64),
    /// The iteration index along axis `k` (`i<k>` in text).
    Idx(usize),
    /// The iteration space's extent along axis `k` (`n<k>` in text).
    IterDim(usize),
    /// The target tensor's extent along axis `k` (`m<k>` in text).
    TargetDim(usize),
    /// Extra tensor `e` (an integer tensor, the op's input `1 + e`) read at the given indices
    /// (`e<e>[..]` in text); an out-of-range read gives 0.
    Extra(usize, Vec<IndexExpr>),
    /// A binary operation.
    Bin(IdxBin, Box<IndexExpr>, Box<IndexExpr>),
    /// `if c != 0 { a } else { b }`
    Select(Box<IndexExpr>, Box<IndexExpr>, Box<IndexExpr>),
}

/// What an index expression may read while it is evaluated.
pub struct IdxEnv<'a> {
    /// The iteration index.
    pub idx: &'a [usize],
    /// The iteration space's extents.
    pub iter_dims: &'a [usize],
    /// The target's extents.
    pub target_dims: &'a [usize],
    /// Reads extra tensor `e` at a multi-index (already bounds-checked by the caller's closure).
    pub extra: &'a dyn Fn(usize, &[i64]) -> i64,
}

impl IndexExpr {
    /// `Idx(k)`.
    pub fn idx(k: usize) -> IndexExpr {
        IndexExpr::Idx(k)
    }

    /// `Const(c)`.
    pub fn c(c: i64) -> IndexExpr {
        IndexExpr::Const(c)
    }

    /// A binary node.
    pub fn bin(op: IdxBin, a: IndexExpr, b: IndexExpr) -> IndexExpr {
        IndexExpr::Bin(op, Box::new(a), Box::new(b))
    }

    /// `Select(c, a, b)`.
    pub fn select(c: IndexExpr, a: IndexExpr, b: IndexExpr) -> IndexExpr {
        IndexExpr::Select(Box::new(c), Box::new(a), Box::new(b))
    }

    /// `min(self, o)`.
    pub fn min(self, o: IndexExpr) -> IndexExpr {
        IndexExpr::bin(IdxBin::Min, self, o)
    }

    /// `max(self, o)`.
    pub fn max(self, o: IndexExpr) -> IndexExpr {
        IndexExpr::bin(IdxBin::Max, self, o)
    }

    /// `self < o`.
    pub fn lt(self, o: IndexExpr) -> IndexExpr {
        IndexExpr::bin(IdxBin::Lt, self, o)
    }

    /// `self <= o`.
    pub fn le(self, o: IndexExpr) -> IndexExpr {
        IndexExpr::bin(IdxBin::Le, self, o)
    }

    /// `self == o`.
    pub fn eq_(self, o: IndexExpr) -> IndexExpr {
        IndexExpr::bin(IdxBin::Eq, self, o)
    }

    /// `self != o`.
    pub fn ne_(self, o: IndexExpr) -> IndexExpr {
        IndexExpr::bin(IdxBin::Ne, self, o)
    }

    /// `self && o`.
    pub fn and(self, o: IndexExpr) -> IndexExpr {
        IndexExpr::bin(IdxBin::And, self, o)
    }

    /// `self || o`.
    pub fn or(self, o: IndexExpr) -> IndexExpr {
        IndexExpr::bin(IdxBin::Or, self, o)
    }

    /// Evaluates the expression at one point.
    pub fn eval(&self, env: &IdxEnv<'_>) -> i64 {
        match self {
            IndexExpr::Const(c) | IndexExpr::Param(c) => *c,
            IndexExpr::Idx(k) => env.idx[*k] as i64,
            IndexExpr::IterDim(k) => env.iter_dims[*k] as i64,
            IndexExpr::TargetDim(k) => env.target_dims[*k] as i64,
            IndexExpr::Extra(e, ix) => {
                let v: Vec<i64> = ix.iter().map(|x| x.eval(env)).collect();
                (env.extra)(*e, &v)
            }
            IndexExpr::Bin(op, a, b) => op.apply(a.eval(env), b.eval(env)),
            IndexExpr::Select(c, a, b) => {
                if c.eval(env) != 0 {
                    a.eval(env)
                } else {
                    b.eval(env)
                }
            }
        }
    }

    /// Whether the expression is the same for every point of one launch: built from constants,
    /// runtime parameters and extents only (no iteration index, no extra tensor).
    pub fn is_uniform(&self) -> bool {
        match self {
            IndexExpr::Const(_)
            | IndexExpr::Param(_)
            | IndexExpr::IterDim(_)
            | IndexExpr::TargetDim(_) => true,
            IndexExpr::Bin(_, a, b) => a.is_uniform() && b.is_uniform(),
            IndexExpr::Select(c, a, b) => c.is_uniform() && a.is_uniform() && b.is_uniform(),
            IndexExpr::Idx(_) | IndexExpr::Extra(..) => false,
        }
    }

    /// Whether the expression is an injective function of iteration index `k` alone: distinct
    /// values of `i<k>` give distinct values, whatever the other indices are. Recognised forms:
    /// `i<k>`, and from an injective `e` and a uniform `u` (see [`IndexExpr::is_uniform`]):
    /// `e + u`, `u + e`, `e - u`, `u - e`, and `e * c`, `c * e` for a constant `0 < |c| <= 2^24`
    /// (index extents are below 2^39, so the product does not wrap). This covers transposes and
    /// permutes, slices with steps, pads, flips and windows' outer coordinates. Conservative:
    /// anything else (division, modulo, min/max, selects, extra tensors) is `false`.
    pub fn injective_in(&self, k: usize) -> bool {
        const MAX_FACTOR: i64 = 1 << 24;
        match self {
            IndexExpr::Idx(j) => *j == k,
            IndexExpr::Bin(IdxBin::Add | IdxBin::Sub, a, b) => {
                (a.injective_in(k) && b.is_uniform()) || (a.is_uniform() && b.injective_in(k))
            }
            IndexExpr::Bin(IdxBin::Mul, a, b) => match (&**a, &**b) {
                (e, IndexExpr::Const(c)) | (IndexExpr::Const(c), e) => {
                    *c != 0 && c.unsigned_abs() <= MAX_FACTOR as u64 && e.injective_in(k)
                }
                _ => false,
            },
            _ => false,
        }
    }

    /// Calls `f` on this node and every sub-expression (pre-order).
    pub fn visit(&self, f: &mut dyn FnMut(&IndexExpr)) {
        f(self);
        match self {
            IndexExpr::Extra(_, ix) => ix.iter().for_each(|x| x.visit(f)),
            IndexExpr::Bin(_, a, b) => {
                a.visit(f);
                b.visit(f);
            }
            IndexExpr::Select(c, a, b) => {
                c.visit(f);
                a.visit(f);
                b.visit(f);
            }
            _ => {}
        }
    }

    /// Whether two expressions are equal up to the values of their [`IndexExpr::Param`] leaves.
    pub fn same_structure(&self, o: &IndexExpr) -> bool {
        use IndexExpr::*;
        match (self, o) {
            (Param(_), Param(_)) => true,
            (Extra(e, a), Extra(f, b)) => {
                e == f && a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_structure(y))
            }
            (Bin(p, a, b), Bin(q, c, d)) => p == q && a.same_structure(c) && b.same_structure(d),
            (Select(a, b, c), Select(d, e, f)) => {
                a.same_structure(d) && b.same_structure(e) && c.same_structure(f)
            }
            (Param(_) | Extra(..) | Bin(..) | Select(..), _) => false,
            (a, b) => a == b,
        }
    }

    /// Hashes the expression without the values of its [`IndexExpr::Param`] leaves (consistent
    /// with [`IndexExpr::same_structure`]).
    pub fn hash_structure<H: std::hash::Hasher>(&self, h: &mut H) {
        use std::hash::Hash;
        std::mem::discriminant(self).hash(h);
        match self {
            IndexExpr::Param(_) => {}
            IndexExpr::Const(c) => c.hash(h),
            IndexExpr::Idx(k) | IndexExpr::IterDim(k) | IndexExpr::TargetDim(k) => k.hash(h),
            IndexExpr::Extra(e, ix) => {
                e.hash(h);
                ix.len().hash(h);
                ix.iter().for_each(|x| x.hash_structure(h));
            }
            IndexExpr::Bin(op, a, b) => {
                op.hash(h);
                a.hash_structure(h);
                b.hash_structure(h);
            }
            IndexExpr::Select(c, a, b) => {
                c.hash_structure(h);
                a.hash_structure(h);
                b.hash_structure(h);
            }
        }
    }
}

macro_rules! idx_op {
    ($tr:ident, $m:ident, $op:ident) => {
        impl std::ops::$tr for IndexExpr {
            type Output = IndexExpr;
            fn $m(self, o: IndexExpr) -> IndexExpr {
                IndexExpr::bin(IdxBin::$op, self, o)
            }
        }
        impl std::ops::$tr<i64> for IndexExpr {
            type Output = IndexExpr;
            fn $m(self, o: i64) -> IndexExpr {
                IndexExpr::bin(IdxBin::$op, self, IndexExpr::Const(o))
            }
        }
    };
}
idx_op!(Add, add, Add);
idx_op!(Sub, sub, Sub);
idx_op!(Mul, mul, Mul);
idx_op!(Div, div, Div);
idx_op!(Rem, rem, Mod);

impl fmt::Display for IndexExpr {
    /// Fully parenthesised infix for nested binaries, so the text parses back unambiguously:
    /// `(i0*2)+1`, `min(i1, m1-1)`, `select(i0<3, i0, 0)`, `e0[i0, i1]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IndexExpr::Const(c) => write!(f, "{c}"),
            IndexExpr::Param(v) => write!(f, "param({v})"),
            IndexExpr::Idx(k) => write!(f, "i{k}"),
            IndexExpr::IterDim(k) => write!(f, "n{k}"),
            IndexExpr::TargetDim(k) => write!(f, "m{k}"),
            IndexExpr::Extra(e, ix) => {
                write!(f, "e{e}[")?;
                for (k, x) in ix.iter().enumerate() {
                    if k > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str("]")
            }
            IndexExpr::Bin(op @ (IdxBin::Min | IdxBin::Max), a, b) => {
                write!(f, "{}({a}, {b})", op.symbol())
            }
            IndexExpr::Bin(op, a, b) => {
                write_operand(f, a)?;
                f.write_str(op.symbol())?;
                write_operand(f, b)
            }
            IndexExpr::Select(c, a, b) => write!(f, "select({c}, {a}, {b})"),
        }
    }
}

fn write_operand(f: &mut fmt::Formatter<'_>, x: &IndexExpr) -> fmt::Result {
    match x {
        IndexExpr::Bin(op, ..) if !matches!(op, IdxBin::Min | IdxBin::Max) => write!(f, "({x})"),
        IndexExpr::Const(c) if *c < 0 => write!(f, "({c})"),
        _ => write!(f, "{x}"),
    }
}

impl fmt::Debug for IndexExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_division_and_modulo() {
        assert_eq!(floor_div(7, 2), 3);
        assert_eq!(floor_div(-7, 2), -4);
        assert_eq!(floor_div(7, -2), -4);
        assert_eq!(floor_div(-7, -2), 3);
        assert_eq!(floor_mod(-7, 2), 1);
        assert_eq!(floor_mod(7, -2), -1);
        assert_eq!(floor_mod(-7, -2), -1);
        assert_eq!(floor_div(5, 0), 0);
        assert_eq!(floor_mod(5, 0), 0);
        assert_eq!(floor_div(i64::MIN, -1), i64::MIN);
        for a in -20..20 {
            for b in [-7, -3, -1, 1, 2, 5] {
                assert_eq!(floor_div(a, b) * b + floor_mod(a, b), a);
            }
        }
    }

    #[test]
    fn injectivity_is_recognised_conservatively() {
        use IndexExpr as E;
        let i0 = || E::idx(0);
        // Injective in i0: transpose, slice with step, pad, flip.
        assert!(i0().injective_in(0));
        assert!((i0() * 2 + 1).injective_in(0));
        assert!((i0() - 3).injective_in(0));
        assert!((E::TargetDim(0) - 1 - i0()).injective_in(0));
        assert!((E::c(-2) * i0()).injective_in(0));
        // A slice at a runtime offset (its gradient's scatter splits across threads too).
        assert!(E::bin(IdxBin::Add, i0() * 2, E::Param(5)).injective_in(0));
        // Not injective in i0, or not in i0 alone.
        assert!(!i0().injective_in(1));
        assert!(!(i0() + E::idx(1)).injective_in(0));
        assert!(!E::bin(IdxBin::Mul, i0(), E::c(0)).injective_in(0));
        assert!(!(i0() / 2).injective_in(0));
        assert!(!(i0() % 3).injective_in(0));
        assert!(!i0().min(E::c(4)).injective_in(0));
        assert!(!E::Extra(0, vec![i0()]).injective_in(0));
        assert!(!(i0() + E::Extra(0, vec![E::idx(1)])).injective_in(0));
        assert!(!(i0() * E::IterDim(1)).injective_in(0));
        assert!((E::IterDim(1) * 2 - E::c(1)).is_uniform());
    }

    #[test]
    fn eval_and_print() {
        let e = (IndexExpr::idx(1) * 2 + 1).min(IndexExpr::TargetDim(1) - 1);
        assert_eq!(e.to_string(), "min((i1*2)+1, m1-1)");
        let env = IdxEnv {
            idx: &[0, 3],
            iter_dims: &[1, 4],
            target_dims: &[1, 5],
            extra: &|_, _| 0,
        };
        assert_eq!(e.eval(&env), 4);
        let p = IndexExpr::idx(0) + IndexExpr::Param(-3);
        assert_eq!(p.to_string(), "i0+param(-3)");
        assert_eq!(p.eval(&env), -3);
    }

    #[test]
    fn structure_ignores_param_values_only() {
        use std::hash::Hasher;
        let h = |e: &IndexExpr| {
            let mut s = std::collections::hash_map::DefaultHasher::new();
            e.hash_structure(&mut s);
            s.finish()
        };
        let a = IndexExpr::idx(1) * 2 + IndexExpr::Param(5);
        let b = IndexExpr::idx(1) * 2 + IndexExpr::Param(9);
        assert!(a.same_structure(&b) && h(&a) == h(&b));
        for c in [
            IndexExpr::idx(1) * 2 + 5,
            IndexExpr::idx(0) * 2 + IndexExpr::Param(5),
            IndexExpr::idx(1) * 3 + IndexExpr::Param(5),
            IndexExpr::idx(1) * 2 - IndexExpr::Param(5),
        ] {
            assert!(!a.same_structure(&c), "{a} vs {c}");
        }
    }
}
