//! Shapes: a list of extents, row-major (C order).
//!
//! Every value in a graph is logically a dense row-major array of its shape; strides and views
//! are a backend concern, not part of the IR.

use std::fmt;

/// The extents of a tensor, outermost first. Rank 0 is a scalar with one element.
#[derive(Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    /// Builds a shape from extents.
    pub fn new(dims: impl Into<Vec<usize>>) -> Shape {
        Shape(dims.into())
    }

    /// The rank-0 shape.
    pub fn scalar() -> Shape {
        Shape(Vec::new())
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The extents.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    /// Number of elements (1 for rank 0, 0 when any extent is 0).
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }

    /// Row-major strides in elements.
    pub fn strides(&self) -> Vec<usize> {
        let mut s = vec![1usize; self.0.len()];
        for k in (0..self.0.len().saturating_sub(1)).rev() {
            s[k] = s[k + 1] * self.0[k + 1];
        }
        s
    }

    /// The linear row-major offset of a multi-index.
    pub fn offset(&self, idx: &[usize]) -> usize {
        debug_assert_eq!(idx.len(), self.0.len());
        idx.iter().zip(&self.0).fold(0, |acc, (&i, &d)| acc * d + i)
    }

    /// The multi-index of a linear row-major offset (written into `out`).
    pub fn unravel(&self, mut lin: usize, out: &mut [usize]) {
        for k in (0..self.0.len()).rev() {
            let d = self.0[k];
            if d == 0 {
                out[k] = 0;
            } else {
                out[k] = lin % d;
                lin /= d;
            }
        }
    }

    /// Iterates every multi-index in row-major order.
    pub fn indices(&self) -> impl Iterator<Item = Vec<usize>> + '_ {
        let n = self.numel();
        (0..n).map(move |lin| {
            let mut v = vec![0; self.rank()];
            self.unravel(lin, &mut v);
            v
        })
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (k, d) in self.0.iter().enumerate() {
            if k > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

impl From<Vec<usize>> for Shape {
    fn from(v: Vec<usize>) -> Shape {
        Shape(v)
    }
}

impl From<&[usize]> for Shape {
    fn from(v: &[usize]) -> Shape {
        Shape(v.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(v: [usize; N]) -> Shape {
        Shape(v.to_vec())
    }
}

/// The NumPy/PyTorch broadcast of two shapes: align at the right; each pair of extents must be
/// equal or one of them 1. Returns `None` when the shapes are incompatible.
pub fn broadcast_shapes(a: &Shape, b: &Shape) -> Option<Shape> {
    let r = a.rank().max(b.rank());
    let mut out = vec![0; r];
    for (k, o) in out.iter_mut().enumerate() {
        let da = if k + a.rank() >= r {
            a.0[k + a.rank() - r]
        } else {
            1
        };
        let db = if k + b.rank() >= r {
            b.0[k + b.rank() - r]
        } else {
            1
        };
        *o = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return None;
        };
    }
    Some(Shape(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_offsets_unravel() {
        let s = Shape::from([2, 3, 4]);
        assert_eq!(s.strides(), vec![12, 4, 1]);
        assert_eq!(s.offset(&[1, 2, 3]), 23);
        let mut idx = [0; 3];
        s.unravel(23, &mut idx);
        assert_eq!(idx, [1, 2, 3]);
        assert_eq!(Shape::scalar().numel(), 1);
        assert_eq!(Shape::from([3, 0]).numel(), 0);
        assert_eq!(s.indices().count(), 24);
    }

    #[test]
    fn broadcasting() {
        let b = |a: &[usize], c: &[usize]| broadcast_shapes(&a.into(), &c.into());
        assert_eq!(b(&[3, 1], &[4]), Some(Shape::from([3, 4])));
        assert_eq!(b(&[], &[2, 2]), Some(Shape::from([2, 2])));
        assert_eq!(b(&[0, 1], &[1, 5]), Some(Shape::from([0, 5])));
        assert_eq!(b(&[2, 3], &[3, 2]), None);
    }
}
