//! PyTorch-like printing: `tensor([[1.0000, 2.0000], ...])`.
//!
//! Floats print in one of three styles chosen over the whole tensor, as PyTorch does: `1.`
//! when every finite value is an integer, fixed with 4 decimals, or scientific when the finite
//! magnitudes span more than 1000× or leave [1e-4, 1e8). Tensors of more than 1000 elements are
//! summarised to the first and last 3 entries of each axis. The dtype is shown unless it is
//! f32, i64 or bool. Printing computes the tensor.

use std::fmt;

use metajit_metaops::{DType, HostData, Shape};

use crate::tensor::Tensor;

const THRESHOLD: usize = 1000;
const EDGE: usize = 3;

#[derive(Clone, Copy)]
enum Style {
    Int,
    Bool,
    FloatInt,
    Fixed,
    Sci,
}

fn choose_style(d: &HostData) -> Style {
    let dt = d.dtype();
    if dt.is_bool() {
        return Style::Bool;
    }
    if !dt.is_float() {
        return Style::Int;
    }
    let finite: Vec<f64> = (0..d.len())
        .map(|i| d.get(i).to_f64())
        .filter(|v| v.is_finite())
        .collect();
    let nz: Vec<f64> = finite
        .iter()
        .map(|v| v.abs())
        .filter(|v| *v > 0.0)
        .collect();
    let max = nz.iter().cloned().fold(0.0f64, f64::max);
    let min = nz.iter().cloned().fold(f64::INFINITY, f64::min);
    let wide = !nz.is_empty() && (max / min > 1000.0 || max > 1e8);
    if finite.iter().all(|v| v.fract() == 0.0) {
        // Integers print as `1.` unless their magnitudes are far apart or huge.
        return if wide { Style::Sci } else { Style::FloatInt };
    }
    if wide || (!nz.is_empty() && min < 1e-4) {
        Style::Sci
    } else {
        Style::Fixed
    }
}

fn fmt_value(d: &HostData, i: usize, style: Style) -> String {
    let s = d.get(i);
    let v = s.to_f64();
    match style {
        Style::Bool => s.is_truthy().to_string(),
        Style::Int => s.to_i64().to_string(),
        _ if v.is_nan() => "nan".into(),
        _ if v.is_infinite() => if v > 0.0 { "inf" } else { "-inf" }.into(),
        Style::FloatInt => format!("{v:.0}."),
        Style::Fixed => format!("{v:.4}"),
        Style::Sci => {
            // Rust writes `1.2345e3`; PyTorch writes `1.2345e+03`.
            let t = format!("{v:.4e}");
            match t.split_once('e') {
                Some((m, e)) => {
                    let (sign, digits) = match e.strip_prefix('-') {
                        Some(d) => ('-', d),
                        None => ('+', e),
                    };
                    format!("{m}e{sign}{digits:0>2}")
                }
                None => t,
            }
        }
    }
}

/// Which indices of an axis of extent `n` are shown (`None` marks the `...`).
fn shown(n: usize, summarise: bool) -> Vec<Option<usize>> {
    if summarise && n > 2 * EDGE {
        (0..EDGE)
            .map(Some)
            .chain(std::iter::once(None))
            .chain((n - EDGE..n).map(Some))
            .collect()
    } else {
        (0..n).map(Some).collect()
    }
}

/// What every recursive call shares.
struct Layout<'a> {
    cells: &'a [String],
    shape: &'a Shape,
    width: usize,
    summarise: bool,
}

fn write_rec(out: &mut String, l: &Layout<'_>, axis: usize, offset: usize) {
    let dims = l.shape.dims();
    let stride: usize = dims[axis + 1..].iter().product();
    let items = shown(dims[axis], l.summarise);
    let indent = "tensor(".len() + axis;
    if axis + 1 == dims.len() {
        // The innermost axis: elements joined by ", ", wrapped at 80 columns as PyTorch does.
        let per_line = ((80usize.saturating_sub(indent)) / (l.width + 2)).max(1);
        let elems: Vec<String> = items
            .iter()
            .map(|it| match it {
                None => " ...".to_string(),
                Some(i) => {
                    let c = &l.cells[offset + i * stride];
                    format!("{}{c}", " ".repeat(l.width.saturating_sub(c.len())))
                }
            })
            .collect();
        let lines: Vec<String> = elems.chunks(per_line).map(|c| c.join(", ")).collect();
        out.push('[');
        out.push_str(&lines.join(&format!(",\n{}", " ".repeat(indent + 1))));
        out.push(']');
        return;
    }
    out.push('[');
    for (k, it) in items.iter().enumerate() {
        if k > 0 {
            out.push(',');
            out.push_str(&"\n".repeat(dims.len() - axis - 1));
            out.push_str(&" ".repeat(indent + 1));
        }
        match it {
            None => out.push_str("..."),
            Some(i) => write_rec(out, l, axis + 1, offset + i * stride),
        }
    }
    out.push(']');
}

