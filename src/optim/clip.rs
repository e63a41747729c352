//! Gradient clipping by total norm (PyTorch's `torch.nn.utils.clip_grad_norm_`).

use crate::{Tensor, no_grad};

/// Scales the gradients of `params` so that their total norm is at most `max_norm`, and
/// returns the total norm before clipping (a lazy rank-0 tensor), as PyTorch's
/// `clip_grad_norm_`:
///
/// ```text
/// total = ‖(‖g₁‖, ‖g₂‖, …)‖             the norm_type-norm of each gradient, then of those
/// gᵢ = gᵢ * min(1, max_norm / (total + 1e-6))
/// ```
///
/// `norm_type` is a `p > 0` or `f64::INFINITY` (the largest magnitude). Parameters without a
/// gradient are skipped; with none, the total norm is 0. Nothing is computed: each gradient
/// is replaced (through [`Tensor::set_grad`], so a gradient handle someone else holds keeps
/// its value) by a lazy scaled one, which fuses into the optimizer's update when the step is
/// realized. Norms are computed in the dtype of the first gradient.
///
/// ```
/// use metajit::Tensor;
/// use metajit::optim::clip_grad_norm_;
/// let w = Tensor::from_vec(vec![0.0f32, 0.0], [2]).requires_grad_(true);
/// w.set_grad(Some(Tensor::from_vec(vec![3.0f32, 4.0], [2])));
/// let total = clip_grad_norm_([&w], 1.0, 2.0);
/// assert_eq!(total.item::<f32>().unwrap(), 5.0);
/// let g = w.grad().unwrap().to_vec::<f32>().unwrap();
/// assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
/// ```
///
/// # Panics
/// When `max_norm` is negative or NaN, or `norm_type` is not a number > 0.
#[track_caller]
pub fn clip_grad_norm_<'a>(
    params: impl IntoIterator<Item = &'a Tensor>,
    max_norm: f64,
    norm_type: f64,
) -> Tensor {
    if max_norm.is_nan() || max_norm < 0.0 {
        panic!("bad argument to clip_grad_norm_: max_norm must be >= 0, got {max_norm}");
    }
    if norm_type.is_nan() || norm_type <= 0.0 {
        panic!(
            "bad argument to clip_grad_norm_: norm_type must be a number > 0 or f64::INFINITY, got {norm_type}"
        );
    }
    let with_grads: Vec<(&Tensor, Tensor)> = params
        .into_iter()
        .filter_map(|p| p.grad().map(|g| (p, g)))
        .collect();
    let Some(dtype) = with_grads.first().map(|(_, g)| g.dtype()) else {
        return Tensor::scalar(0.0f32);
    };
    no_grad(|| {
        let norms: Vec<Tensor> = with_grads
            .iter()
            .map(|(_, g)| norm(&g.cast(dtype), norm_type))
            .collect();
        let total = if norms.len() == 1 {
            norms[0].clone()
        } else {
            let refs: Vec<&Tensor> = norms.iter().collect();
            norm(&Tensor::stack(&refs, 0), norm_type)
        };
        let coef = Tensor::full_dtype(crate::Shape::scalar(), max_norm, dtype)
            .div(&total.add(1e-6))
            .clamp_max(1.0);
        for (p, g) in &with_grads {
            p.set_grad(Some(g.mul(&coef.cast(g.dtype()))));
        }
        total
    })
}

/// The `p`-norm of every element of `x` (a rank-0 tensor).
fn norm(x: &Tensor, p: f64) -> Tensor {
    let a = x.abs();
    if p == f64::INFINITY {
        a.max_all()
    } else if p == 2.0 {
        a.square().sum_all().sqrt()
    } else if p == 1.0 {
        a.sum_all()
    } else {
        a.pow(p).sum_all().pow(1.0 / p)
    }
}
