//! A batch loader over realized tensors whose first axis is the sample.
//!
//! Every batch is an `index_select` of the realized data set by a small index tensor, so each
//! batch records the same graph: after the first batch a training loop compiles and schedules
//! nothing new (a short last batch neither — sizes are kernel arguments). The order of an epoch
//! is a Fisher–Yates shuffle driven by SplitMix64 seeded from `(seed, epoch)`: the same on every
//! platform and in every run, different from epoch to epoch.

use crate::{Result, Tensor, realize_all};

/// Batches of `(inputs, targets)` drawn from two tensors with the same first extent.
///
/// ```
/// use metajit::{Tensor, data::DataLoader};
/// let x = Tensor::from_vec((0..10).map(|v| v as f32).collect(), [5, 2]);
/// let y = Tensor::from_vec(vec![0i64, 1, 2, 3, 4], [5]);
/// let loader = DataLoader::new(&x, &y, 2)?.shuffle(7);
/// assert_eq!(loader.num_batches(), 3);                 // 2 + 2 + 1
/// let mut seen = Vec::new();
/// for (xb, yb) in loader.epoch(0) {
///     assert_eq!(xb.dims()[1], 2);
///     seen.extend(yb.to_vec::<i64>()?);
/// }
/// seen.sort();
/// assert_eq!(seen, vec![0, 1, 2, 3, 4]);               // every sample once
/// # Ok::<(), metajit::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct DataLoader {
    inputs: Tensor,
    targets: Tensor,
    batch_size: usize,
    drop_last: bool,
    seed: Option<u64>,
}

impl DataLoader {
    /// A loader over `inputs` and `targets` (sample `i` is entry `i` of the first axis of each)
    /// in batches of `batch_size`, in order, keeping a last short batch. Both tensors are
    /// realized now, together, so that batches read stored data.
    ///
    /// # Errors
    /// When computing `inputs` or `targets` fails.
    ///
    /// # Panics
    /// When `batch_size` is 0, a tensor has rank 0, or the first extents differ.
    #[track_caller]
    pub fn new(inputs: &Tensor, targets: &Tensor, batch_size: usize) -> Result<DataLoader> {
        assert!(
            batch_size > 0,
            "bad batch size in DataLoader::new: 0 (it must be at least 1)"
        );
        assert!(
            inputs.rank() > 0 && targets.rank() > 0 && inputs.dims()[0] == targets.dims()[0],
            "shape mismatch in DataLoader::new: inputs {}, targets {} (both need the same first extent, the number of samples)",
            inputs.shape(),
            targets.shape()
        );
        realize_all(&[inputs, targets])?;
        Ok(DataLoader {
            inputs: inputs.clone(),
            targets: targets.clone(),
            batch_size,
            drop_last: false,
            seed: None,
        })
    }

    /// Shuffles each epoch: epoch `e` visits the samples in the order of a permutation drawn
    /// from `(seed, e)`.
    pub fn shuffle(mut self, seed: u64) -> DataLoader {
        self.seed = Some(seed);
        self
    }

    /// Whether to drop a last batch shorter than the batch size (PyTorch's `drop_last`).
    pub fn drop_last(mut self, drop_last: bool) -> DataLoader {
        self.drop_last = drop_last;
        self
    }

    /// The number of samples.
    pub fn num_samples(&self) -> usize {
        self.inputs.dims()[0]
    }

    /// The batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The number of batches in an epoch.
    pub fn num_batches(&self) -> usize {
        let n = self.num_samples();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// The order in which epoch `epoch` visits the samples: `0..n` without
    /// [`shuffle`](DataLoader::shuffle), else the epoch's permutation. With
    /// [`drop_last`](DataLoader::drop_last) the batches cover only its first
    /// `num_batches() * batch_size()` entries.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.num_samples()).collect();
        if let Some(seed) = self.seed {
            let mut rng = SplitMix64(crate::ops::creation::splitmix64_mix(
                crate::ops::creation::splitmix64_mix(seed) ^ epoch,
            ));
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        order
    }

    /// The batches of epoch `epoch`: `(inputs, targets)` pairs, lazy `index_select`s of the
    /// data (realize them, or the loss computed from them, to read them).
    pub fn epoch(&self, epoch: u64) -> Batches<'_> {
        let mut order = self.order(epoch);
        order.truncate(if self.drop_last {
            self.num_batches() * self.batch_size
        } else {
            order.len()
        });
        Batches {
            loader: self,
            order: order.into_iter().map(|i| i as i64).collect(),
            next: 0,
        }
    }
}

/// The batches of one epoch of a [`DataLoader`], in order.
#[derive(Debug)]
pub struct Batches<'a> {
    loader: &'a DataLoader,
    order: Vec<i64>,
    next: usize,
}

impl Iterator for Batches<'_> {
    type Item = (Tensor, Tensor);

    fn next(&mut self) -> Option<(Tensor, Tensor)> {
        if self.next >= self.order.len() {
            return None;
        }
        let end = (self.next + self.loader.batch_size).min(self.order.len());
        let idx = Tensor::from_slice(&self.order[self.next..end]);
        self.next = end;
        Some((
            self.loader.inputs.index_select(0, &idx),
            self.loader.targets.index_select(0, &idx),
        ))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.order.len() - self.next).div_ceil(self.loader.batch_size);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches<'_> {}

/// SplitMix64 (Steele, Lea and Flood 2014): small, fast, and good enough to shuffle.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        crate::ops::creation::splitmix64_mix(self.0)
    }

    /// A uniform integer in `0..n` (`n > 0`), by Lemire's multiply-and-reject.
    fn below(&mut self, n: u64) -> u64 {
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }
}