/// Formats `data` of `shape` as PyTorch would print it (without the `tensor(` wrapper).
pub(crate) fn format_data(data: &HostData, shape: &Shape) -> String {
    let style = choose_style(data);
    let summarise = data.len() > THRESHOLD;
    // Format every element that can be shown (all of them when small).
    let cells: Vec<String> = (0..data.len()).map(|i| fmt_value(data, i, style)).collect();
    if shape.rank() == 0 {
        return cells[0].clone();
    }
    // Floats: the width of the nonzero finite values (PyTorch); others: every value.
    let width = if data.dtype().is_float() {
        (0..data.len())
            .filter(|&i| {
                let v = data.get(i).to_f64();
                v.is_finite() && v != 0.0
            })
            .map(|i| cells[i].len())
            .max()
            .unwrap_or(1)
    } else {
        cells.iter().map(|c| c.len()).max().unwrap_or(0)
    };
    let mut out = String::new();
    let layout = Layout {
        cells: &cells,
        shape,
        width,
        summarise,
    };
    write_rec(&mut out, &layout, 0, 0);
    out
}

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data = match self.host_data() {
            Ok(d) => d,
            Err(e) => return write!(f, "tensor(<failed to compute: {e}>)"),
        };
        let shape = self.shape();
        let empty = shape.numel() == 0 && shape.rank() > 0;
        let body = if empty && shape.rank() == 1 {
            "[]".to_string()
        } else if empty {
            let d: Vec<String> = shape.dims().iter().map(|d| d.to_string()).collect();
            format!("[], size=({})", d.join(", "))
        } else {
            format_data(&data, shape)
        };
        let dtype = self.dtype();
        let implied = if empty {
            dtype == DType::F32
        } else {
            matches!(dtype, DType::F32 | DType::I64 | DType::Bool)
        };
        if implied {
            write!(f, "tensor({body})")
        } else {
            write!(f, "tensor({body}, dtype={dtype})")
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Tensor;

    #[test]
    fn prints_like_pytorch() {
        let t = Tensor::from_vec(vec![1.0f32, 2.5, -3.0, 4.0], [2, 2]);
        assert_eq!(
            t.to_string(),
            "tensor([[ 1.0000,  2.5000],\n        [-3.0000,  4.0000]])"
        );
        let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3]);
        assert_eq!(t.to_string(), "tensor([1., 2., 3.])");
        let t = Tensor::from_vec(vec![1i32, -20, 3], [3]);
        assert_eq!(t.to_string(), "tensor([  1, -20,   3], dtype=i32)");
        assert_eq!(
            Tensor::scalar(0.5f64).to_string(),
            "tensor(0.5000, dtype=f64)"
        );
        let t = Tensor::from_vec(vec![1e-5f32, 1.0], [2]);
        assert_eq!(t.to_string(), "tensor([1.0000e-05, 1.0000e+00])");
        let t = Tensor::from_vec(vec![true, false], [2]);
        assert_eq!(t.to_string(), "tensor([ true, false])");
        let t = Tensor::from_vec(Vec::<f32>::new(), [0, 3]);
        assert_eq!(t.to_string(), "tensor([], size=(0, 3))");
        let t = Tensor::from_vec(vec![f32::NAN, 1.5], [2]);
        assert_eq!(t.to_string(), "tensor([   nan, 1.5000])");
        let t = Tensor::from_vec(vec![1.0f32, f32::INFINITY], [2]);
        assert_eq!(t.to_string(), "tensor([1., inf])");
        let t = Tensor::from_vec(vec![1.0f32, 2000.0], [2]);
        assert_eq!(t.to_string(), "tensor([1.0000e+00, 2.0000e+03])");
        assert_eq!(Tensor::zeros([0]).to_string(), "tensor([])");
        assert_eq!(Tensor::arange(0, 0, 1).to_string(), "tensor([], dtype=i64)");
        // torch.arange(30): floor((80 - 7) / 4) = 18 values on the first line.
        let s = Tensor::arange(0, 30, 1).to_string();
        assert!(
            s.starts_with(
                "tensor([ 0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14, 15, 16, 17,\n        18,"
            ),
            "{s}"
        );
    }

    #[test]
    fn large_tensors_are_summarised() {
        let t = Tensor::arange(0, 2000, 1);
        assert_eq!(
            t.to_string(),
            "tensor([   0,    1,    2,  ..., 1997, 1998, 1999])"
        );
        let t = Tensor::arange(0, 1200, 1).cast(metajit_metaops::DType::I64);
        let s = Tensor::from_vec(t.to_vec::<i64>().unwrap(), [40, 30]).to_string();
        assert!(
            s.starts_with("tensor([[   0,    1,    2,  ...,   27,   28,   29],\n        [  30,"),
            "{s}"
        );
        assert!(s.contains("        ...,\n"), "{s}");
    }
}
